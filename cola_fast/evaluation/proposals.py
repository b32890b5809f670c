"""Fast proposal generation (COLA_SPEC 5 steps 2-7), equal to reference.py: the same
detections in the same order with bit-identical floats.

Many videos at once (``generate_proposals_batch``; ``generate_proposals`` is a batch of
one), all predicted classes and all thresholds at once:
- runs: the curves of all (video, class) pairs are laid end to end with a 0 between
  them; for every position the number of thresholds it passes (``searchsorted``) gives,
  by its differences, the start and end of every run at every threshold: no (threshold,
  position) mask, no Python loop over positions or thresholds;
- scores: inner and outer means of every run from batched slices summed in numpy's own
  pairwise order (evaluation/_pairwise.py), so they equal the reference's ``np.mean``
  bit for bit (ties then break the same way in NMS). Inside a run the thresholded cas
  equals cas', so inner means read the plain curve; outer values are thresholded
  element-wise as the reference's array is;
- NMS per (video, class), exact greedy, vectorised: the reference order
  ``argsort(scores)[::-1]`` of each pooled score array; identical segments collapsed
  onto their best-ranked copy (a copy has IoU 1 with it and can never survive); the
  pairs with IoU >= threshold found by a window on sorted starts (IoU >= t needs
  start_j - start_i <= (1 - t) * len_i); then the greedy decided in rounds over those
  edges: a proposal is suppressed as soon as a better-ranked neighbour is kept, kept
  once all better-ranked neighbours are suppressed.

Native path: when the compiled extension cola_fast._C is built, runs, scores and NMS are
done by its CPU ops instead (csrc/cpu/proposals.cpp: the same pairwise summation order,
the same greedy NMS; groups whose rank order has score ties between different segments
go to numpy's argsort, as the reference). The extension is optional at runtime: the
setting is ``backend=``, in the ops' vocabulary (cola_fast.ops): "auto" (native when
built, else numpy), "native" (raises when it is not built) or "numpy".
"""
from __future__ import annotations

import functools
import gc

import numpy as np

from ._pairwise import ranges, slice_sums
from .common import check_inputs, predicted_classes, prepare_curves
from .config import ProposalConfig


def nms_indices(scores, x1, x2, thresh, keys=None):
    """Indices kept by the greedy NMS of reference.nms, in the same order (loop over the
    kept ones, as the reference; used for thresholds outside (0, 1] and in tests)."""
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


