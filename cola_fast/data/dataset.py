"""The dataset layout of COLA_SPEC section 1 and a map-style dataset over it.

    <root>/gt.json
    <root>/split_train.txt, split_test.txt        one video id per line
    <root>/features/<split>/rgb/<vid>.npy        (T, D_rgb) float
    <root>/features/<split>/flow/<vid>.npy       (T, D_flow) float

Every malformed input raises :class:`DataError` naming the file or the video.
"""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np
import torch

from .checks import label_clashes
from .. import inputs  # the module, not its names: cola_fast.inputs imports .errors from this package
from .errors import DataError
from .sampling import sample_random_perturb, sample_uniform

__all__ = ["VideoDataset", "check_layout", "load_gt", "class_names_from_gt", "read_split", "load_feature",
           "check_video_id", "MODALITIES", "SNIPPET_SECONDS"]

MODALITIES = ("rgb", "flow")
SNIPPET_SECONDS = 16 / 25  # one snippet = 16 frames at 25 fps


def _read_json(path):
    """gt.json parsed at the reading boundary (cola_fast.inputs); its shape is checked by load_gt."""
    return inputs.read_json(path, "ground-truth file")


def load_gt(gt, name: str | None = None) -> dict:
    """Read and validate a gt.json (path) or an already-parsed document.

    Returns ``{vid: {"subset": str, "annotations": [(label, start_s, end_s), ...]}}``
    with the segment values parsed to float. The checks are those of the evaluator
    (cola_fast.evaluation.load_gt, with inputs.GT_SCHEMA: one validator for the whole
    package); any problem is raised as an InputError naming the file and the path to
    the bad value.
    """
    from ..evaluation.io import load_gt as _validated_gt

    if isinstance(gt, (str, os.PathLike)):
        name, gt = str(gt), _read_json(gt)
    doc = _validated_gt(inputs.check(gt, inputs.GT_SCHEMA, name or "gt"), name or "gt")
    return {vid: {"subset": v["subset"], "annotations": [(a["label"], *a["segment"]) for a in v["annotations"]]}
            for vid, v in doc["database"].items()}


def class_names_from_gt(gt, name: str | None = None) -> list[str]:
    """The class list of a gt.json (path, raw dict or the output of :func:`load_gt`):
    the optional top-level ``"classes"`` list when the file has one (our synthetic data
    writes it, so that a subset of videos keeps all classes), else every label of the
    database, over all subsets, sorted alphabetically."""
    if isinstance(gt, dict) and "database" not in gt:
        db, listed, name = gt, None, "gt"  # already parsed by load_gt
    else:
        name = str(gt) if isinstance(gt, (str, os.PathLike)) else (name or "gt")
        raw = _read_json(gt) if isinstance(gt, (str, os.PathLike)) else gt
        db = load_gt(raw, name)
        listed = raw.get("classes")
    labels = sorted({lab for v in db.values() for (lab, _, _) in v["annotations"]})
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(c, str) and c for c in listed) \
                or len(set(listed)) != len(listed):
            raise DataError(f'{name}: "classes" must be a list of distinct non-empty strings')
        unknown = sorted(set(labels) - set(listed))
        if unknown:
            raise DataError(f'{name}: labels not in its "classes" list: {unknown}')
        return list(listed)
    if not labels:
        raise DataError(f"{name}: ground truth holds no annotation: cannot infer class names")
    return labels


def _duration(entry: dict) -> float | None:
    """A gt.json video's "duration" in seconds, when it has a usable one (a number > 0)."""
    d = entry.get("duration")
    if isinstance(d, str):
        try:
            d = float(d)
        except ValueError:
            return None
    if isinstance(d, bool) or not isinstance(d, numbers.Real) or not math.isfinite(d) or d <= 0:
        return None
    return float(d)


def check_layout(root) -> None:
    """Read and check a dataset's gt.json and split files (not yet its features): the
    trainer calls it before it creates or changes the run folder."""
    db = load_gt(Path(root) / "gt.json")
    for split in ("train", "test"):
        absent = [v for v in read_split(root, split) if v not in db]
        if absent:
            raise inputs.InputError(f"split file {Path(root) / f'split_{split}.txt'}: lists videos absent from "
                                    f"{Path(root) / 'gt.json'}: {absent[:5]}")


def check_video_id(vid: str, where) -> str:
    """A video id names files (<vid>.npy): it must stay a plain file name inside its
    folder. Refuses ids that are empty, absolute, hold a path separator, "..", or NUL."""
    if (not vid or os.path.isabs(vid) or "/" in vid or "\\" in vid or ".." in vid or "\0" in vid
            or (os.altsep and os.altsep in vid)):
        raise DataError(f"{where}: video id {vid!r} is not a plain file name "
                        "(no path separator, '..' or absolute path)")
    return vid


