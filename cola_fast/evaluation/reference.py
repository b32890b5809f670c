"""Faithful reference of COLA_SPEC sections 5 and 6: the oracle for the fast paths.

Written in the loop style of the published code on purpose (Python loops over
thresholds, runs and positions for proposals; a Python loop over predictions for the
detection matching), with the same numpy calls where the floats depend on them
(np.mean over gathered positions, np.argsort(...)[::-1] for score and tIoU order).

Choices where the published code would crash (COLA_SPEC: "this file says what we do
instead"), shared with the fast path:
- a class whose candidate positions form only runs shorter than min_run contributes
  nothing at that threshold (the published code indexes an empty list there);
- T == 1 (interp1d needs 2 points): the upsampled curve is constant;
- a prediction label absent from the evaluated ground truth is ignored;
- score arithmetic 0.2 * video_score is done in float64 (NumPy 1.x promotion, the
  published code's era) rather than NumPy 2's float32 scalar arithmetic.

Ties in the matching (ties="official" | "stable", evaluation/detection.py says why):
official keeps the published np.argsort order; stable sorts a class's predictions by
(score descending, video id, start, end) and each prediction's ground-truth candidates by
(tIoU descending, start, end), with Python's sorted.
"""
from __future__ import annotations

import numpy as np

from .common import check_inputs, prepare_curves
from .config import ProposalConfig


# ----------------------------------------------------------------------------------
# Proposals (COLA_SPEC 5)
# ----------------------------------------------------------------------------------
def _grouping(arr):
    return np.split(arr, np.where(np.diff(arr) != 1)[0] + 1)


def _proposals_for_curves(cand_lists, wtcam, video_scores, pred, t_factor, cfg):
    """Runs of candidate positions -> [class, score, start_s, end_s] per predicted class
    (empty classes are left out)."""
    L = wtcam.shape[0]
    out = []
    for i in range(len(cand_lists)):
        positions = cand_lists[i]
        c_temp = []
        if not positions.any():  # the published test (also skips the lone position 0)
            continue
        for run in _grouping(positions):
            n = len(run)
            if n < cfg.min_run:
                continue
            inner = np.mean(wtcam[run, i])
            o_s = max(0, int(run[0] - cfg.outer_ratio * n))
            o_e = min(int(L - 1), int(run[-1] + cfg.outer_ratio * n))
            outer_idx = list(range(o_s, int(run[0]))) + list(range(int(run[-1] + 1), o_e + 1))
            outer = 0 if len(outer_idx) == 0 else np.mean(wtcam[outer_idx, i])
            score = inner - outer + cfg.video_score_weight * float(video_scores[pred[i]])
            c_temp.append([pred[i], score, run[0] * t_factor, (run[-1] + 1) * t_factor])
        if c_temp:
            out.append(c_temp)
    return out


