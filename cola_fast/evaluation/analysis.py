"""Why a detector scores what it scores: per-class AP, precision-recall curves, a
DETAD-style breakdown of false positives, length buckets and the worst videos, for an
ActivityNet-format results file. The numbers behind
``python -m cola_fast.evaluate RESULTS --gt GT --report DIR`` (report.py draws them).

Everything starts from one call of the evaluation's own matcher (detection.match, the
greedy matching of COLA_SPEC 6, equal to the published code), so per-class AP here is the
evaluation's per-class AP, and everything else is numpy over its (threshold, prediction)
arrays.

False-positive categories (DETAD: Alwassel, Caba Heilbron, Escorcia, Ghanem, "Diagnosing
Error in Temporal Action Detectors", ECCV 2018; the rules of its published analysis code).
At a tIoU threshold a, a prediction of class c in video v is a true positive when the
matching gives it a ground-truth instance. Otherwise take, among ALL ground-truth
instances of v (every class of the evaluated subset), the one with the highest tIoU with
the prediction (the first in file order on ties); call that tIoU m and its class c':

- double detection: m >= a and c' == c (a correct detection of an instance that a
  better-scored prediction already took);
- wrong label:      m >= a and c' != c;
- localisation:     0.1 <= m < a and c' == c;
- confusion:        0.1 <= m < a and c' != c;
- background:       m < 0.1, or v has no ground truth (an undefined tIoU, a zero-length
  prediction on a zero-length instance, counts as 0).

Only the best-overlapping instance decides: a prediction whose best overlap is with
another class is "wrong label" / "confusion" even if it also overlaps an instance of its
own class a little less. The lower bound 0.1 is DETAD's (``min_tiou``).

False-positive profile: the predictions of each class c, ranked by score as the
evaluation ranks them, are cut into bands of G_c (c's number of ground-truth
instances): band 1G holds ranks 1..G_c, band 2G ranks G_c+1..2G_c, and so on (DETAD's
bands; each band is counted over all classes together, as DETAD does).

mAP gained by removing an error type (DETAD's "removing error impact"): the predictions
of that category are taken out of each class's ranked list, the true positives stay as
matched, and AP is recomputed with the same number of instances; the gain is that mAP
minus the evaluation's mAP. Unlike DETAD (which keeps the top 10G predictions of each
class and uses its normalised AP_N), this uses all predictions and the plain AP the
evaluation reports, so a gain is directly a gain in the paper's number.

Length buckets: ground-truth instances are split at the terciles of their lengths into
short, medium and long (each about a third of the instances; the edges are given in
seconds). AP of a bucket (DETAD's sensitivity analysis): a class's instances outside the
bucket are left out of its count, the true positives matched to them are taken out of
its ranked list, every false positive stays; mAP of a bucket averages the classes that
have instances in it. Detections are counted in the same buckets by their own length.

Worst videos: at the breakdown threshold, a video's errors are its instances that no
"top" prediction took plus its top predictions that are false positives, where the top
predictions of class c are its G_c best-ranked ones (band 1G). The videos with the most
errors are listed with their instances and top predictions (timelines in the report).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .detection import _flatten, interpolated_ap, match, precision_recall, ranked_rows, video_names
from .io import load_gt, results_arrays

CATEGORIES = ("true positive", "double detection", "wrong label", "localisation", "confusion",
              "background")
ERROR_TYPES = CATEGORIES[1:]
TP, DOUBLE, WRONG_LABEL, LOCALISATION, CONFUSION, BACKGROUND = range(6)
LENGTH_BUCKETS = ("short", "medium", "long")


@dataclass
class Analysis:
    """The analysis of one results file (arrays: numpy; fractions, not percent)."""
    class_names: list
    tiou_thresholds: np.ndarray        # (n_thr,) the evaluation's thresholds
    ap: np.ndarray                     # (n_thr, n_cls) per-class AP
    mAP: np.ndarray                    # (n_thr,)
    average_mAP: float
    n_gt: np.ndarray                   # (n_cls,) ground-truth instances per class
    n_pred: np.ndarray                 # (n_cls,) predictions per class
    pr_tiou: float
    pr_curves: list                    # per class: (recall (k,), precision (k,)) at pr_tiou
    ap_at_pr_tiou: np.ndarray          # (n_cls,)
    error_tiou: float
    min_tiou: float
    profile: np.ndarray                # (n_bands, 6) prediction counts per band and category
    category_counts: np.ndarray        # (6,) all predictions, at error_tiou
    gain: np.ndarray                   # (5, n_thr) mAP gain per error type and threshold
    gain_at_error_tiou: np.ndarray     # (5,) mAP gain at error_tiou
    length_edges: np.ndarray           # (2,) seconds between short|medium and medium|long
    length_gt_counts: np.ndarray       # (3,)
    length_pred_counts: np.ndarray     # (3,) all predictions
    length_top_counts: np.ndarray      # (3,) band-1G predictions
    length_mAP: np.ndarray             # (3, n_thr) mAP per ground-truth length bucket
    worst_videos: list = field(default_factory=list)   # dicts, see _worst_videos


def _best_overlap(n_vid, g_vid, g_s, g_e, g_cls, v, s, e):
    """For predictions (v, s, e): the highest tIoU with any ground-truth instance of their
    video and that instance's class (first in file order on ties); (0, -1) for a video
    without ground truth. Rows are handled in groups of equal instance count."""
    m = len(v)
    best = np.zeros(m)
    best_cls = np.full(m, -1, dtype=np.int64)
    order = np.argsort(g_vid, kind="stable")          # file order inside a video
    counts = np.bincount(g_vid, minlength=n_vid)
    start = np.zeros(n_vid + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    k_row = counts[v]
    for k in np.unique(k_row[k_row > 0]):
        r = np.flatnonzero(k_row == k)
        G = order[start[v[r]][:, None] + np.arange(k)]
        inter = (np.minimum(e[r][:, None], g_e[G]) - np.maximum(s[r][:, None], g_s[G])).clip(0)
        union = (g_e[G] - g_s[G]) + (e[r] - s[r])[:, None] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            tiou = np.nan_to_num(inter / union, nan=0.0)
        j = tiou.argmax(axis=1)
        best[r] = tiou[np.arange(len(r)), j]
        best_cls[r] = g_cls[G[np.arange(len(r)), j]]
    return best, best_cls


def categorise(tp, thr, best, same_label, min_tiou=0.1):
    """DETAD categories (see the module docstring) of ranked predictions: tp (n_thr, N)
    bool, thr (n_thr,), best (N,) highest tIoU with any instance of the video,
    same_label (N,) whether that instance has the prediction's class.
    Returns (n_thr, N) int8 codes TP .. BACKGROUND."""
    thr = np.asarray(thr, dtype=np.float64)[:, None]
    hi = best[None, :] >= thr
    mid = ~hi & (best[None, :] >= min_tiou)
    same = same_label[None, :]
    cat = np.full(tp.shape, BACKGROUND, dtype=np.int8)
    cat[hi & same] = DOUBLE
    cat[hi & ~same] = WRONG_LABEL
    cat[mid & same] = LOCALISATION
    cat[mid & ~same] = CONFUSION
    cat[tp] = TP
    return cat


def _class_ap(tp_rows, npos):
    """AP per row of tp_rows (n_thr, n) for a class with npos instances (0 if no rows)."""
    if tp_rows.shape[-1] == 0 or npos == 0:
        return np.zeros(tp_rows.shape[0])
    prec, rec = precision_recall(tp_rows, npos)
    return np.array([interpolated_ap(prec[t], rec[t]) for t in range(tp_rows.shape[0])])


def _ap_keeping(tp, keep, offs, npos):
    """(n_thr, n_cls) AP where, per threshold, only the predictions with keep[t] are
    ranked (the rest taken out of the list); npos (n_cls,) may be 0 (AP nan)."""
    n_thr, n_cls = tp.shape[0], len(npos)
    ap = np.full((n_thr, n_cls), np.nan)
    for c in range(n_cls):
        if npos[c] == 0:
            continue
        a, b = offs[c], offs[c + 1]
        for t in range(n_thr):
            ap[t, c] = _class_ap(tp[t, a:b][keep[t, a:b]][None, :], npos[c])[0]
    return ap


def _pr_curve(tp_row, npos):
    """The curve at the true positives (where recall steps) and the last prediction."""
    if len(tp_row) == 0 or npos == 0:
        return np.zeros(0), np.zeros(0)
    prec, rec = precision_recall(tp_row, npos)
    at = np.flatnonzero(tp_row)
    at = np.unique(np.r_[at, len(tp_row) - 1])
    return rec[at], prec[at]


def _worst_videos(n_worst, vid_names, g_vid, g_s, g_e, g_cls, cat_row, matched_row, top,
                  rv, rs, re, rc, rsc):
    """The n_worst videos with the most errors (missed instances + top false positives)."""
    n_vid = len(vid_names)
    took = np.zeros(len(g_vid), dtype=bool)
    took[matched_row[top & (matched_row >= 0)]] = True
    missed = np.bincount(g_vid[~took], minlength=n_vid)
    top_fp = np.bincount(rv[top & (cat_row != TP)], minlength=n_vid)
    has_gt = np.bincount(g_vid, minlength=n_vid) > 0
    errors = np.where(has_gt, missed + top_fp, 0)
    cand = np.flatnonzero(errors > 0)
    cand = cand[np.lexsort((np.array([vid_names[i] for i in cand], dtype=object).astype(str),
                            -errors[cand]))][:n_worst]
    out = []
    for v in cand:
        gi = np.flatnonzero(g_vid == v)
        pi = np.flatnonzero(top & (rv == v))
        pi = pi[np.argsort(-rsc[pi], kind="stable")]
        out.append({
            "video": vid_names[v], "errors": int(errors[v]), "missed": int(missed[v]),
            "false_positives": int(top_fp[v]),
            "gt": [(int(g_cls[i]), float(g_s[i]), float(g_e[i]), bool(took[i])) for i in gi],
            "pred": [(int(rc[i]), float(rs[i]), float(re[i]), float(rsc[i]), int(cat_row[i]))
                     for i in pi]})
    return out


def _inputs(gt, results, subset):
    """Validated ground truth and results as the evaluation's flat arrays, plus video ids."""
    gt = load_gt(gt)
    res = results if isinstance(results, tuple) else results_arrays(results)
    subsets = sorted({v["subset"] for v in gt["database"].values()})
    if subset not in subsets:
        raise ValueError(f"unknown subset {subset!r}: the ground truth has {subsets}")
    flat = _flatten(gt, res, subset)
    if not flat[0]:
        raise ValueError(f"the ground truth has no annotations in subset {subset!r}")
    return flat, video_names(gt, res, subset)


