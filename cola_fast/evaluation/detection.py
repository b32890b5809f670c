"""Detection mAP of COLA_SPEC 6, vectorised; equal to evaluation/reference.py.

Per class the predictions are ranked with the same call the reference uses
(``np.argsort(scores)[::-1]`` on the same array), and each prediction walks its video's
ground truth in the order ``np.argsort(tiou_row)[::-1]`` - here computed for many rows at
once (rows of equal length stacked, ``argsort(axis=1)``: the same 1-D sort per row).

The greedy matching (a prediction takes the first ground-truth instance of its walk that
is eligible - tIoU not below the threshold - and not yet taken by a better-ranked
prediction) is solved exactly in vectorised rounds over all classes, thresholds and
videos at once. In a round every undecided prediction points at its first untaken
eligible instance ("choice"); within one (threshold, class, video) group, in rank order:
- a prediction whose choice is not the choice of an earlier undecided one, with no
  "blocker" before it, is final: it takes its choice (TP);
- a prediction whose choice repeats an earlier one and has no other eligible instance is
  a false positive (that instance will be taken before its turn whatever happens);
- a prediction whose choice repeats an earlier one but has further options is a blocker:
  it and everything after it in its group wait for the next round.
Every round decides at least the first undecided prediction of each group, so it ends;
with THUMOS-like data a handful of rounds suffice.

Ties (``ties=``, one of TIES): "official" orders tied scores, and ground-truth instances
of equal tIoU, as the published code does: by numpy's default (quicksort) argsort, whose
order among equal values depends on numpy's sort implementation (SIMD sorts differ between
AVX-512 and AVX2 CPUs, and between numpy versions). "stable" ranks a class's predictions by
(score descending, video id, segment start, segment end) and walks the ground truth by
(tIoU descending, start, end), with np.lexsort (a stable sort: its order is defined by the
keys alone); entries equal in every key are interchangeable, so the mAP depends neither on
the machine nor on the order of the entries in the files.
"""
from __future__ import annotations

import numpy as np

from .io import results_arrays

TIES = ("official", "stable")


def check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")


def video_names(gt: dict, results, subset: str) -> list:
    """Video ids by the indices _flatten gives them (ground-truth videos with annotations
    in subset first, then the results' other videos in file order); results: the tuple of
    io.results_arrays."""
    names, seen = [], set()
    for vid, v in gt["database"].items():
        if v["subset"] == subset and v["annotations"] and vid not in seen:
            seen.add(vid)
            names.append(vid)
    for vid in results[0]:
        if vid not in seen:
            seen.add(vid)
            names.append(vid)
    return names


def video_ranks(names: list) -> np.ndarray:
    """The rank of each video index in the order of the video ids (the stable rule's key)."""
    rank = np.empty(len(names), dtype=np.int64)
    rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
    return rank


def _flatten(gt: dict, results, subset: str):
    """gt: validated dict; results: the tuple of io.results_arrays."""
    activity_index = {}
    vid_index = {}
    g_vid, g_s, g_e, g_cls = [], [], [], []
    for vid, v in gt["database"].items():
        if v["subset"] != subset:
            continue
        for a in v["annotations"]:
            c = activity_index.get(a["label"])
            if c is None:
                c = activity_index[a["label"]] = len(activity_index)
            g_vid.append(vid_index.setdefault(vid, len(vid_index)))
            g_s.append(a["segment"][0])
            g_e.append(a["segment"][1])
            g_cls.append(c)
    r_vids, r_vid_of, r_labels, r_scores, r_s, r_e = results
    cls = np.array([activity_index.get(lab, -1) for lab in r_labels], dtype=np.int64)
    keep = cls >= 0
    # videos without ground truth get their own indices (their detections are all FP)
    r_vidx = np.array([vid_index.setdefault(v, len(vid_index)) for v in r_vids], dtype=np.int64)
    p_vid = r_vidx[r_vid_of[keep]] if len(r_vids) else np.zeros(0, np.int64)
    p_s, p_e, p_cls, p_sc = r_s[keep], r_e[keep], cls[keep], r_scores[keep]
    ia = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    fa = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    return (list(activity_index), len(vid_index), ia(g_vid), fa(g_s), fa(g_e), ia(g_cls),
            ia(p_vid), fa(p_s), fa(p_e), ia(p_cls), fa(p_sc))