def nms(proposals, thresh):
    """Greedy 1-D NMS of COLA_SPEC 5.7 on rows [class, score, start, end] (the +1 on
    lengths kept). Returns the kept rows (lists of floats) best first."""
    proposals = np.array(proposals, dtype=np.float64)
    x1 = proposals[:, 2]
    x2 = proposals[:, 3]
    scores = proposals[:, 1]
    areas = x2 - x1 + 1
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(proposals[i].tolist())
        xx1 = np.maximum(x1[i], x1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        inds = np.where(iou < thresh)[0]
        order = order[inds + 1]
    return keep


def generate_proposals(video_scores, cas, actionness, num_snippets_orig, class_names,
                       cfg: ProposalConfig | None = None):
    """COLA_SPEC 5 steps 2-7 for one video, reference implementation."""
    cfg = cfg or ProposalConfig.thumos14()
    vs, cas, act, T_orig = check_inputs(video_scores, cas, actionness, num_snippets_orig,
                                        class_names, cfg)
    pred, cas_up, act_up = prepare_curves(vs, cas, act, cfg)
    L = cas_up.shape[0]
    T_used = L // cfg.upsample
    t_factor = (cfg.snippet_frames * T_orig) / (cfg.upsample * T_used * cfg.fps)

    prop_dict = {}
    for th in cfg.cas_thresholds:
        cas_tmp = cas_up.copy()
        cas_tmp[cas_tmp < th] = 0
        cand = [np.where(cas_tmp[:, c] > 0)[0] for c in range(len(pred))]
        for props in _proposals_for_curves(cand, cas_tmp, vs, pred, t_factor, cfg):
            cid = int(props[0][0])
            prop_dict[cid] = prop_dict.get(cid, []) + props
    for th in cfg.act_thresholds:
        act_tmp = np.repeat(act_up[:, None], len(pred), axis=1)
        act_tmp[act_tmp < th] = 0
        cand = [np.where(act_tmp[:, c] > 0)[0] for c in range(len(pred))]
        for props in _proposals_for_curves(cand, cas_up, vs, pred, t_factor, cfg):
            cid = int(props[0][0])
            prop_dict[cid] = prop_dict.get(cid, []) + props

    dets = []
    for cid, props in prop_dict.items():
        for row in nms(props, cfg.nms_iou):
            dets.append({"label": class_names[int(row[0])], "score": float(row[1]),
                         "segment": [float(row[2]), float(row[3])]})
    return dets


# ----------------------------------------------------------------------------------
# Detection mAP (COLA_SPEC 6), per-prediction loops
# ----------------------------------------------------------------------------------
def segment_iou(target, candidates):
    tt1 = np.maximum(target[0], candidates[:, 0])
    tt2 = np.minimum(target[1], candidates[:, 1])
    inter = (tt2 - tt1).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter.astype(float) / union


def interpolated_prec_rec(prec, rec):
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def _stable_rank(pred_videos, pred_segments, pred_scores):
    """ties="stable": score descending, then video id, start, end."""
    return sorted(range(len(pred_scores)), key=lambda p: (-float(pred_scores[p]), pred_videos[p],
                                                          float(pred_segments[p][0]), float(pred_segments[p][1])))


def _stable_walk(tiou_arr, segments):
    """ties="stable": tIoU descending (NaN first, where the reversed argsort puts it), then start, end."""
    def key(j):
        t = tiou_arr[j]
        return (-np.inf if np.isnan(t) else -float(t), float(segments[j][0]), float(segments[j][1]))
    return sorted(range(len(tiou_arr)), key=key)


def average_precision_class(gt_videos, gt_segments, pred_videos, pred_segments, pred_scores,
                            tiou_thresholds, ties="official"):
    """AP of one class at each threshold. gt_* / pred_* in file order."""
    ap = np.zeros(len(tiou_thresholds))
    if len(pred_scores) == 0:
        return ap
    npos = float(len(gt_videos))
    lock_gt = np.ones((len(tiou_thresholds), len(gt_videos))) * -1
    if ties == "stable":
        sort_idx = _stable_rank(pred_videos, pred_segments, pred_scores)
    else:
        sort_idx = np.argsort(np.asarray(pred_scores, dtype=np.float64))[::-1]
    tp = np.zeros((len(tiou_thresholds), len(sort_idx)))
    fp = np.zeros((len(tiou_thresholds), len(sort_idx)))
    by_video = {}
    for j, v in enumerate(gt_videos):
        by_video.setdefault(v, []).append(j)
    gt_segments = np.asarray(gt_segments, dtype=np.float64).reshape(-1, 2)
    for idx, p in enumerate(sort_idx):
        gidx = by_video.get(pred_videos[p])
        if gidx is None:
            fp[:, idx] = 1
            continue
        tiou_arr = segment_iou(pred_segments[p], gt_segments[gidx])
        if ties == "stable":
            tiou_sorted_idx = _stable_walk(tiou_arr, gt_segments[gidx])
        else:
            tiou_sorted_idx = np.argsort(tiou_arr)[::-1]
        for tidx, thr in enumerate(tiou_thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, gidx[jdx]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, gidx[jdx]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_cum = np.cumsum(tp, axis=1).astype(float)
    fp_cum = np.cumsum(fp, axis=1).astype(float)
    rec = tp_cum / npos
    prec = tp_cum / (tp_cum + fp_cum)
    for tidx in range(len(tiou_thresholds)):
        ap[tidx] = interpolated_prec_rec(prec[tidx, :], rec[tidx, :])
    return ap


def evaluate_detection(gt: dict, results: dict, subset: str, tiou_thresholds, ties: str = "official"):
    """gt, results: validated dicts (io.load_gt / io.load_results). Returns (ap matrix
    (n_thr, n_cls), class names in ground-truth order)."""
    tiou_thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    activity_index = {}
    gt_rows = []  # (video, start, end, class index)
    for vid, v in gt["database"].items():
        if v["subset"] != subset:
            continue
        for a in v["annotations"]:
            if a["label"] not in activity_index:
                activity_index[a["label"]] = len(activity_index)
            gt_rows.append((vid, a["segment"][0], a["segment"][1], activity_index[a["label"]]))
    pred_rows = []
    for vid, dets in results["results"].items():
        for d in dets:
            if d["label"] not in activity_index:
                continue
            pred_rows.append((vid, d["segment"][0], d["segment"][1],
                              activity_index[d["label"]], d["score"]))
    ap = np.zeros((len(tiou_thresholds), len(activity_index)))
    for name, cidx in activity_index.items():
        g = [r for r in gt_rows if r[3] == cidx]
        p = [r for r in pred_rows if r[3] == cidx]
        ap[:, cidx] = average_precision_class(
            [r[0] for r in g], [[r[1], r[2]] for r in g],
            [r[0] for r in p], [np.array([r[1], r[2]]) for r in p],
            np.array([r[4] for r in p], dtype=np.float64), tiou_thresholds, ties)
    return ap, list(activity_index)