def _matched_and_categorised(flat, thr, min_tiou):
    """The evaluation's matching at thresholds thr and the category of every prediction:
    (rows, offs, tp, matched, cat), all in ranked row order (detection.ranked_rows)."""
    names, n_vid, g_vid, g_s, g_e, g_cls, p_vid, p_s, p_e, p_cls, p_sc = flat
    tp, offs, matched = match(len(names), n_vid, g_vid, g_s, g_e, g_cls, p_vid, p_s, p_e, p_cls,
                              p_sc, thr, return_matched=True)
    rows, _ = ranked_rows(len(names), p_cls, p_sc)
    best, best_cls = _best_overlap(n_vid, g_vid, g_s, g_e, g_cls, p_vid[rows], p_s[rows], p_e[rows])
    cat = categorise(tp, thr, best, best_cls == p_cls[rows], min_tiou)
    return rows, offs, tp, matched, cat


def prediction_categories(gt, results, subset: str = "test", tiou: float = 0.5,
                          min_tiou: float = 0.1) -> list:
    """The category name (CATEGORIES) of every prediction at one tIoU threshold, in the
    results' order (videos in file order, each video's detections in order), leaving out
    predictions whose label is not a class of the subset's ground truth."""
    flat, _ = _inputs(gt, results, subset)
    rows, _, _, _, cat = _matched_and_categorised(flat, np.array([float(tiou)]), min_tiou)
    out = np.empty(len(rows), dtype=np.int8)
    out[rows] = cat[0]
    return [CATEGORIES[k] for k in out]


