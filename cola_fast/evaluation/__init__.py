"""Proposals, NMS and detection mAP (COLA_SPEC sections 5 and 6).

The backend is chosen in the ops' vocabulary (cola_fast.ops), ``backend=`` one of
BACKENDS: "reference" (evaluation/reference.py, the loop style of the published code,
the oracle), "numpy" (vectorised numpy), "native" (the proposals by the C++ ops of
cola_fast._C, csrc/cpu/proposals.cpp; raises when they are not built) and "auto"
(native when built, else numpy). All give identical results: the same proposals in the
same order with equal floats, the same mAP. The mAP itself has no native path: every
backend but "reference" computes it with numpy.

Beside the backend, the mAP has one setting of its own, ``ties=`` one of TIES: "official"
(the published code's numpy argsort order among tied scores and tied tIoUs, which can
differ from one machine to another) or "stable" (a canonical order: score descending,
then video id, segment start, segment end; ground truth by tIoU, then start, end), whose
mAP is the same on every machine and for every order of the entries in the files. Every
backend gives the same mAP under each rule.
"""
from __future__ import annotations

import numpy as np

from . import reference as _ref
from ..inputs import MAX_TIOU_THRESHOLDS, InputError, within
from .config import ProposalConfig
from .detection import TIES, check_ties
from .detection import evaluate_detection_fast as _eval_fast
from .io import (EvaluationInputError, format_table, load_gt, load_results, results_arrays,
                 results_document, results_json, write_json_atomic)
from .proposals import generate_proposals_batch as _props_batch
from .proposals import generate_proposals_fast as _props_fast

__all__ = ["ProposalConfig", "generate_proposals", "generate_proposals_batch", "evaluate_detection", "load_gt",
           "load_results", "results_document", "results_json", "format_table", "parse_tiou", "EvaluationInputError",
           "write_json_atomic", "BACKENDS", "TIES"]

BACKENDS = ("auto", "reference", "native", "numpy")


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def generate_proposals(video_scores, cas, actionness, num_snippets_orig, class_names,
                       cfg: ProposalConfig | None = None, backend: str = "auto"):
    """COLA_SPEC 5 steps 2-7 for one video.

    video_scores (C,), cas (T, C), actionness (T,): numpy arrays or torch tensors.
    num_snippets_orig: the video's original snippet count (converts positions to
    seconds). Returns a list of {"label", "score", "segment": [start_s, end_s]} after
    per-class NMS, classes in the order the published code emits them.
    """
    _check_backend(backend)
    cfg = cfg if cfg is not None else ProposalConfig.thumos14()
    if backend == "reference":
        return _ref.generate_proposals(video_scores, cas, actionness, num_snippets_orig, class_names, cfg)
    return _props_fast(video_scores, cas, actionness, num_snippets_orig, class_names, cfg, backend)


def generate_proposals_batch(items, class_names, cfg: ProposalConfig | None = None,
                             backend: str = "auto"):
    """generate_proposals for many videos: items is a sequence of (video_scores, cas,
    actionness, num_snippets_orig); returns one detection list per item. Every backend
    but "reference" processes all videos in one vectorised pass (the way to evaluate a
    whole test set)."""
    _check_backend(backend)
    cfg = cfg if cfg is not None else ProposalConfig.thumos14()
    if backend != "reference":
        return _props_batch(items, class_names, cfg, backend)
    return [_ref.generate_proposals(*it, class_names, cfg) for it in items]


def parse_tiou(spec) -> np.ndarray:
    """'0.1:0.7:0.1' (inclusive end; np.linspace(0.1, 0.7, 7)) or '0.3,0.5,0.7' or a
    sequence -> float array."""
    if isinstance(spec, str):
        s = spec.strip()
        try:
            if ":" in s:
                parts = [float(x) for x in s.split(":")]
                if len(parts) != 3:
                    raise ValueError
                lo, hi, step = parts
                if step <= 0 or hi < lo:
                    raise ValueError
                count = (hi - lo) / step + 1
                if not count <= MAX_TIOU_THRESHOLDS + 1e-6:  # before any array is built (inf and nan too)
                    raise InputError(f"{spec!r} asks for about {count:.3g} thresholds, more than the limit of "
                                     f"{MAX_TIOU_THRESHOLDS}")
                n = int(np.floor((hi - lo) / step + 1e-9)) + 1
                # np.linspace(start, stop, n) as the published configs write it
                # (np.linspace(0.1, 0.7, 7)); the threshold floats decide ties at equality
                stop = hi if abs(lo + (n - 1) * step - hi) <= 1e-9 * max(1.0, abs(hi)) \
                    else lo + (n - 1) * step
                arr = np.linspace(lo, stop, n)
            else:
                arr = np.array([float(x) for x in s.split(",") if x.strip()], dtype=np.float64)
        except InputError:
            raise
        except ValueError:
            raise ValueError(f"bad tIoU specification {spec!r}: use START:STOP:STEP "
                             "(e.g. 0.1:0.7:0.1) or a comma list (e.g. 0.3,0.5,0.7)") from None
    else:
        arr = np.asarray(spec, dtype=np.float64).reshape(-1)
    within(arr.size, MAX_TIOU_THRESHOLDS, "the number of tIoU thresholds")
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 1):
        raise ValueError(f"tIoU thresholds must be a non-empty list of numbers in [0, 1], got {spec!r}")
    return arr


def evaluate_detection(gt, results, subset: str = "test",
                       tiou_thresholds=np.linspace(0.1, 0.7, 7), backend: str = "auto",
                       ties: str = "official") -> dict:
    """Detection mAP of COLA_SPEC 6.

    gt: path or dict (validated with load_gt); results: {"results": {vid: [dets]}} dict
    or path. ties: "official" | "stable" (see the module's docstring). Returns
    {"tiou_thresholds", "mAP" (fractions), "average_mAP", "ap_per_class": {label: [AP per
    threshold]}, "ties"}; classes are those of the ground truth of ``subset`` (prediction
    labels outside them are ignored), in the order they first appear there (ties="stable":
    in label order).
    """
    _check_backend(backend)
    check_ties(ties)
    fast = backend != "reference"
    gt = load_gt(gt)
    results = results_arrays(results) if fast else load_results(results)
    thr = parse_tiou(tiou_thresholds)
    subsets = sorted({v["subset"] for v in gt["database"].values()})
    if subset not in subsets:
        raise ValueError(f"unknown subset {subset!r}: the ground truth has {subsets}")
    fn = _eval_fast if fast else _ref.evaluate_detection
    ap, names = fn(gt, results, subset, thr, ties)
    if not names:
        raise ValueError(f"the ground truth has no annotations in subset {subset!r}")
    if ties == "stable":  # classes in label order: the mean over them is summed in one order too
        order = sorted(range(len(names)), key=names.__getitem__)
        ap, names = ap[:, order], [names[i] for i in order]
    mAP = ap.mean(axis=1)
    return {"tiou_thresholds": [float(t) for t in thr], "mAP": [float(m) for m in mAP],
            "average_mAP": float(mAP.mean()),
            "ap_per_class": {n: [float(a) for a in ap[:, i]] for i, n in enumerate(names)}, "ties": ties}
