"""A re-implementation, in our own words, of the approach of the published ActivityNet
detection evaluation that the CoLA code calls (pandas DataFrames, groupby per class and
per video, a Python loop over the predictions of each class with ``iterrows``).

Used as an independent oracle by the tests and as the baseline of bench/evaluate.py.
Runs the classes one after another (the published code farms them out to a process pool,
one job per class; on a 2-core machine that does not change the picture). Needs pandas.
"""
from __future__ import annotations

import json

import numpy as np


def _tiou(pred_segment, gt_segments):
    """COLA_SPEC 6: tIoU of one predicted [start, end] with each row of gt_segments (n, 2):
    max(0, min(end) - max(start)) / (len_pred + len_gt - intersection). Written here, not
    imported from evaluation/reference.py, so that this module stays an independent oracle."""
    gt_segments = np.asarray(gt_segments, dtype=np.float64)
    start, end = float(pred_segment[0]), float(pred_segment[1])
    inter = np.minimum(end, gt_segments[:, 1]) - np.maximum(start, gt_segments[:, 0])
    inter = np.where(inter > 0, inter, 0.0)
    union = (end - start) + (gt_segments[:, 1] - gt_segments[:, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def _interp(prec, rec):
    """COLA_SPEC 6: area under the interpolated precision envelope (VOC 2011 style).
    Precision is padded with 0 at both ends and recall with 0 and 1, the envelope is the
    running maximum taken from the right, and the area sums envelope x recall step over
    the points where recall moves."""
    p = np.concatenate([[0.0], np.asarray(prec, dtype=np.float64), [0.0]])
    r = np.concatenate([[0.0], np.asarray(rec, dtype=np.float64), [1.0]])
    envelope = np.maximum.accumulate(p[::-1])[::-1]
    step = r[1:] - r[:-1]
    moves = step != 0
    return np.sum(step[moves] * envelope[1:][moves])


def _pd():
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover
        raise ImportError("cola_fast.evaluation.anet_pandas needs pandas (pip install pandas)") from e
    return pd


def _ap_one_class(ground_truth, prediction, tiou_thresholds):
    ap = np.zeros(len(tiou_thresholds))
    if prediction.empty:
        return ap
    npos = float(len(ground_truth))
    lock_gt = np.ones((len(tiou_thresholds), len(ground_truth))) * -1
    sort_idx = prediction["score"].values.argsort()[::-1]
    prediction = prediction.loc[sort_idx].reset_index(drop=True)
    tp = np.zeros((len(tiou_thresholds), len(prediction)))
    fp = np.zeros((len(tiou_thresholds), len(prediction)))
    gt_by_video = ground_truth.groupby("video-id")
    for idx, this_pred in prediction.iterrows():
        try:
            gt_video = gt_by_video.get_group(this_pred["video-id"])
        except KeyError:
            fp[:, idx] = 1
            continue
        this_gt = gt_video.reset_index()
        tiou_arr = _tiou(this_pred[["t-start", "t-end"]].values,
                         this_gt[["t-start", "t-end"]].values)
        tiou_sorted_idx = tiou_arr.argsort()[::-1]
        for tidx, thr in enumerate(tiou_thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, this_gt.loc[jdx]["index"]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, this_gt.loc[jdx]["index"]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_cum = np.cumsum(tp, axis=1).astype(float)
    fp_cum = np.cumsum(fp, axis=1).astype(float)
    rec = tp_cum / npos
    prec = tp_cum / (tp_cum + fp_cum)
    for tidx in range(len(tiou_thresholds)):
        ap[tidx] = _interp(prec[tidx, :], rec[tidx, :])
    return ap


def evaluate(gt_path_or_dict, results_path_or_dict, subset="test",
             tiou_thresholds=np.linspace(0.1, 0.7, 7)):
    """Returns (mAP per threshold, average mAP, ap matrix (n_thr, n_cls), class names)."""
    pd = _pd()
    gt = gt_path_or_dict
    if not isinstance(gt, dict):
        with open(gt) as f:
            gt = json.load(f)
    res = results_path_or_dict
    if not isinstance(res, dict):
        with open(res) as f:
            res = json.load(f)
    activity_index = {}
    vids, starts, ends, labels = [], [], [], []
    for vid, v in gt["database"].items():
        if v["subset"] != subset:
            continue
        for ann in v["annotations"]:
            if ann["label"] not in activity_index:
                activity_index[ann["label"]] = len(activity_index)
            vids.append(vid)
            starts.append(float(ann["segment"][0]))
            ends.append(float(ann["segment"][1]))
            labels.append(activity_index[ann["label"]])
    ground_truth = pd.DataFrame({"video-id": vids, "t-start": starts, "t-end": ends,
                                 "label": labels})
    vids, starts, ends, labels, scores = [], [], [], [], []
    for vid, dets in res["results"].items():
        for d in dets:
            if d["label"] not in activity_index:
                continue
            vids.append(vid)
            starts.append(float(d["segment"][0]))
            ends.append(float(d["segment"][1]))
            labels.append(activity_index[d["label"]])
            scores.append(d["score"])
    prediction = pd.DataFrame({"video-id": vids, "t-start": starts, "t-end": ends,
                               "label": labels, "score": scores})
    tiou_thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    ap = np.zeros((len(tiou_thresholds), len(activity_index)))
    gt_by_label = ground_truth.groupby("label")
    pred_by_label = prediction.groupby("label")
    for name, cidx in activity_index.items():
        try:
            p = pred_by_label.get_group(cidx).reset_index(drop=True)
        except KeyError:
            p = pd.DataFrame()
        ap[:, cidx] = _ap_one_class(gt_by_label.get_group(cidx).reset_index(drop=True), p,
                                    tiou_thresholds)
    mAP = ap.mean(axis=1)
    return mAP, mAP.mean(), ap, list(activity_index)
