"""The compile switch (--set compile=true): torch.compile wraps the model and the loss of
the training step, and a really compiled run trains."""
import json

import numpy as np
import pytest
import torch

from cola_fast.train import train


def test_compile_switch_wraps_the_model_and_loss_of_the_step(cache, tmp_path, monkeypatch, quick):
    compiled = []

    def fake_compile(fn, **kw):
        compiled.append(type(fn).__name__)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(quick(compile=True), tmp_path / "on", quiet=True)
    assert compiled == ["CoLA", "CoLALoss"]
    compiled.clear()
    train(quick(), tmp_path / "off", quiet=True)
    assert compiled == []


@pytest.mark.slow
def test_compile_switch_really_compiles_and_trains(cache, tmp_path, quick):
    """A real torch.compile run (reference ops: they compile without recompiles on the CPU)."""
    from torch._dynamo.utils import counters
    counters.clear()
    out = tmp_path / "run"
    train(quick(compile=True, backend="reference"), out, quiet=True)
    assert counters["stats"]["unique_graphs"] >= 1
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in recs if r["kind"] == "train")