def analyze(gt, results, subset: str = "test", tiou_thresholds=np.linspace(0.1, 0.7, 7),
            pr_tiou: float = 0.5, error_tiou: float = 0.5, min_tiou: float = 0.1,
            n_bands: int = 10, n_worst: int = 6) -> Analysis:
    """The analysis of a results file (path or dict) against a ground truth (path or
    dict) for one subset; see the module docstring for every definition."""
    from . import parse_tiou
    thr = parse_tiou(tiou_thresholds)
    flat, vid_names = _inputs(gt, results, subset)
    names, n_vid, g_vid, g_s, g_e, g_cls, p_vid, p_s, p_e, p_cls, p_sc = flat
    n_cls, n_thr = len(names), len(thr)
    all_thr = np.r_[thr, pr_tiou, error_tiou]
    rows, offs, tp, matched, cat = _matched_and_categorised(flat, all_thr, min_tiou)
    rv, rs, re, rc, rsc = p_vid[rows], p_s[rows], p_e[rows], p_cls[rows], p_sc[rows]
    npos = np.bincount(g_cls, minlength=n_cls)
    n_pred = np.diff(offs)

    ap_all = np.zeros((len(all_thr), n_cls))
    curves = []
    for c in range(n_cls):
        ap_all[:, c] = _class_ap(tp[:, offs[c]:offs[c + 1]], npos[c])
        curves.append(_pr_curve(tp[n_thr, offs[c]:offs[c + 1]], npos[c]))
    ap = ap_all[:n_thr]
    mAP = ap.mean(axis=1)

    rank = np.arange(len(rows)) - offs[rc]
    band = rank // np.maximum(npos[rc], 1)
    e_row = cat[n_thr + 1]
    in_band = band < n_bands
    profile = np.zeros((n_bands, len(CATEGORIES)), dtype=np.int64)
    np.add.at(profile, (band[in_band], e_row[in_band]), 1)

    gain = np.zeros((len(ERROR_TYPES), n_thr))
    gain_e = np.zeros(len(ERROR_TYPES))
    base_e = ap_all[n_thr + 1].mean()
    for k, code in enumerate(range(DOUBLE, BACKGROUND + 1)):
        kept = _ap_keeping(tp[:n_thr], cat[:n_thr] != code, offs, npos)
        gain[k] = kept.mean(axis=1) - mAP
        kept_e = _ap_keeping(tp[n_thr + 1:], cat[n_thr + 1:] != code, offs, npos)
        gain_e[k] = kept_e.mean() - base_e

    g_len = g_e - g_s
    edges = np.quantile(g_len, [1 / 3, 2 / 3])
    g_bucket = np.searchsorted(edges, g_len, side="right")
    p_bucket = np.searchsorted(edges, re - rs, side="right")
    top = band == 0
    length_mAP = np.zeros((len(LENGTH_BUCKETS), n_thr))
    for b in range(len(LENGTH_BUCKETS)):
        in_b = np.zeros(len(g_vid) + 1, dtype=bool)
        in_b[:-1] = g_bucket == b
        keep = ~tp[:n_thr] | in_b[matched[:n_thr]]      # matched -1 -> the False sentinel
        ap_b = _ap_keeping(tp[:n_thr], keep, offs, np.bincount(g_cls[g_bucket == b], minlength=n_cls))
        with np.errstate(invalid="ignore"):
            length_mAP[b] = np.nanmean(ap_b, axis=1) if np.isfinite(ap_b).any() else np.nan

    worst = _worst_videos(n_worst, vid_names, g_vid, g_s, g_e, g_cls, e_row, matched[n_thr + 1],
                          top, rv, rs, re, rc, rsc)
    return Analysis(
        class_names=list(names), tiou_thresholds=thr, ap=ap, mAP=mAP, average_mAP=float(mAP.mean()),
        n_gt=npos, n_pred=n_pred, pr_tiou=float(pr_tiou), pr_curves=curves,
        ap_at_pr_tiou=ap_all[n_thr], error_tiou=float(error_tiou), min_tiou=float(min_tiou),
        profile=profile, category_counts=np.bincount(e_row, minlength=len(CATEGORIES)),
        gain=gain, gain_at_error_tiou=gain_e, length_edges=edges,
        length_gt_counts=np.bincount(g_bucket, minlength=3),
        length_pred_counts=np.bincount(p_bucket, minlength=3),
        length_top_counts=np.bincount(p_bucket[top], minlength=3),
        length_mAP=length_mAP, worst_videos=worst)
