"""The training data of a run: its two splits (prepare_data) and the stream of batches
the step loop reads (BatchStream), resumable because step s's batch depends on (seed, s) only.

    root, train_ds, test_ds = prepare_data(cfg)
    stream = BatchStream(train_ds, cfg.batch_size, cfg.num_segments, cfg.seed)
    x, y = stream.batch(step)
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..config import TrainConfig
from .bank import DeviceFeatureBank
from .checks import classes_without_training, describe_data, duration_mismatch
from .dataset import VideoDataset
from .errors import DataError
from .sampling import sample_random_perturb
from .synthetic import SyntheticSpec, make_synthetic_dataset


def prepare_data(cfg: TrainConfig, log=print):
    """(root, train split, test split) of a run: cfg.data_root, or the built-in synthetic
    dataset (generated once into the cache folder, $COLA_FAST_CACHE)."""
    from ..ops._autotune import cache_dir

    if cfg.data_root is None:
        spec = SyntheticSpec(seed=cfg.synthetic_seed, feature_dim=cfg.synthetic_feature_dim,
                             time_scale=cfg.synthetic_time_scale)
        name = f"synthetic_thumos14_d{cfg.synthetic_feature_dim}_ts{cfg.synthetic_time_scale:g}_s{cfg.synthetic_seed}"
        t0 = time.time()
        root = make_synthetic_dataset(cache_dir() / name, spec)
        log(f"data: built-in synthetic THUMOS'14-shaped dataset at {root} ({time.time() - t0:.1f}s)")
    else:
        root = cfg.data_root
        log(f"data: {root}")
    train = VideoDataset(root, split="train", modality=cfg.modality, num_segments=cfg.num_segments,
                         sampling="random", seed=cfg.seed)
    test = VideoDataset(root, split="test", modality=cfg.modality, num_segments=cfg.num_segments,
                        sampling="uniform", class_names=train.class_names)
    check_dataset(cfg, train, test, log)
    return root, train, test


def check_dataset(cfg: TrainConfig, train: VideoDataset, test: VideoDataset, log=print) -> None:
    """The checks of the two splits together (cola_fast.data.checks; each split has
    checked its labels for typos), then the header's lines about the data: DataError,
    unless cfg.check_durations is false, on a frame rate the ground truth's durations
    contradict; a warning for a test class without a training video."""
    if cfg.check_durations:
        lengths = {**dict(zip(train.video_ids, train.num_snippets)), **dict(zip(test.video_ids, test.num_snippets))}
        wrong = duration_mismatch(lengths, {**train.durations, **test.durations}, cfg.feature_fps,
                                  cfg.snippet_frames)
        if wrong:
            raise DataError(wrong)
    untrained = classes_without_training(train.class_names, train.gt_labels.values(), test.gt_labels.values())
    if untrained:  # with the header (not stderr, which holds a user error's one line)
        log(f"warning: {len(untrained)} class{'es' if len(untrained) > 1 else ''} with test videos but no "
            f"training video (the model cannot learn them): {', '.join(untrained)}")
    for line in describe_data(cfg.feature_fps, cfg.snippet_frames, train.feature_dim, cfg.modality,
                              train.class_names, train.classes_listed):
        log(line)


class BatchStream:
    """Step s's batch is a pure function of (seed, s): epoch e visits the videos in the
    order of a permutation drawn from (seed, e), and the random-perturb sampling of step
    s draws from (seed, s). A resumed run therefore sees exactly the batches the
    uninterrupted run would have seen.

    Two schedules (COLA_SPEC 4): "stream" (the default) reads the permutations as one
    endless stream, every batch full, batches crossing epoch ends; "official" cuts each
    epoch's permutation into batches of B without drop_last, as the official code's
    shuffled DataLoader does, so an epoch's last batch holds n mod B videos when B does
    not divide n.

    Two data paths: host (numpy features, one sampling call per video, then a copy to
    the device) and device (every feature of the split in one DeviceFeatureBank tensor on
    the device, sampling vectorised there, the batch one gather; the video order is
    uploaded once per `chunk` steps, so a step never waits for the host)."""

    def __init__(self, ds, batch_size: int, num_segments: int, seed: int,
                 device: torch.device | None = None, chunk: int = 500, schedule: str = "stream"):
        # videos without any action label cannot be trained on (label / sum(label))
        self.index = torch.nonzero(ds.labels.sum(1) > 0).flatten().numpy()
        if len(self.index) == 0:
            raise ValueError("no training video has an action label")
        self.ds = ds
        self.skipped = len(ds) - len(self.index)
        self.labels = ds.labels[torch.from_numpy(self.index)].float()
        self.B, self.N, self.seed = batch_size, num_segments, seed
        if schedule not in ("stream", "official"):
            raise ValueError(f"batch_schedule must be 'stream' or 'official', got {schedule!r}")
        self.schedule = schedule
        self.batches_per_epoch = -(-len(self.index) // batch_size)  # official schedule: ceil(n / B)
        self._perm_cache: dict[int, np.ndarray] = {}
        self.bank = None
        if device is not None:
            self.bank = DeviceFeatureBank(ds, device=device)
            self.device = torch.device(device)
            self.chunk = chunk
            self._chunk_id, self._chunk_dev = -1, None
            self._gen = torch.Generator(device=self.device)

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.index))}
        return self._perm_cache[epoch]

    def picks(self, steps: range) -> np.ndarray:
        """Dataset indices of the videos of each step in steps: (len(steps), B)."""
        n = len(self.index)
        out = np.empty((len(steps), self.B), dtype=np.int64)
        for r, step in enumerate(steps):
            for j in range(self.B):
                p = step * self.B + j
                out[r, j] = self.index[self._perm(p // n)[p % n]]
        return out

    def step_videos(self, step: int) -> np.ndarray:
        """Dataset indices of step's videos: B of them, fewer for the last batch of an
        epoch under the official schedule."""
        if self.schedule == "official":
            epoch, k = divmod(step, self.batches_per_epoch)
            return self.index[self._perm(epoch)[k * self.B:(k + 1) * self.B]]
        return self.picks(range(step, step + 1))[0]

    def batch(self, step: int, rows: slice = slice(None)):
        """Features (b,N,D) and labels (b,C) of step's batch, restricted to rows (the
        share of one process under torchrun)."""
        if self.bank is not None and self.schedule == "official":  # one small upload per step
            vids = torch.from_numpy(self.step_videos(step)).to(self.device)[rows]
            self._gen.manual_seed(int(np.random.default_rng([self.seed, 2, step]).integers(2**62)))
            b = self.bank.random_batch(vids, self.N, self._gen)
            return b["features"], b["label"]
        if self.bank is not None:
            c = step // self.chunk
            if c != self._chunk_id:
                first = c * self.chunk
                self._chunk_dev = torch.from_numpy(self.picks(range(first, first + self.chunk))).to(self.device)
                self._chunk_id = c
            vids = self._chunk_dev[step - c * self.chunk][rows]
            self._gen.manual_seed(int(np.random.default_rng([self.seed, 2, step]).integers(2**62)))
            b = self.bank.random_batch(vids, self.N, self._gen)
            return b["features"], b["label"]
        picks = self.step_videos(step)
        js = list(range(len(picks)))[rows]
        feats = []
        for j in js:
            x = self.ds.features_of(int(picks[j]))            # (T, D) float32 numpy
            rng = np.random.default_rng([self.seed, 2, step, j])
            feats.append(x[sample_random_perturb(x.shape[0], self.N, rng)])
        x = torch.from_numpy(np.stack(feats))
        return x, self.ds.labels[torch.from_numpy(picks[js])].float()
