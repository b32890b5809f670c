"""Plots during training (--set plot_videos=N): PNGs per test video, a missing matplotlib
said once before the first step, a failing plot reported once and never fatal to the run."""
import json
import sys

import pytest

from cola_fast.train import train


def test_plot_videos_writes_pngs_and_the_run_finishes(cache, tmp_path, quick):
    """The plotting loop used to rebind the ground truth passed to evaluate(): a crash at
    the first evaluation."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    summary = train(quick(plot_videos=2), out, quiet=True)
    pngs = sorted((out / "plots" / "step000010").glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 1000 for p in pngs)
    assert summary["best"]["step"] == 10 and (out / "last.pt").exists()


def test_missing_matplotlib_is_said_before_training_and_the_run_finishes(cache, tmp_path, monkeypatch, capsys, quick):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "run"
    train(quick(plot_videos=2), out, quiet=True)
    err = capsys.readouterr().err
    assert "pip install cola_fast[plot]" in err and err.count("needs matplotlib") == 1
    assert "plotting" not in err, "plots were still attempted"
    assert (out / "last.pt").exists() and not (out / "plots").exists()


def test_a_failing_plot_is_reported_once_and_never_fatal(cache, tmp_path, monkeypatch, capsys, quick):
    import cola_fast.visualize

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(cola_fast.visualize, "plot_video", broken)
    out = tmp_path / "run"
    train(quick(plot_videos=3, steps=20), out, quiet=True)
    err = capsys.readouterr().err
    assert err.count("disk full") == 1, err
    assert json.loads((out / "summary.json").read_text())["best"]["step"] > 0
