"""Fast proposal generation (COLA_SPEC 5 steps 2-7), equal to reference.py.

One video at a time, all predicted classes and all thresholds at once:
- candidate masks for every (class, threshold) row stacked into one boolean array;
  runs found by ``np.diff`` of the zero-padded masks (start/end pairs in row-major
  order, i.e. the reference's pooling order: cas thresholds, then actionness
  thresholds, positions ascending);
- inner and outer means of every run from one batched gather with numpy's own pairwise
  summation order (evaluation/_pairwise.py), so scores are bit-identical to the
  reference's ``np.mean`` and ties break the same way in NMS;
- NMS per class on the same score array and the same ``argsort()[::-1]`` order;
  identical segments are collapsed to their best-ranked copy first (a copy always has
  IoU 1 with it, so it can never survive: the result is unchanged) and the greedy loop
  runs over the kept ones only.
"""
from __future__ import annotations

import numpy as np

from ._pairwise import segment_sums
from .common import check_inputs, prepare_curves
from .config import ProposalConfig


def nms_indices(scores, x1, x2, thresh):
    """Indices kept by the greedy NMS of reference.nms, in the same order."""
    order = np.asarray(scores).argsort()[::-1]
    if order.size == 0:
        return order
    if thresh <= 1:
        # collapse identical segments onto their best-ranked copy (first in `order`)
        seg = np.stack([x1[order], x2[order]], axis=1)
        _, first = np.unique(seg, axis=0, return_index=True)
        order = order[np.sort(first)]
    X1 = x1[order]
    X2 = x2[order]
    areas = X2 - X1 + 1
    keep = []
    rem = np.arange(order.size)
    while rem.size:
        i = rem[0]
        keep.append(order[i])
        rest = rem[1:]
        xx1 = np.maximum(X1[i], X1[rest])
        xx2 = np.minimum(X2[i], X2[rest])
        inter = np.maximum(0.0, xx2 - xx1 + 1)
        iou = inter / (areas[i] + areas[rest] - inter)
        rem = rest[iou < thresh]
    return np.asarray(keep, dtype=np.int64)


def proposal_arrays(vs, pred, cas_up, act_up, T_orig, cfg: ProposalConfig):
    """All proposals before NMS. Returns (cls_k, f, score, start, end) arrays in the
    reference's pooling order (class-major, then threshold, then position)."""
    L, K = cas_up.shape
    T_used = L // cfg.upsample
    t_factor = (cfg.snippet_frames * T_orig) / (cfg.upsample * T_used * cfg.fps)
    cth = cfg.cas_thresholds
    ath = cfg.act_thresholds
    nc, na = len(cth), len(ath)
    F = nc + na
    # score banks: per class, nc thresholded curves then the plain one
    bank = np.empty((K, nc + 1, L))
    casT = cas_up.T  # (K, L)
    for j in range(nc):
        bank[:, j, :] = np.where(casT < cth[j], 0.0, casT)
    bank[:, nc, :] = casT
    padded = np.zeros((K, F, L + 2), dtype=np.int8)
    padded[:, :nc, 1:-1] = bank[:, :nc, :] > 0
    act_tmp = np.where(act_up[None, :] < ath[:, None], 0.0, act_up[None, :])
    padded[:, nc:, 1:-1] = (act_tmp > 0)[None, :, :]
    d = np.diff(padded.reshape(K * F, L + 2), axis=1)
    row, s = np.nonzero(d == 1)
    row_e, e1 = np.nonzero(d == -1)
    e = e1 - 1
    n = e - s + 1
    keep = n >= cfg.min_run
    if cfg.min_run <= 1:
        # the published code skips a class whose only candidate position is 0
        cnt = np.bincount(row, weights=n, minlength=K * F)
        keep &= ~((s == 0) & (cnt[row] == 1))
    row, s, e, n = row[keep], s[keep], e[keep], n[keep]
    k = row // F
    f = row % F
    base = (k * (nc + 1) + np.minimum(f, nc)) * L
    flat = bank.reshape(-1)
    inner = segment_sums(flat, base + s, n, base, 0) / n
    o_s = np.maximum(0, (s - cfg.outer_ratio * n).astype(np.int64))
    o_e = np.minimum(int(L - 1), (e + cfg.outer_ratio * n).astype(np.int64))
    n1 = s - o_s
    n2 = o_e - e
    no = n1 + n2
    osum = segment_sums(flat, base + o_s, n1, base + e + 1, n2)
    outer = np.where(no > 0, osum / np.maximum(no, 1), 0.0)
    bonus = cfg.video_score_weight * vs.astype(np.float64)[pred]
    score = inner - outer + bonus[k]
    return k, f, score, s * t_factor, (e + 1) * t_factor


def generate_proposals_fast(video_scores, cas, actionness, num_snippets_orig, class_names,
                            cfg: ProposalConfig | None = None):
    cfg = cfg or ProposalConfig.thumos14()
    vs, cas, act, T_orig = check_inputs(video_scores, cas, actionness, num_snippets_orig,
                                        class_names, cfg)
    pred, cas_up, act_up = prepare_curves(vs, cas, act, cfg)
    K = len(pred)
    k, f, score, start, end = proposal_arrays(vs, pred, cas_up, act_up, T_orig, cfg)
    bounds = np.searchsorted(k, np.arange(K + 1))
    first_f = np.array([f[bounds[c]] if bounds[c + 1] > bounds[c] else np.iinfo(np.int64).max
                        for c in range(K)])
    dets = []
    for c in np.lexsort((np.arange(K), first_f)):
        lo, hi = bounds[c], bounds[c + 1]
        if hi == lo:
            continue
        sc, st, en = score[lo:hi], start[lo:hi], end[lo:hi]
        name = class_names[int(pred[c])]
        for i in nms_indices(sc, st, en, cfg.nms_iou):
            dets.append({"label": name, "score": float(sc[i]),
                         "segment": [float(st[i]), float(en[i])]})
    return dets