def nms_batched(group, scores, x1, x2, keys, thresh):
    """Greedy NMS (reference.nms) of many groups at once.

    group: (N,) int, non-decreasing (items of a group contiguous, in pooling order);
    keys: (N,) int, equal within a group <=> identical segment. Returns the kept item
    indices, grouped as ``group`` and within a group best first (the reference's order).
    """
    N = len(group)
    if N == 0:
        return np.zeros(0, dtype=np.int64)
    bounds = np.flatnonzero(np.r_[True, group[1:] != group[:-1], True])
    if not (0 < thresh <= 1):
        out = [lo + nms_indices(scores[lo:hi], x1[lo:hi], x2[lo:hi], thresh, keys[lo:hi])
               for lo, hi in zip(bounds[:-1], bounds[1:])]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    # rank order of each group: the same argsort call on the same array as the reference
    order = np.concatenate([lo + scores[lo:hi].argsort()[::-1]
                            for lo, hi in zip(bounds[:-1], bounds[1:])])
    # collapse identical segments onto their best-ranked copy
    g_o = group[order]
    k_o = keys[order]
    srt = np.lexsort((np.arange(N), k_o, g_o))
    firsts = srt[np.r_[True, (g_o[srt][1:] != g_o[srt][:-1]) | (k_o[srt][1:] != k_o[srt][:-1])]]
    order = order[np.sort(firsts)]  # still grouped, best first within a group
    M = len(order)
    g = group[order]
    X1, X2 = x1[order], x2[order]
    areas = X2 - X1 + 1
    rank = np.arange(M)
    # candidate pairs by a window on start within each group
    bs = np.lexsort((X1, g))
    sg, sx1 = g[bs], X1[bs]
    hi_x = sx1 + (1 - thresh) * areas[bs]
    # first start beyond hi_x inside the same group: one searchsorted on (group, start)
    # mapped to a single float key; the window is widened and the exact test follows
    span = float(np.max(np.abs(x1))) + float(np.max(areas)) + 2.0 if M else 1.0
    gk = sg.astype(np.float64) * (4.0 * span)
    slack = 1e-6 * span
    ends = np.searchsorted(gk + sx1, gk + hi_x + slack, side="right")
    cnt = np.maximum(ends - (np.arange(M) + 1), 0)
    a = np.repeat(bs, cnt)
    b = bs[ranges(np.arange(M) + 1, cnt)]
    # exact IoU with the reference's arithmetic; the better-ranked one is "i"
    i = np.minimum(rank[a], rank[b])
    j = np.maximum(rank[a], rank[b])
    xx1 = np.maximum(X1[i], X1[j])
    xx2 = np.minimum(X2[i], X2[j])
    inter = np.maximum(0.0, xx2 - xx1 + 1)
    iou = inter / (areas[i] + areas[j] - inter)
    conflict = ~(iou < thresh)
    src, dst = i[conflict], j[conflict]
    state = np.zeros(M, dtype=np.int8)  # 0 undecided, 1 kept, 2 suppressed
    while True:
        und = state == 0
        if not und.any():
            break
        ss = state[src]
        has_kept = np.bincount(dst[ss == 1], minlength=M) > 0
        waiting = np.bincount(dst[ss == 0], minlength=M) > 0
        state[und & has_kept] = 2
        state[und & ~has_kept & ~waiting] = 1
        live = state[dst] == 0
        src, dst = src[live], dst[live]
    return order[state == 1]


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
    return f, p_s[os_], p_e[oe]


def _prepare(items, class_names, cfg):
    vids = []
    for n, it in enumerate(items):
        if len(it) != 4:
            raise ValueError(f"item {n}: expected (video_scores, cas, actionness, "
                             f"num_snippets_orig), got {len(it)} values")
        vs, cas, act, T_orig = check_inputs(*it, class_names, cfg)
        pred, cas_up, act_up = prepare_curves(vs, cas, act, cfg)
        vids.append((vs, pred, cas_up, act_up, T_orig))
    return vids


