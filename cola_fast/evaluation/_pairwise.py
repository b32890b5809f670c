"""Batched sums with exactly the floating-point result of numpy's own reduction of a
contiguous float64 array (``np.add.reduce`` / ``np.mean`` use pairwise summation:
sequential below 8 elements, eight interleaved accumulators combined as a tree up to
128, recursive halving above - numpy's ``pairwise_sum``). The fast proposal path needs
it to give bit-identical run means to the reference's ``np.mean(w[run])`` without a
Python loop over runs. Checked against numpy directly in tests/test_proposals.py.
"""
from __future__ import annotations

import numpy as np

_BLOCK = 128


def _tree8(r):
    return ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))


def _leaf_contiguous(bankpad, p, cnt):
    """pairwise_sum of bankpad[p : p + cnt] (cnt <= 128) for each row, reading strided
    windows (no index arithmetic); rows grouped by their number of 8-blocks."""
    m = len(p)
    res = np.zeros(m)
    nb = cnt // 8
    order = np.argsort(nb, kind="stable")
    snb = nb[order]
    bounds = np.searchsorted(snb, np.arange(int(snb[-1]) + 2)) if m else [0]
    # one strided (rows, 128) window view; slicing columns before the fancy index
    # copies only what a group needs
    W = np.lib.stride_tricks.as_strided(bankpad, shape=(len(bankpad) - _BLOCK, _BLOCK),
                                        strides=(bankpad.strides[0],) * 2, writeable=False)
    max_g = len(bounds) - 2
    if int(cnt.sum()) > 2 * len(bankpad) and max_g > 0:
        # leaves overlap a lot (nested runs): strided fold tables over the whole array,
        # T_g[q] = ((a[q] + a[q+8]) + ...) + a[q+8(g-1)], built one g at a time; a leaf
        # with g blocks reads its eight accumulators T_g[p .. p+7]
        T = bankpad.copy()
        j8 = np.arange(8)
        for g in range(1, max_g + 1):
            if g > 1:
                k = 8 * (g - 1)
                T[:len(T) - k] += bankpad[k:]
            sel = order[bounds[g]:bounds[g + 1]]
            if sel.size:
                res[sel] = _tree8(T[p[sel][:, None] + j8])
    else:
        for g in range(1, max_g + 1):
            sel = order[bounds[g]:bounds[g + 1]]
            if sel.size == 0:
                continue
            V = W[:, :8 * g][p[sel]].reshape(-1, g, 8)
            r = V[:, 0, :].copy()
            for i in range(1, g):
                r += V[:, i, :]
            res[sel] = _tree8(r)
    rem = cnt - 8 * nb
    wr = int(rem.max()) if m else 0
    if wr > 0:
        R = W[:, :7][p + 8 * nb]
        for j in range(wr):
            res = res + np.where(j < rem, R[:, j], 0.0)
    return res


def _psum(bankpad, p, cnt):
    """Breadth-first over numpy's halving tree: all leaves (<= 128 elements) of all
    contiguous segments bankpad[p : p + cnt] summed in one batch, then parents combined
    level by level as left + right (numpy's order)."""
    m = len(cnt)
    levels = []
    front = np.arange(m)
    n_nodes = m
    f_p, f_cnt = p, cnt
    leaves = []
    while front.size:
        big = f_cnt > _BLOCK
        leaves.append((front[~big], f_p[~big], f_cnt[~big]))
        if not big.any():
            break
        bp, bo, bc = front[big], f_p[big], f_cnt[big]
        h = bc // 2
        h -= h % 8
        nb = len(bp)
        left = np.arange(n_nodes, n_nodes + nb)
        right = left + nb
        n_nodes += 2 * nb
        levels.append((bp, left, right))
        front = np.concatenate([left, right])
        f_p = np.concatenate([bo, bo + h])
        f_cnt = np.concatenate([h, bc - h])
    val = np.empty(n_nodes)
    ids = np.concatenate([x[0] for x in leaves])
    val[ids] = _leaf_contiguous(bankpad, np.concatenate([x[1] for x in leaves]),
                                np.concatenate([x[2] for x in leaves]))
    for bp, left, right in reversed(levels):
        val[bp] = val[left] + val[right]
    return val[:m]


def _ranges(starts, lens):
    """Concatenation of arange(s, s + n) for each (s, n)."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.cumsum(lens) - lens
    return np.repeat(starts - first, lens) + np.arange(total)


def segment_sums(bank, b1, n1, b2, n2):
    """For each segment i, the numpy sum of the 1-D array
    concatenate(bank[b1[i] : b1[i] + n1[i]], bank[b2[i] : b2[i] + n2[i]]),
    bit-identical to np.add.reduce of that array. Repeated segments are summed once;
    two-piece segments are first laid out contiguously (one gather)."""
    bank = np.ascontiguousarray(bank, dtype=np.float64).reshape(-1)
    m = len(np.atleast_1d(b1))
    b1, n1, b2, n2 = (np.broadcast_to(np.asarray(x, dtype=np.int64), (m,)) for x in (b1, n1, b2, n2))
    if m == 0:
        return np.zeros(0)
    # a single piece is contiguous: fold it into (b1, n1)
    only2 = n1 == 0
    b1 = np.where(only2, b2, b1)
    n1 = np.where(only2, n2, n1)
    n2 = np.where(only2, 0, n2)
    b2 = np.where(n2 > 0, b2, 0)
    key, inv = np.unique(np.stack([b1, n1, b2, n2], axis=1), axis=0, return_inverse=True)
    u1, un1, ub2, un2 = key.T
    out = np.empty(len(key))
    pad = np.zeros(_BLOCK + 8)
    one = un2 == 0
    if one.any():
        out[one] = _psum(np.concatenate([bank, pad]), u1[one], un1[one])
    two = ~one
    if two.any():
        t1, tn1, t2, tn2 = u1[two], un1[two], ub2[two], un2[two]
        starts = np.stack([t1, t2], axis=1).reshape(-1)
        lens = np.stack([tn1, tn2], axis=1).reshape(-1)
        laid = np.concatenate([bank[_ranges(starts, lens)], pad])
        tot = tn1 + tn2
        out[two] = _psum(laid, np.cumsum(tot) - tot, tot)
    return out[inv.reshape(-1)]


def slice_sums(arr, starts, counts):
    """numpy sum of arr[starts[i] : starts[i] + counts[i]] for each i (bit-identical to
    np.add.reduce of each slice); counts may be 0 (sum 0.0)."""
    arr = np.concatenate([np.ascontiguousarray(arr, dtype=np.float64).reshape(-1),
                          np.zeros(_BLOCK + 8)])
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if starts.size == 0:
        return np.zeros(0)
    return _psum(arr, starts, counts)


def ranges(starts, lens):
    """Concatenation of arange(s, s + n) for each (s, n) (public alias)."""
    return _ranges(np.asarray(starts, dtype=np.int64), np.asarray(lens, dtype=np.int64))
