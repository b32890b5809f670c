"""All features of a split in one device tensor; batches by one gather.

    bank = DeviceFeatureBank(VideoDataset(root, "train", ...), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    vids = torch.randint(len(bank), (16,), device="cuda", generator=g)
    batch = bank.random_batch(vids, 750, g)      # features (16, 750, D) on the device

The videos are stored back to back in one (sum T, D) tensor (no padding waste: THUMOS'14
train lengths run from 13 to 1,835 snippets) with their offsets; a batch is a single
``index_select`` of offset[v] + idx. Sampling indices come from
:func:`sample_random_perturb_batch` on the same device, so no host round trip is needed.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import DataError
from .sampling import sample_random_perturb_batch, sample_uniform

__all__ = ["DeviceFeatureBank"]


class DeviceFeatureBank:
    """Features of every video of ``dataset`` (a VideoDataset, or any object with
    ``features_of(i)``, ``num_snippets``, ``labels``, ``video_ids``) in one tensor on
    ``device``; ``pin_memory=True`` keeps a CPU bank in pinned memory instead (for
    asynchronous copies). Attributes: features (sumT, D), offsets (V,), lengths (V,),
    labels (V, C), all on the bank's device; lengths_host (numpy); video_ids."""

    def __init__(self, dataset, device="cpu", pin_memory: bool = False, dtype=torch.float32):
        V = len(dataset)
        if V == 0:
            raise DataError("DeviceFeatureBank: the dataset holds no video")
        device = torch.device(device)
        if pin_memory and device.type != "cpu":
            raise DataError("pin_memory=True keeps the bank in host memory: use device='cpu'")
        lengths = np.asarray(dataset.num_snippets, dtype=np.int64)
        total = int(lengths.sum())
        D = int(dataset.feature_dim)
        host = torch.empty((total, D), dtype=dtype, pin_memory=bool(pin_memory and torch.cuda.is_available()))
        pos = 0
        for i in range(V):
            x = dataset.features_of(i)
            if x.shape != (lengths[i], D):
                raise DataError(f"DeviceFeatureBank: video {dataset.video_ids[i]!r} has shape {x.shape}, "
                                f"expected ({lengths[i]}, {D})")
            host[pos:pos + lengths[i]] = torch.from_numpy(x)
            pos += int(lengths[i])
        self.device = device
        self.features = host if device.type == "cpu" else host.to(device)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.offsets = torch.from_numpy(offsets).to(device)
        self.lengths = torch.from_numpy(lengths).to(device)
        self.lengths_host = lengths
        self.labels = dataset.labels.to(device=device, dtype=dtype)
        self.video_ids = list(dataset.video_ids)
        self.feature_dim = D

    def __len__(self):
        return len(self.video_ids)

    def _check_vids(self, vids):
        if not isinstance(vids, torch.Tensor):
            vids = torch.as_tensor(np.asarray(vids, dtype=np.int64))
        if vids.dim() != 1 or vids.dtype not in (torch.int64, torch.int32):
            raise DataError(f"video indices must be a 1-D integer tensor, got {tuple(vids.shape)} {vids.dtype}")
        if vids.device.type == "cpu" and vids.numel() and (int(vids.min()) < 0 or int(vids.max()) >= len(self)):
            raise DataError(f"video indices must lie in [0, {len(self)}), got range "
                            f"[{int(vids.min())}, {int(vids.max())}]")
        # (indices already on an accelerator are not range-checked: that would sync with the host)
        return vids.to(device=self.device, dtype=torch.int64)

    def gather(self, vids, idx) -> torch.Tensor:
        """features[(B, N) snippet indices of videos vids] -> (B, N, D) by one index_select."""
        vids = self._check_vids(vids)
        idx = torch.as_tensor(idx, device=self.device, dtype=torch.int64)
        if idx.dim() != 2 or idx.shape[0] != vids.shape[0]:
            raise DataError(f"idx must be (B, N) with B = {vids.shape[0]}, got {tuple(idx.shape)}")
        flat = (self.offsets[vids][:, None] + idx).reshape(-1)
        B, N = idx.shape
        return self.features.index_select(0, flat).view(B, N, self.feature_dim)

    def random_batch(self, vids, num_segments: int, generator: torch.Generator | None = None) -> dict:
        """Random-perturb sampled batch: dict(features (B, N, D), label (B, C),
        num_snippets (B,), index (B,), idx (B, N)) on the bank's device."""
        vids = self._check_vids(vids)
        T = self.lengths[vids]
        idx = sample_random_perturb_batch(T, num_segments, generator, device=self.device)
        return dict(features=self.gather(vids, idx), label=self.labels[vids], num_snippets=T, index=vids, idx=idx)

    def uniform_item(self, i: int, num_segments: int) -> dict:
        """One video with test ("uniform") sampling: features (1, T or N, D)."""
        if not 0 <= int(i) < len(self):
            raise DataError(f"video index {i} out of range [0, {len(self)})")
        idx = torch.from_numpy(sample_uniform(int(self.lengths_host[i]), num_segments))[None]
        vids = torch.tensor([int(i)])
        return dict(features=self.gather(vids, idx), label=self.labels[i][None],
                    num_snippets=int(self.lengths_host[i]), vid=self.video_ids[i])