def proposal_arrays_batch(vids, cfg: ProposalConfig):
    """All proposals before NMS for many prepared videos. Returns a dict of arrays in the
    reference's pooling order (video, class, threshold, position)."""
    cth, ath = cfg.cas_thresholds, cfg.act_thresholds
    nc, na = len(cth), len(ath)
    Ls = np.array([v[2].shape[0] for v in vids], dtype=np.int64)
    Ks = np.array([len(v[1]) for v in vids], dtype=np.int64)
    # cas curves of all (video, class) laid end to end, one 0 after each
    seg_vid = np.repeat(np.arange(len(vids)), Ks)
    seg_cls = np.concatenate([np.arange(k) for k in Ks])
    seg_len = Ls[seg_vid]
    seg_off = np.cumsum(seg_len + 1) - (seg_len + 1)
    bank = np.zeros(int((seg_len + 1).sum()) + 1)
    bank[ranges(seg_off, seg_len)] = np.concatenate(
        [np.ascontiguousarray(v[2].T).reshape(-1) for v in vids])
    fc, sc_, ec = _runs_all_thresholds(bank, cth)
    seg_c = np.searchsorted(seg_off, sc_, side="right") - 1
    # actionness curves of all videos, same layout
    act_off = np.cumsum(Ls + 1) - (Ls + 1)
    abank = np.zeros(int((Ls + 1).sum()) + 1)
    abank[ranges(act_off, Ls)] = np.concatenate([v[3] for v in vids])
    fa, sa, ea = _runs_all_thresholds(abank, ath)
    vid_a = np.searchsorted(act_off, sa, side="right") - 1
    # replicate actionness runs for each predicted class of their video
    seg_first = np.cumsum(Ks) - Ks  # first (video, class) segment of each video
    rep = Ks[vid_a]
    seg_a = np.repeat(seg_first[vid_a], rep) + ranges(np.zeros(len(rep), np.int64), rep)
    sa_l = np.repeat(sa - act_off[vid_a], rep)
    ea_l = np.repeat(ea - act_off[vid_a], rep)
    fa_r = np.repeat(fa, rep) + nc
    seg = np.concatenate([seg_c, seg_a])
    f = np.concatenate([fc, fa_r])
    s = np.concatenate([sc_ - seg_off[seg_c], sa_l])
    e = np.concatenate([ec - seg_off[seg_c], ea_l])
    o = np.lexsort((s, f, seg))  # pooling order: (video, class), threshold, position
    seg, f, s, e = seg[o], f[o], s[o], e[o]
    n = e - s + 1
    keep = n >= cfg.min_run
    if cfg.min_run <= 1:
        # the published code skips a row whose only candidate position is 0
        row = seg * (nc + na) + f
        _, inv, cnt = np.unique(row, return_inverse=True, return_counts=True)
        keep &= ~((s == 0) & (e == 0) & (cnt[inv.reshape(-1)] == 1))
    seg, f, s, e, n = seg[keep], f[keep], s[keep], e[keep], n[keep]
    L = seg_len[seg]
    base = seg_off[seg]
    # inner means (each distinct slice summed once)
    ukey, inv = np.unique((base + s) * (int(Ls.max()) + 2) + n, return_inverse=True)
    un = ukey % (int(Ls.max()) + 2)
    inner = (slice_sums(bank, ukey // (int(Ls.max()) + 2), un) / un)[inv.reshape(-1)]
    # outer means: [o_s, s) and (e, o_e] laid out contiguously, cas rows thresholded
    o_s = np.maximum(0, (s - cfg.outer_ratio * n).astype(np.int64))
    o_e = np.minimum(L - 1, (e + cfg.outer_ratio * n).astype(np.int64))
    n1 = s - o_s
    n2 = o_e - e
    no = n1 + n2
    starts = np.stack([base + o_s, base + e + 1], axis=1).reshape(-1)
    lens = np.stack([n1, n2], axis=1).reshape(-1)
    vals = bank[ranges(starts, lens)]
    th_run = cth[np.minimum(f, nc - 1)] if nc else np.zeros(len(f))
    th_run = np.where(f < nc, th_run, -np.inf)
    vals = np.where(vals < np.repeat(th_run, no), 0.0, vals)
    osum = slice_sums(vals, np.cumsum(no) - no, no)
    outer = np.where(no > 0, osum / np.maximum(no, 1), 0.0)
    vid = seg_vid[seg]
    cls = seg_cls[seg]
    bonus = np.concatenate([cfg.video_score_weight * v[0].astype(np.float64)[v[1]] for v in vids])
    score = inner - outer + bonus[seg]
    T_used = Ls // cfg.upsample
    T_orig = np.array([v[4] for v in vids], dtype=np.int64)
    t_factor = np.array([(cfg.snippet_frames * int(to)) / (cfg.upsample * int(tu) * cfg.fps)
                         for to, tu in zip(T_orig, T_used)])
    tf = t_factor[vid]
    return {"seg": seg, "vid": vid, "cls": cls, "f": f, "score": score,
            "start": s * tf, "end": (e + 1) * tf, "key": s * (int(Ls.max()) + 2) + e}


BACKENDS = ("auto", "native", "numpy")  # of this module; the package adds "reference"
_NATIVE_OPS = ("pairwise_sum", "proposal_runs", "nms_groups")


@functools.lru_cache(maxsize=None)
def _native_ops():
    """torch.ops.cola_fast when the extension with the proposal ops is built, else None
    (the ops' own check: cola_fast.ops._backend.native_has_kernel)."""
    try:
        from cola_fast.ops._backend import native_has_kernel
    except ImportError:
        return None
    if not all(native_has_kernel(op, "cpu") for op in _NATIVE_OPS):
        return None
    import torch
    return torch.ops.cola_fast


def proposal_backend(backend: str = "auto") -> str:
    """The path generate_proposals_batch takes for backend ("auto", "native" or "numpy"):
    "native" (C++ ops) or "numpy"."""
    if backend not in BACKENDS:
        raise ValueError(f"proposal backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numpy":
        return "numpy"
    if _native_ops() is None:
        if backend == "native":
            raise RuntimeError("the native proposal ops are not available: cola_fast._C is not built "
                               "(or lacks the proposal ops); build it with "
                               "`pip install --no-build-isolation -e .` or use backend numpy")
        return "numpy"
    return "native"


def _prepare_native(items, class_names, cfg: ProposalConfig, banks=True):
    """_prepare with the normalised, upsampled curves made by the C++ op, laid out as the
    proposal op reads them: (vids as _prepare without the curves, Ls, cas_bank, act_bank).
    banks=False (and one dtype per curve kind): no banks; cas_bank is then the dict of
    arguments of the fused op proposal_runs_raw and act_bank None."""
    import torch

    ops = _native_ops()
    chk = []
    for n, it in enumerate(items):
        if len(it) != 4:
            raise ValueError(f"item {n}: expected (video_scores, cas, actionness, "
                             f"num_snippets_orig), got {len(it)} values")
        vs, cas, act, T_orig = check_inputs(*it, class_names, cfg)
        chk.append((vs, predicted_classes(vs, cfg), cas, act, T_orig))
    if not chk:
        return [], None, None, None
    step = 1 / cfg.upsample
    Tv = np.array([c[2].shape[0] for c in chk], dtype=np.int64)
    lens = {}
    for T in np.unique(Tv).tolist():  # == len(np.arange(0, T, step)), numpy's own count
        lens[T] = len(np.arange(0, T, step))
    Ls = np.array([lens[T] for T in Tv.tolist()], dtype=np.int64)
    Ks = np.array([len(c[1]) for c in chk], dtype=np.int64)
    x_new = np.arange(0, int(Tv.max()), step)  # each video's positions are a prefix of it
    t = torch.from_numpy
    seg_vid = np.repeat(np.arange(len(chk)), Ks)
    seg_len = Ls[seg_vid]
    seg_off = np.cumsum(seg_len) - seg_len
    act_off = np.cumsum(Ls) - Ls

    def bank(arrays, src_off, stride, T, out_off, out_len, size):
        if len({a.dtype for a in arrays}) == 1:
            x = np.concatenate([a.reshape(-1) for a in arrays])
            return ops.norm_upsample(t(x), t(src_off), t(stride), t(T), t(out_off), t(out_len),
                                     t(x_new), int(size)).numpy()
        return None

    C = chk[0][2].shape[1]
    cas_base = np.cumsum(Tv * C) - Tv * C
    if not banks and len({c[2].dtype for c in chk}) == 1 and len({c[3].dtype for c in chk}) == 1:
        raw = {"cas_x": np.concatenate([c[2].reshape(-1) for c in chk]),
               "cas_src_off": cas_base[seg_vid] + np.concatenate([c[1] for c in chk]),
               "cas_stride": np.full(len(seg_vid), C, dtype=np.int64),
               "act_x": np.concatenate([c[3] for c in chk]), "act_src_off": np.cumsum(Tv) - Tv,
               "seg_vid": seg_vid, "vid_T": Tv, "vid_len": Ls, "x_new": x_new}
        vids = [(vs, pred, None, None, T_orig) for vs, pred, cas, act, T_orig in chk]
        return vids, Ls, raw, None
    cas_bank = bank([c[2] for c in chk], cas_base[seg_vid] + np.concatenate([c[1] for c in chk]),
                    np.full(len(seg_vid), C, dtype=np.int64), Tv[seg_vid], seg_off, seg_len,
                    int(seg_len.sum()))
    act_bank = bank([c[3] for c in chk], np.cumsum(Tv) - Tv, np.ones(len(chk), dtype=np.int64), Tv,
                    act_off, Ls, int(Ls.sum()))
    if cas_bank is None or act_bank is None:  # mixed dtypes across videos: per video in numpy
        vids = [(vs, pred, *prepare_curves(vs, cas, act, cfg)[1:], T_orig)
                for vs, pred, cas, act, T_orig in chk]
        cas_bank = np.concatenate([np.ascontiguousarray(v[2].T).reshape(-1) for v in vids])
        act_bank = np.concatenate([v[3] for v in vids])
    vids = [(vs, pred, None, None, T_orig) for vs, pred, cas, act, T_orig in chk]
    return vids, Ls, cas_bank, act_bank


def _native_arrays(vids, Ls, cas_bank, act_bank, cfg: ProposalConfig):
    """proposal_arrays_batch + nms_batched with the C++ ops (from _prepare_native's banks or
    raw curves). Returns (P, kept)."""
    import torch

    ops = _native_ops()
    Ks = np.array([len(v[1]) for v in vids], dtype=np.int64)
    seg_vid = np.repeat(np.arange(len(vids)), Ks)
    seg_len = Ls[seg_vid]
    seg_off = np.cumsum(seg_len) - seg_len
    act_off = np.cumsum(Ls) - Ls
    bonus = np.concatenate([cfg.video_score_weight * v[0].astype(np.float64)[v[1]] for v in vids])
    t = torch.from_numpy
    ths = (t(np.ascontiguousarray(cfg.cas_thresholds, dtype=np.float64)),
           t(np.ascontiguousarray(cfg.act_thresholds, dtype=np.float64)))
    if isinstance(cas_bank, dict):  # raw curves: normalised and upsampled inside the op
        r = cas_bank
        out = ops.proposal_runs_raw(
            t(r["cas_x"]), t(r["cas_src_off"]), t(r["cas_stride"]), t(r["act_x"]), t(r["act_src_off"]),
            t(r["seg_vid"]), t(r["vid_T"]), t(r["vid_len"]), t(r["x_new"]), *ths, t(bonus),
            float(cfg.outer_ratio), int(cfg.min_run))
    else:
        out = ops.proposal_runs(t(cas_bank), t(seg_off), t(seg_vid), t(act_bank), t(act_off), t(Ls),
                                *ths, t(bonus), float(cfg.outer_ratio), int(cfg.min_run))
    seg, f, s, e, score = (x.numpy() for x in out)
    vid = seg_vid[seg]
    T_used = Ls // cfg.upsample
    t_factor = np.array([(cfg.snippet_frames * int(v[4])) / (cfg.upsample * int(tu) * cfg.fps)
                         for v, tu in zip(vids, T_used.tolist())])
    tf = t_factor[vid]
    start, end = s * tf, (e + 1) * tf
    key = s * (int(Ls.max()) + 2) + e
    P = {"seg": seg, "vid": vid, "f": f, "score": score, "start": start, "end": end, "key": key}
    thresh = cfg.nms_iou
    if not (0 < thresh <= 1):
        return P, nms_batched(seg, score, start, end, key, thresh)
    bounds = np.searchsorted(seg, np.arange(int(Ks.sum()) + 1))
    none = t(np.zeros(0, dtype=np.int64))
    kept, ties = (x.numpy() for x in ops.nms_groups(t(score), t(start), t(end), t(key), t(bounds),
                                                    none, float(thresh)))
    if len(ties):
        # rank order with score ties between different segments: numpy's argsort of the
        # group's scores, as the reference, then the same greedy
        lo, hi = bounds[ties], bounds[ties + 1]
        sel = ranges(lo, hi - lo)
        sub_b = np.r_[0, np.cumsum(hi - lo)]
        order = np.concatenate([b0 + score[l:h].argsort()[::-1]
                                for b0, l, h in zip(sub_b[:-1].tolist(), lo.tolist(), hi.tolist())])
        k2, _ = ops.nms_groups(t(score[sel]), t(start[sel]), t(end[sel]), t(key[sel]), t(sub_b),
                               t(np.ascontiguousarray(order, dtype=np.int64)), float(thresh))
        kept = np.concatenate([kept, sel[k2.numpy()]])
    return P, kept


def generate_proposals_batch(items, class_names, cfg: ProposalConfig | None = None, backend: str = "auto"):
    """COLA_SPEC 5 steps 2-7 for many videos at once.

    items: sequence of (video_scores, cas, actionness, num_snippets_orig) per video.
    backend: which path (see proposal_backend); both give the same result.
    Returns one detection list per item, each equal to generate_proposals(..., "reference").
    """
    cfg = cfg or ProposalConfig.thumos14()
    if proposal_backend(backend) == "native":
        vids, Ls, cas_bank, act_bank = _prepare_native(items, class_names, cfg, banks=False)
        if not vids:
            return []
        P, kept = _native_arrays(vids, Ls, cas_bank, act_bank, cfg)
    else:
        vids = _prepare(items, class_names, cfg)
        if not vids:
            return []
        P = proposal_arrays_batch(vids, cfg)
        kept = nms_batched(P["seg"], P["score"], P["start"], P["end"], P["key"], cfg.nms_iou)
    # classes of a video in the order the published code first meets them (the arrays are
    # in pooling order (segment, threshold, position): a segment's first item has its least f)
    seg, f = P["seg"], P["f"]
    n_seg = int(sum(len(v[1]) for v in vids))
    first_f = np.full(n_seg, np.iinfo(np.int64).max)
    if len(seg):
        head = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        first_f[seg[head]] = f[head]
    seg_vid = P["vid"]
    kseg = seg[kept]
    seg_rank = np.empty(n_seg, dtype=np.int64)
    svid = np.repeat(np.arange(len(vids)), [len(v[1]) for v in vids])
    o = np.lexsort((np.arange(n_seg), first_f, svid))
    seg_rank[o] = np.arange(n_seg)
    kept = kept[np.argsort(seg_rank[kseg], kind="stable")]
    labels = np.array([class_names[int(c)] for c in np.concatenate([v[1] for v in vids])],
                      dtype=object)
    # kept is now grouped by video (in video order): one flat list, sliced per video
    cut = np.searchsorted(seg_vid[kept], np.arange(len(vids) + 1)).tolist()
    # tens of thousands of small acyclic objects: without the cyclic GC (which would walk
    # every live object several times meanwhile) while they are made
    gc_on = gc.isenabled()
    gc.disable()
    try:
        flat = [{"label": lb, "score": sc, "segment": [st, en]}
                for lb, sc, st, en in zip(labels[seg[kept]].tolist(), P["score"][kept].tolist(),
                                          P["start"][kept].tolist(), P["end"][kept].tolist())]
        out = [flat[a:b] for a, b in zip(cut[:-1], cut[1:])]
    finally:
        if gc_on:
            gc.enable()
    return out


def generate_proposals_fast(video_scores, cas, actionness, num_snippets_orig, class_names,
                            cfg: ProposalConfig | None = None, backend: str = "auto"):
    return generate_proposals_batch([(video_scores, cas, actionness, num_snippets_orig)],
                                    class_names, cfg, backend)[0]
