"""The official batch schedule (--set batch_schedule=official, data/batches.py BatchStream):
epochs cover every video once with a short last batch, and a resumed run ends bit-identical."""
import numpy as np
import pytest
import torch

from cola_fast.data import BatchStream
from cola_fast.train import train


class _FakeDataset:
    def __init__(self, n, C=4):
        g = torch.Generator().manual_seed(0)
        self.labels = (torch.rand(n, C, generator=g) > 0.5).float()
        self.labels[:, 0] = 1  # every video labelled

    def __len__(self):
        return len(self.labels)


def test_official_schedule_epochs_cover_every_video_once_with_a_short_last_batch():
    s = BatchStream(_FakeDataset(200), batch_size=16, num_segments=8, seed=5, schedule="official")
    assert s.batches_per_epoch == 13
    sizes = [len(s.step_videos(k)) for k in range(26)]
    assert sizes == ([16] * 12 + [8]) * 2
    for epoch in range(2):
        seen = np.concatenate([s.step_videos(k) for k in range(13 * epoch, 13 * epoch + 13)])
        assert sorted(seen) == list(range(200))
    assert not np.array_equal(s.step_videos(0), s.step_videos(13)), "each epoch must be reshuffled"
    # a step's batch is a pure function of (seed, step): a fresh stream asked out of order agrees
    fresh = BatchStream(_FakeDataset(200), batch_size=16, num_segments=8, seed=5, schedule="official")
    assert np.array_equal(fresh.step_videos(20), s.step_videos(20))
    # the default schedule is unchanged: full batches across epoch ends
    stream = BatchStream(_FakeDataset(200), batch_size=16, num_segments=8, seed=5)
    assert {len(stream.step_videos(k)) for k in range(26)} == {16}


@pytest.mark.parametrize("on_device", ["no", "yes"])
def test_official_schedule_run_resumes_to_the_same_model(cache, tmp_path, monkeypatch, on_device, quick):
    """Steps 0-19 cross the short batch (step 12). A run stopped after its step-10
    checkpoint and resumed ends bit-identical to the uninterrupted one (host and
    device-bank data paths)."""
    import cola_fast.train as tr
    cfg = quick(steps=20, batch_schedule="official", data_on_device=on_device)
    full = tmp_path / "full"
    train(cfg, full, quiet=True, deterministic=True)

    calls = {"n": 0}
    real = tr.evaluate

    def evaluate_then_die(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return real(*a, **k)

    cut = tmp_path / "cut"
    monkeypatch.setattr(tr, "evaluate", evaluate_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, cut, quiet=True, deterministic=True)
    assert torch.load(cut / "last.pt", weights_only=True)["step"] == 10
    monkeypatch.setattr(tr, "evaluate", real)
    train(cfg, cut, resume=True, quiet=True, deterministic=True)
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(cut / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