def _interp_ap(prec, rec):
    """VOC-2011 area, same arithmetic as reference.interpolated_prec_rec."""
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def ranked_rows(n_cls, p_cls, p_sc, stable_keys=None):
    """The predictions grouped by class and ranked by score inside each class exactly as
    the reference does: (rows (N,) prediction indices, class offsets (n_cls + 1)); the
    predictions of class c are rows[offs[c]:offs[c + 1]], best first. stable_keys: None
    for the official order, or (video rank, start, end) of each prediction for ties="stable"."""
    cls_order = np.argsort(p_cls, kind="stable")
    counts = np.bincount(p_cls, minlength=n_cls)
    offs = np.zeros(n_cls + 1, dtype=np.int64)
    np.cumsum(counts, out=offs[1:])
    if stable_keys is not None:
        v, st, en = stable_keys
        return np.lexsort((en, st, v, -p_sc, p_cls)), offs
    rows = np.empty(len(p_cls), dtype=np.int64)
    for c in range(n_cls):
        idx = cls_order[offs[c]:offs[c + 1]]
        rows[offs[c]:offs[c + 1]] = idx[np.argsort(p_sc[idx])[::-1]]
    return rows, offs


def _walk_order(tiou, gs, ge, stable: bool):
    """The order in which each row's predictions walk their ground-truth candidates: tIoU
    descending (NaN first, as the reversed argsort puts it); official: np.argsort's order
    among ties; stable: then start, then end ascending."""
    if not stable:
        return np.argsort(tiou, axis=1)[:, ::-1]
    key = np.where(np.isnan(tiou), -np.inf, -tiou)
    return np.lexsort((ge, gs, key), axis=1)


def match(n_cls, n_vid, g_vid, g_s, g_e, g_cls, p_vid, p_s, p_e, p_cls, p_sc, thr,
          return_matched=False, vid_rank=None):
    """Returns (tp (n_thr, N) bool in (class, rank) row order (see ranked_rows), class
    offsets (n_cls+1)); with return_matched also the index of the ground-truth instance
    each true positive took ((n_thr, N) int, -1 for false positives). vid_rank: None for
    ties="official", or video_ranks(...) (n_vid,) for ties="stable"."""
    thr = np.asarray(thr, dtype=np.float64)
    n_thr = len(thr)
    stable = vid_rank is not None
    keys = (vid_rank[p_vid], p_s, p_e) if stable else None
    rows, offs = ranked_rows(n_cls, p_cls, p_sc, keys)
    N = len(rows)
    tp = np.zeros((n_thr, N), dtype=bool)
    matched = np.full((n_thr, N), -1, dtype=np.int64) if return_matched else None
    if N == 0 or len(g_vid) == 0 or n_thr == 0:
        return (tp, offs, matched) if return_matched else (tp, offs)
    rc, rv, rs, re = p_cls[rows], p_vid[rows], p_s[rows], p_e[rows]
    rank = np.arange(N) - offs[rc]

    # ground truth grouped by (class, video), file order inside a group
    gkey = g_cls * n_vid + g_vid
    gorder = np.argsort(gkey, kind="stable")
    ukey, gstart, gcount = np.unique(gkey[gorder], return_index=True, return_counts=True)
    pkey = rc * n_vid + rv
    pos = np.searchsorted(ukey, pkey)
    pos_c = np.minimum(pos, len(ukey) - 1)
    found = ukey[pos_c] == pkey
    k_row = np.where(found, gcount[pos_c], 0)
    s_row = np.where(found, gstart[pos_c], 0)

    # preference lists (CSR) and the eligible prefix length per (threshold, row)
    pref_off = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(k_row, out=pref_off[1:])
    pref_gt = np.empty(pref_off[-1], dtype=np.int64)
    elig = np.zeros((n_thr, N), dtype=np.int64)
    for k in np.unique(k_row[k_row > 0]):
        r = np.flatnonzero(k_row == k)
        ar = np.arange(k)
        G = gorder[s_row[r][:, None] + ar]
        tt1 = np.maximum(rs[r][:, None], g_s[G])
        tt2 = np.minimum(re[r][:, None], g_e[G])
        inter = (tt2 - tt1).clip(0)
        union = (g_e[G] - g_s[G]) + (re[r] - rs[r])[:, None] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            tiou = inter.astype(float) / union
        o = _walk_order(tiou, g_s[G], g_e[G], stable)
        srt = np.take_along_axis(tiou, o, axis=1)
        pref_gt[pref_off[r][:, None] + ar] = np.take_along_axis(G, o, axis=1)
        lt = srt[None, :, :] < thr[:, None, None]  # (n_thr, m, k)
        elig[:, r] = np.where(lt.any(axis=2), lt.argmax(axis=2), k)

    # instances: (threshold, row) with at least one eligible instance
    it, ir = np.nonzero(elig)
    grp = np.lexsort((rank[ir], rv[ir], rc[ir], it))
    it, ir = it[grp], ir[grp]
    gk = (it * n_cls + rc[ir]) * n_vid + rv[ir]
    ptr = pref_off[ir].copy()
    end = ptr + elig[it, ir]
    lock_base = it * len(g_vid)
    taken = np.zeros(n_thr * len(g_vid), dtype=bool)
    active = np.arange(len(it))
    while active.size:
        while True:  # advance past instances taken in earlier rounds
            p = ptr[active]
            ok = p < end[active]
            lk = lock_base[active] + pref_gt[np.minimum(p, len(pref_gt) - 1)]
            adv = ok & taken[lk]
            if not adv.any():
                break
            ptr[active[adv]] += 1
        active = active[ok]  # the rest are false positives
        if not active.size:
            break
        p = ptr[active]
        choice = lock_base[active] + pref_gt[p]
        o = np.argsort(choice, kind="stable")
        sc = choice[o]
        first = np.empty(len(active), dtype=bool)
        first[o] = np.r_[True, sc[1:] != sc[:-1]]
        more = p + 1 < end[active]
        blocker = ~first & more
        g = gk[active]
        gs = np.r_[True, g[1:] != g[:-1]]
        cb = np.cumsum(blocker) - blocker  # blockers strictly before, running
        start_idx = np.maximum.accumulate(np.where(gs, np.arange(len(g)), 0))
        clear = cb == cb[start_idx]
        win = first & clear
        tp[it[active[win]], ir[active[win]]] = True
        taken[choice[win]] = True
        if return_matched:
            matched[it[active[win]], ir[active[win]]] = pref_gt[p[win]]
        active = active[~(win | (~first & ~more))]
    return (tp, offs, matched) if return_matched else (tp, offs)


