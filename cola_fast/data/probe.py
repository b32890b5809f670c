"""Snippet-level linear probe: how separable are the classes of a dataset, snippet by
snippet, with full supervision? A diagnostic of the synthetic data (an upper bound on
what a weakly-supervised model sees; not part of training).

    python -m cola_fast.data.probe ROOT [--modality all] [--steps 300]

Each snippet gets the class of the annotation covering most of it, or "background".
A softmax linear classifier (21 outputs for THUMOS'14) is trained on the train split
and evaluated on the test split; accuracy is reported separately for snippets
- inside: inside an instance, more than ``margin`` snippets from its boundaries,
- boundary: within ``margin`` snippets of a boundary (inside or outside),
- background: farther than ``margin`` snippets from every instance,
and, for comparison, the accuracy of always predicting "background".
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from ..cli import ArgumentParser, fail
from .dataset import SNIPPET_SECONDS, VideoDataset
from .errors import DataError


def snippet_targets(ds: VideoDataset, i: int, margin: int = 2, snippet_seconds: float = SNIPPET_SECONDS):
    """(labels (T,) with C = background, region (T,) 0 inside / 1 boundary / 2 background).
    snippet_seconds: one snippet's duration (snippet_frames / fps; 16 / 25 for THUMOS'14)."""
    T = ds.num_snippets[i]
    C = len(ds.class_names)
    cidx = {c: k for k, c in enumerate(ds.class_names)}
    lab = np.full(T, C, dtype=np.int64)
    near = np.full(T, np.inf)
    inside = np.zeros(T, dtype=bool)
    t = np.arange(T)
    for (name, st, en) in ds.annotations[ds.video_ids[i]]:
        a = min(T - 1, int(math.floor(st / snippet_seconds)))
        b = max(a, min(T - 1, int(math.ceil(en / snippet_seconds)) - 1))
        lab[a:b + 1] = cidx[name]
        inside[a:b + 1] = True
        near = np.minimum(near, np.minimum(np.abs(t - a), np.abs(t - b)))
    region = np.where(near <= margin, 1, np.where(inside, 0, 2))
    return lab, region


def _stack(ds, margin):
    xs, ys, rs = [], [], []
    for i in range(len(ds)):
        y, r = snippet_targets(ds, i, margin)
        xs.append(ds.features_of(i))
        ys.append(y)
        rs.append(r)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), torch.from_numpy(np.concatenate(rs))


def linear_probe(root, modality="all", steps=300, margin=2, seed=0, lr=0.05, weight_decay=1e-4, balanced=False):
    torch.manual_seed(seed)
    tr = VideoDataset(root, "train", modality=modality, num_segments=1, sampling="uniform")
    te = VideoDataset(root, "test", modality=modality, num_segments=1, sampling="uniform",
                      class_names=tr.class_names)
    xtr, ytr, _ = _stack(tr, margin)
    xte, yte, rte = _stack(te, margin)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    C1 = len(tr.class_names) + 1
    lin = torch.nn.Linear(xtr.shape[1], C1)
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
    # class-balanced loss so that background does not swamp the classes
    counts = torch.bincount(ytr, minlength=C1).float().clamp_min(1)
    w = (counts.sum() / counts) / C1 if balanced else None
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xtr), ytr, weight=w)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = lin(xte).argmax(1)
    res = {}
    for name, mask in (("inside", rte == 0), ("boundary", rte == 1), ("background", rte == 2),
                       ("all", torch.ones_like(rte, dtype=torch.bool))):
        n = int(mask.sum())
        res[name] = dict(n=n, acc=float((pred[mask] == yte[mask]).float().mean()) if n else float("nan"))
    bg = C1 - 1
    res["boundary_bg_share"] = float((yte[rte == 1] == bg).float().mean())
    act = yte != bg
    res["action_vs_bg_acc"] = float(((pred != bg) == act).float().mean())
    res["action_class_acc_given_action"] = float((pred[act] == yte[act]).float().mean())
    return res


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m cola_fast.data.probe", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root")
    p.add_argument("--modality", default="all", choices=["all", "rgb", "flow"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--margin", type=int, default=2)
    a = p.parse_args(argv)
    if a.steps < 1 or a.margin < 0:
        p.error("--steps must be >= 1 and --margin >= 0")
    try:
        res = linear_probe(a.root, a.modality, a.steps, a.margin)
    except DataError as e:
        return fail(e)
    for k, v in res.items():
        print(f"{k:32s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
