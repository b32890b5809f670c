"""The W-TALC single-file layout (used by W-TALC, BaS-Net, ... for THUMOS'14 and
ActivityNet 1.2) and its conversion to the layout of COLA_SPEC 1.

W-TALC layout:
    FEATURES.npy            an object array of per-video (T, 2048) arrays (pickled)
    ANNOT_DIR/videoname.npy video ids (bytes or str), same order as FEATURES.npy
    ANNOT_DIR/subset.npy    per video: "validation" / "test" (THUMOS'14) or
                            "training" / "validation" (ActivityNet 1.2)
    ANNOT_DIR/segments.npy  per video: a list of [start_s, end_s]
    ANNOT_DIR/labels.npy    per video: a list of class names, one per segment
    ANNOT_DIR/classlist.npy the class names

These object arrays can only be read with pickle, and unpickling a file can run
arbitrary code: :func:`load_wtalc` refuses unless ``allow_pickle=True`` (use it only on
files you trust) and warns when it loads them.

Conversion (``python -m cola_fast.data.convert_wtalc FEATURES.npy ANNOT_DIR OUT_ROOT
--allow-pickle``): rgb = the first half of the channels (1024), flow = the second half;
subsets map to splits as training -> train, test -> test, validation -> train when a
"test" subset exists (THUMOS'14: validation videos train) and -> test otherwise
(ActivityNet 1.2: validation is the evaluation set).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .. import inputs  # the module, not its names: cola_fast.inputs imports .errors from this package
from .dataset import check_video_id
from .errors import DataError

__all__ = ["load_wtalc", "convert_wtalc", "WtalcData", "subset_to_split"]

REQUIRED = ("videoname.npy", "subset.npy", "segments.npy", "labels.npy", "classlist.npy")


class WtalcData:
    """video_ids, subsets, features (list of (T, D) float32), annotations
    (list of [(label, start, end)]), class_names."""

    def __init__(self, video_ids, subsets, features, annotations, class_names):
        self.video_ids, self.subsets, self.features = video_ids, subsets, features
        self.annotations, self.class_names = annotations, class_names

    def __len__(self):
        return len(self.video_ids)


def _s(x):
    if isinstance(x, bytes):
        try:
            return x.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"W-TALC text {x[:40]!r} is not UTF-8") from None
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return _s(x.item())
    return str(x)


def _load_npy(path, allow_pickle):
    x = inputs.read_npy(path, "W-TALC file", allow_pickle=allow_pickle)
    if x.ndim < 1:
        raise inputs.InputError(f"W-TALC file {path}: expected one entry per video (or class), got a scalar")
    return x


def _entries(x, path, vid) -> list:
    """A video's list of segments or labels (a list or an array of them)."""
    if not isinstance(x, (list, tuple, np.ndarray)) or (isinstance(x, np.ndarray) and x.ndim < 1):
        raise inputs.InputError(f"W-TALC file {path}: video {vid!r}: expected a list, got {type(x).__name__}")
    return list(x)