def read_split(root, split: str) -> list[str]:
    """Video ids of ``<root>/split_<split>.txt`` (one per line, blank lines ignored)."""
    path = Path(root) / f"split_{split}.txt"
    ids = [line.strip() for line in inputs.read_text(path, "split file").splitlines() if line.strip()]
    if not ids:
        raise inputs.InputError(f"split file {path} is empty (no video id)")
    for vid in ids:
        check_video_id(vid, path)
    dup = {v for v in ids if ids.count(v) > 1} if len(set(ids)) != len(ids) else set()
    if dup:
        raise inputs.InputError(f"split file {path} lists video ids more than once: {sorted(dup)[:5]}")
    return ids


def load_feature(path) -> np.ndarray:
    """Load one (T, D) feature file as float32, validated (exists, 2-D, T >= 1, D >= 1,
    finite real numbers)."""
    path = str(path)
    x = inputs.read_npy(path, "feature file")
    if x.ndim != 2:
        raise inputs.InputError(f"{path}: features must be 2-D (T, D), got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise inputs.InputError(f"{path}: empty feature array of shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise inputs.InputError(f"{path}: features must be real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise inputs.InputError(f"{path}: features hold NaN or inf (first at snippet {bad[0]}, channel {bad[1]})")
    return x


class VideoDataset(torch.utils.data.Dataset):
    """Map-style dataset over the layout of COLA_SPEC 1.

    ``ds[i]`` -> ``dict(features=FloatTensor (N, D) (uniform sampling with T <= N: (T, D)),
    label=FloatTensor (C,) multi-hot, vid=str, num_snippets=int (original T), index=int)``.

    Random sampling draws from ``numpy.random.default_rng([seed, epoch, i])``: the same
    (seed, epoch, index) gives the same indices in any process or worker; call
    :meth:`set_epoch` each epoch for fresh draws (the trainer may instead pass its own
    Generator to :meth:`get`).

    Attributes: class_names, feature_dim, video_ids, num_snippets (list of T), labels
    (FloatTensor (V, C)), gt_path, root, split, modality, num_segments, sampling.
    """

    def __init__(self, root, split: str = "train", modality: str = "all", num_segments: int = 750,
                 sampling: str | None = None, class_names=None, seed: int = 0, preload: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset root is not a directory: {self.root}")
        if not isinstance(split, str) or not split or os.sep in split:
            raise DataError(f"split must be a plain name such as 'train' or 'test', got {split!r}")
        if modality not in ("all", "rgb", "flow"):
            raise DataError(f"modality must be 'all', 'rgb' or 'flow', got {modality!r}")
        if sampling is None:
            sampling = "random" if split == "train" else "uniform"
        if sampling not in ("random", "uniform"):
            raise DataError(f"sampling must be 'random' or 'uniform', got {sampling!r}")
        if isinstance(num_segments, bool) or not isinstance(num_segments, (numbers.Integral, np.integer)):
            raise DataError(f"num_segments must be an integer, got {num_segments!r}")
        if num_segments < 1:
            raise DataError(f"num_segments must be >= 1, got {num_segments}")
        if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        self.split, self.modality, self.sampling = split, modality, sampling
        self.num_segments, self.seed, self.epoch = int(num_segments), int(seed), 0
        self.preload = bool(preload)

        self.gt_path = self.root / "gt.json"
        raw = _read_json(self.gt_path)
        db = load_gt(raw, str(self.gt_path))
        listed = raw.get("classes")
        clash = label_clashes({v: [lab for (lab, _, _) in e["annotations"]] for v, e in db.items()},
                              listed if isinstance(listed, list) and all(isinstance(c, str) for c in listed) else ())
        if clash:  # before the class list is made: a typo would become a class of its own
            raise DataError(f"{self.gt_path}: {clash}")
        gt_names = class_names_from_gt(raw, str(self.gt_path))
        if class_names is None:
            self.class_names = gt_names
        else:
            if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
                raise DataError(f"class_names must be a sequence of strings, got {class_names!r}")
            self.class_names = list(class_names)
            if len(set(self.class_names)) != len(self.class_names):
                raise DataError(f"class_names holds duplicates: {self.class_names}")
            labels = {lab for v in db.values() for (lab, _, _) in v["annotations"]}
            unknown = sorted(labels - set(self.class_names))
            if unknown:
                raise DataError(f"{self.gt_path}: labels not in the given class_names: {unknown}")
        cidx = {c: k for k, c in enumerate(self.class_names)}

        self.video_ids = read_split(self.root, split)
        missing = [v for v in self.video_ids if v not in db]
        if missing:
            raise DataError(f"split_{split}.txt lists videos absent from {self.gt_path}: "
                            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        labels = torch.zeros(len(self.video_ids), len(self.class_names), dtype=torch.float32)
        for i, vid in enumerate(self.video_ids):
            for (lab, _, _) in db[vid]["annotations"]:
                labels[i, cidx[lab]] = 1.0
        self.labels = labels
        self.annotations = {v: db[v]["annotations"] for v in self.video_ids}
        # for the checks of the dataset as a whole (cola_fast.data.checks)
        self.durations = {v: _duration(raw["database"][v]) for v in self.video_ids}
        self.gt_labels = {v: [lab for (lab, _, _) in db[v]["annotations"]] for v in self.video_ids}
        self.classes_listed = raw.get("classes") is not None
        self._mods = MODALITIES if modality == "all" else (modality,)

        self._features: list[np.ndarray] | None = None
        if self.preload:
            feats = [self._load_video(v) for v in self.video_ids]
            self._features = feats
            self.num_snippets = [int(x.shape[0]) for x in feats]
            self._widths = self._check_widths([x.shape[1] for x in feats])
        else:
            self.num_snippets = []
            widths = []
            for v in self.video_ids:  # header reads only: shapes, not data
                shapes = [self._peek_shape(self._path(m, v)) for m in self._mods]
                self._check_pair(v, shapes)
                self.num_snippets.append(shapes[0][0])
                widths.append(sum(s[1] for s in shapes))
            self._widths = self._check_widths(widths)
        self.feature_dim = int(self._widths)

    # ------------------------------------------------------------------ files
    def _path(self, mod, vid) -> Path:
        return self.root / "features" / self.split / mod / f"{vid}.npy"

    @staticmethod
    def _peek_shape(path):
        path = str(path)
        arr = inputs.read_npy(path, "feature file", mmap=True)
        if arr.ndim != 2:
            raise inputs.InputError(f"{path}: features must be 2-D (T, D), got shape {arr.shape}")
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise inputs.InputError(f"{path}: empty feature array of shape {arr.shape}")
        return tuple(int(s) for s in arr.shape)

    def _check_pair(self, vid, shapes):
        if len(shapes) == 2 and shapes[0][0] != shapes[1][0]:
            raise DataError(f"video {vid!r}: rgb has {shapes[0][0]} snippets but flow has "
                            f"{shapes[1][0]} ({self._path('rgb', vid)}, {self._path('flow', vid)})")

    def _load_video(self, vid) -> np.ndarray:
        parts = [load_feature(self._path(m, vid)) for m in self._mods]
        self._check_pair(vid, [p.shape for p in parts])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def _check_widths(self, widths):
        ws = set(widths)
        if len(ws) > 1:
            first = widths[0]
            j = next(k for k, w in enumerate(widths) if w != first)
            raise DataError(f"feature width differs between videos: {self.video_ids[0]!r} has {first} "
                            f"channels, {self.video_ids[j]!r} has {widths[j]} (modality {self.modality})")
        return widths[0]

    def features_of(self, i: int) -> np.ndarray:
        """All T snippets of video i, (T, D) float32 (no sampling)."""
        if self._features is not None:
            return self._features[i]
        x = self._load_video(self.video_ids[i])
        if x.shape[1] != self.feature_dim or x.shape[0] != self.num_snippets[i]:
            raise DataError(f"video {self.video_ids[i]!r}: features changed on disk since the dataset was opened")
        return x

    # ---------------------------------------------------------------- access
    def __len__(self):
        return len(self.video_ids)

    def set_epoch(self, epoch: int):
        """Random draws of item i come from default_rng([seed, epoch, i])."""
        self.epoch = int(epoch)

    def sample_indices(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        T = self.num_snippets[i]
        if self.sampling == "uniform":
            return sample_uniform(T, self.num_segments)
        if rng is None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
        return sample_random_perturb(T, self.num_segments, rng)

    def get(self, i: int, rng: np.random.Generator | None = None) -> dict:
        if isinstance(i, bool) or not isinstance(i, (numbers.Integral, np.integer)):
            raise TypeError(f"index must be an integer, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} videos")
        i = int(i) % n
        x = self.features_of(i)
        idx = self.sample_indices(i, rng)
        return dict(features=torch.from_numpy(np.ascontiguousarray(x[idx])), label=self.labels[i].clone(),
                    vid=self.video_ids[i], num_snippets=int(self.num_snippets[i]), index=i)

    def __getitem__(self, i):
        return self.get(i)

    def __repr__(self):
        return (f"VideoDataset(root={str(self.root)!r}, split={self.split!r}, modality={self.modality!r}, "
                f"videos={len(self)}, classes={len(self.class_names)}, feature_dim={self.feature_dim}, "
                f"num_segments={self.num_segments}, sampling={self.sampling!r})")