def evaluate_arrays(names, n_vid, g_vid, g_s, g_e, g_cls, p_vid, p_s, p_e, p_cls, p_sc, thr,
                    vid_rank=None):
    n_cls = len(names)
    thr = np.asarray(thr, dtype=np.float64)
    tp_all, offs = match(n_cls, n_vid, g_vid, g_s, g_e, g_cls, p_vid, p_s, p_e, p_cls, p_sc, thr,
                         vid_rank=vid_rank)
    ap = np.zeros((len(thr), n_cls))
    npos_all = np.bincount(g_cls, minlength=n_cls)
    for c in range(n_cls):
        if offs[c + 1] == offs[c]:
            continue
        prec, rec = precision_recall(tp_all[:, offs[c]:offs[c + 1]], npos_all[c])
        for t in range(len(thr)):
            ap[t, c] = _interp_ap(prec[t, :], rec[t, :])
    return ap


def precision_recall(tp, npos):
    """Precision and recall after each ranked prediction of one class, from its true
    positive flags tp (..., n) bool and its number of ground-truth instances (the
    reference's arithmetic)."""
    tp = np.asarray(tp).astype(np.float64)
    fp = 1.0 - tp
    tp_cum = np.cumsum(tp, axis=-1).astype(float)
    fp_cum = np.cumsum(fp, axis=-1).astype(float)
    rec = tp_cum / float(npos)
    prec = tp_cum / (tp_cum + fp_cum)
    return prec, rec


def interpolated_ap(prec, rec):
    """The VOC-2011 interpolated area under one precision-recall curve (as the reference)."""
    return _interp_ap(prec, rec)


def evaluate_detection_fast(gt: dict, results, subset: str, tiou_thresholds, ties: str = "official"):
    """results: a results dict / path, or the tuple of io.results_arrays."""
    check_ties(ties)
    if not isinstance(results, tuple):
        results = results_arrays(results)
    names, n_vid, *arrays = _flatten(gt, results, subset)
    vid_rank = video_ranks(video_names(gt, results, subset)) if ties == "stable" else None
    return evaluate_arrays(names, n_vid, *arrays, tiou_thresholds, vid_rank=vid_rank), names