def load_wtalc(features_npy, annotations_dir, allow_pickle: bool = False) -> WtalcData:
    """Read a W-TALC features file and annotations folder (see the module docstring)."""
    if not allow_pickle:
        raise DataError(
            f"{features_npy}: the W-TALC layout stores pickled object arrays, and unpickling can run "
            "arbitrary code. Pass allow_pickle=True (command line: --allow-pickle) only for files you trust.")
    warnings.warn(f"loading pickled W-TALC arrays from {features_npy} and {annotations_dir} "
                  "(allow_pickle=True): only do this for files you trust", stacklevel=2)
    adir = Path(annotations_dir)
    if not adir.is_dir():
        raise DataError(f"W-TALC annotations folder not found: {adir}")
    arr = {n: _load_npy(str(adir / n), True) for n in REQUIRED}
    feats = _load_npy(str(features_npy), True)
    names = [check_video_id(_s(v), adir / "videoname.npy") for v in arr["videoname.npy"]]
    V = len(names)
    if len(set(names)) != V:
        raise DataError(f"{adir / 'videoname.npy'}: video ids repeat")
    for n in ("subset.npy", "segments.npy", "labels.npy"):
        if len(arr[n]) != V:
            raise DataError(f"{adir / n}: {len(arr[n])} entries but videoname.npy has {V}")
    if feats.ndim != 1 and not (feats.dtype != object and feats.ndim == 3):
        raise DataError(f"{features_npy}: expected a 1-D object array of per-video (T, D) arrays, got "
                        f"shape {feats.shape} dtype {feats.dtype}")
    if len(feats) != V:
        raise DataError(f"{features_npy}: {len(feats)} videos but {adir / 'videoname.npy'} has {V}")
    classes = [_s(c) for c in arr["classlist.npy"]]
    cset = set(classes)
    features, annotations = [], []
    width = None
    for i, vid in enumerate(names):
        x = np.asarray(feats[i])
        if x.dtype == object or x.ndim != 2 or x.shape[0] < 1:
            raise DataError(f"{features_npy}: video {vid!r} features must be a non-empty (T, D) array, "
                            f"got shape {x.shape} dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{features_npy}: video {vid!r} features hold NaN or inf")
        if width is None:
            width = x.shape[1]
        elif x.shape[1] != width:
            raise DataError(f"{features_npy}: video {vid!r} has {x.shape[1]} channels, the first video {width}")
        features.append(x)
        segs, labs = _entries(arr["segments.npy"][i], adir / "segments.npy", vid), \
            _entries(arr["labels.npy"][i], adir / "labels.npy", vid)
        if len(segs) != len(labs):
            raise DataError(f"{adir}: video {vid!r} has {len(segs)} segments but {len(labs)} labels")
        anns = []
        for seg, lab in zip(segs, labs):
            lab = _s(lab)
            if lab not in cset:
                raise DataError(f"{adir}: video {vid!r} label {lab!r} is not in classlist.npy")
            try:
                s, e = (float(v) for v in seg)
            except (TypeError, ValueError):
                raise DataError(f"{adir}: video {vid!r} segment {seg!r} is not [start, end]") from None
            if not (math.isfinite(s) and math.isfinite(e)) or s > e:
                raise DataError(f"{adir}: video {vid!r} bad segment [{s}, {e}]")
            anns.append((lab, s, e))
        annotations.append(anns)
    return WtalcData(names, [_s(s) for s in arr["subset.npy"]], features, annotations, classes)


def subset_to_split(subsets) -> dict:
    """The subset -> split mapping of the module docstring for the subsets present."""
    present = set(subsets)
    m = {"training": "train", "train": "train", "test": "test", "testing": "test"}
    m["validation"] = "train" if ("test" in present or "testing" in present) else "test"
    unknown = sorted(present - set(m))
    if unknown:
        raise DataError(f"unknown W-TALC subsets {unknown}: expected training / validation / test")
    return {s: m[s] for s in present}


def convert_wtalc(features_npy, annotations_dir, out_root, allow_pickle: bool = False) -> Path:
    """Write the COLA_SPEC 1 layout of a W-TALC dataset into ``out_root`` (created; must
    not exist or be empty). Returns out_root."""
    data = load_wtalc(features_npy, annotations_dir, allow_pickle=allow_pickle)
    D = data.features[0].shape[1]
    if D % 2:
        raise DataError(f"{features_npy}: {D} channels cannot be split into rgb and flow halves")
    out = Path(out_root)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"output folder {out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    smap = subset_to_split(data.subsets)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        ids = {"train": [], "test": []}
        db = {}
        for vid, sub, x, anns in zip(data.video_ids, data.subsets, data.features, data.annotations):
            split = smap[sub]
            ids[split].append(vid)
            for m, part in (("rgb", x[:, : D // 2]), ("flow", x[:, D // 2:])):
                d = tmp / "features" / split / m
                d.mkdir(parents=True, exist_ok=True)
                np.save(d / f"{vid}.npy", np.ascontiguousarray(part))
            db[vid] = {"subset": split, "annotations": [{"label": l, "segment": [s, e]} for l, s, e in anns]}
        for split, lst in ids.items():
            (tmp / f"split_{split}.txt").write_text("".join(v + "\n" for v in lst), encoding="utf-8")
        with open(tmp / "gt.json", "w", encoding="utf-8") as f:
            json.dump({"version": "converted from the W-TALC layout", "classes": data.class_names, "database": db}, f)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
