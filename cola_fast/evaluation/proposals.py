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

from ._pairwise import ranges, slice_sums
from .common import check_inputs, prepare_curves
from .config import ProposalConfig


def nms_indices(scores, x1, x2, thresh, keys=None):
    """Indices kept by the greedy NMS of reference.nms, in the same order.
    ``keys`` (optional int64): equal keys <=> identical segments, used to collapse
    duplicates onto their best-ranked copy before the greedy loop."""
    order = np.asarray(scores).argsort()[::-1]
    if order.size == 0:
        return order
    if thresh <= 1:
        if keys is None:
            _, first = np.unique(np.stack([x1[order], x2[order]], axis=1), axis=0,
                                 return_index=True)
        else:
            _, first = np.unique(keys[order], return_index=True)
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


def _runs_all_thresholds(v, th):
    """Runs of candidate positions {j : v[j] >= th[i] and v[j] > 0} (the published
    ``a[a < th] = 0; a > 0``) for every threshold i at once, from the per-position count
    of thresholds passed: O(L log F + number of run ends), no (F, L) mask.
    Returns (i, start, end) sorted by (i, start)."""
    order = np.argsort(th, kind="stable")
    ths = th[order]
    level = np.where(v > 0, np.searchsorted(ths, v, side="right"), 0)
    lp = np.concatenate([[0], level, [0]])
    a, b = lp[:-1], lp[1:]  # boundary j: between position j-1 and j
    up = np.flatnonzero(b > a)
    dn = np.flatnonzero(b < a)
    cu = (b - a)[up]
    cd = (a - b)[dn]
    i_s = ranges(a[up], cu)
    p_s = np.repeat(up, cu)
    i_e = ranges(b[dn], cd)
    p_e = np.repeat(dn, cd) - 1
    os_ = np.lexsort((p_s, i_s))
    oe = np.lexsort((p_e, i_e))
    f = order[i_s[os_]]
    s = p_s[os_]
    e = p_e[oe]
    o = np.lexsort((s, f))
    return f[o], s[o], e[o]


def proposal_arrays(vs, pred, cas_up, act_up, T_orig, cfg: ProposalConfig):
    """All proposals before NMS. Returns (k, f, score, start, end, key) arrays in the
    reference's pooling order (class-major, then threshold, then position); k indexes
    pred, f the threshold (cas thresholds first, then actionness)."""
    L, K = cas_up.shape
    T_used = L // cfg.upsample
    t_factor = (cfg.snippet_frames * T_orig) / (cfg.upsample * T_used * cfg.fps)
    cth, ath = cfg.cas_thresholds, cfg.act_thresholds
    nc = len(cth)
    fa, sa, ea = _runs_all_thresholds(act_up, ath)
    ks, fs, ss, es = [], [], [], []
    for c in range(K):
        fc, sc, ec = _runs_all_thresholds(cas_up[:, c], cth)
        ks += [np.full(len(fc) + len(fa), c)]
        fs += [fc, fa + nc]
        ss += [sc, sa]
        es += [ec, ea]
    k = np.concatenate(ks).astype(np.int64)
    f = np.concatenate(fs).astype(np.int64)
    s = np.concatenate(ss).astype(np.int64)
    e = np.concatenate(es).astype(np.int64)
    n = e - s + 1
    keep = n >= cfg.min_run
    if cfg.min_run <= 1:
        # the published code skips a row whose only candidate position is 0
        row = k * (nc + len(ath)) + f
        _, inv, cnt = np.unique(row, return_inverse=True, return_counts=True)
        keep &= ~((s == 0) & (e == 0) & (cnt[inv] == 1))
    k, f, s, e, n = k[keep], f[keep], s[keep], e[keep], n[keep]
    bank = np.ascontiguousarray(cas_up.T).reshape(-1)  # (K, L): inside a run a_th == cas'
    # inner means, each distinct (class, start, length) summed once
    ikey = (k * L + s) * (L + 1) + n
    ukey, inv = np.unique(ikey, return_inverse=True)
    un = ukey % (L + 1)
    inner = (slice_sums(bank, ukey // (L + 1), un) / un)[inv.reshape(-1)]
    # outer means: [o_s, s) and (e, o_e] laid out contiguously, cas rows thresholded
    o_s = np.maximum(0, (s - cfg.outer_ratio * n).astype(np.int64))
    o_e = np.minimum(int(L - 1), (e + cfg.outer_ratio * n).astype(np.int64))
    n1 = s - o_s
    n2 = o_e - e
    no = n1 + n2
    starts = np.stack([k * L + o_s, k * L + e + 1], axis=1).reshape(-1)
    lens = np.stack([n1, n2], axis=1).reshape(-1)
    vals = bank[ranges(starts, lens)]
    th_run = np.where(f < nc, cth[np.minimum(f, nc - 1)] if nc else 0.0, -np.inf)
    vals = np.where(vals < np.repeat(th_run, no), 0.0, vals)
    osum = slice_sums(vals, np.cumsum(no) - no, no)
    outer = np.where(no > 0, osum / np.maximum(no, 1), 0.0)
    bonus = cfg.video_score_weight * vs.astype(np.float64)[pred]
    score = inner - outer + bonus[k]
    return k, f, score, s * t_factor, (e + 1) * t_factor, s * (L + 1) + e


def generate_proposals_fast(video_scores, cas, actionness, num_snippets_orig, class_names,
                            cfg: ProposalConfig | None = None):
    cfg = cfg or ProposalConfig.thumos14()
    vs, cas, act, T_orig = check_inputs(video_scores, cas, actionness, num_snippets_orig,
                                        class_names, cfg)
    pred, cas_up, act_up = prepare_curves(vs, cas, act, cfg)
    K = len(pred)
    k, f, score, start, end, key = proposal_arrays(vs, pred, cas_up, act_up, T_orig, cfg)
    bounds = np.searchsorted(k, np.arange(K + 1))
    first_f = np.array([f[bounds[c]] if bounds[c + 1] > bounds[c] else np.iinfo(np.int64).max
                        for c in range(K)])
    dets = []
    for c in np.lexsort((np.arange(K), first_f)):
        lo, hi = bounds[c], bounds[c + 1]
        if hi == lo:
            continue
        sc, st, en, ky = score[lo:hi], start[lo:hi], end[lo:hi], key[lo:hi]
        name = class_names[int(pred[c])]
        for i in nms_indices(sc, st, en, cfg.nms_iou, ky):
            dets.append({"label": name, "score": float(sc[i]),
                         "segment": [float(st[i]), float(en[i])]})
    return dets
