"""backend="auto" by measurement (cola_fast/ops/_autotune.py): every candidate it may choose
matches the reference, a wrong candidate is never chosen, the on-disk cache survives corrupt and
foreign files, pinned choices win, forced backends still force, torch's RNG is untouched, and
auto stays one graph under torch.compile."""
from __future__ import annotations

import json

import pytest
import torch

from cola_fast import ops, reference
from cola_fast.ops import _autotune, module

classifier, conv_embed, dropout = module("classifier_1x1"), module("temporal_conv_embed"), module("dropout")
mining, snico = module("mine_snippets"), module("snico_loss")

CPU = torch.device("cpu")


@pytest.fixture
def tuner(tmp_path, monkeypatch):
    """A private on-disk cache and a clean table of decisions."""
    monkeypatch.setenv("COLA_FAST_CACHE", str(tmp_path))
    monkeypatch.delenv("COLA_FAST_BACKEND", raising=False)
    monkeypatch.delenv("COLA_FAST_AUTOTUNE", raising=False)
    _autotune.reset()
    yield tmp_path / "autotune.json"
    _autotune.reset()


# --------------------------------------------------------------------------------------
# every candidate auto can choose matches the reference
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("T,K", [(50, 3), (51, 3), (50, 9), (37, 5)])
@pytest.mark.parametrize("need_dx", [False, True])
def test_conv_candidates_match_reference(T, K, need_dx):
    g = torch.Generator().manual_seed(T * K)
    x = torch.randn(3, T, 24, generator=g).requires_grad_(need_dx)
    w = (torch.randn(16, 24, K, generator=g) / (24 * K) ** 0.5).requires_grad_(True)
    b = torch.randn(16, generator=g).requires_grad_(True)
    gout = torch.randn(3, T, 16, generator=g)
    wrt = [t for t in (x, w, b) if t.requires_grad]
    ref = reference.temporal_conv_embed(x, w, b)
    ref_grads = torch.autograd.grad(ref, wrt, gout)
    names = conv_embed.candidates(CPU, torch.float32)
    # the list is what the probe found running on this CPU, and every name on it runs and is right
    libs = ops.gemm_libraries()
    assert names == ["reference"] + [f"native:{lib}" for lib in ("blas", "onednn") if not libs[lib]]
    for name in names:
        y = conv_embed.run(x, w, b, name)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4, msg=name)
        for a, r in zip(torch.autograd.grad(y, wrt, gout), ref_grads):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-3, msg=name)


def test_gemm_probe_offers_blas_and_says_why_a_library_is_missing():
    """BLAS always runs; oneDNN is offered exactly when its probe ran here (a oneDNN-enabled torch on
    any x86 ISA: its GEMMs go through a public ATen op, not a private symbol that refuses some
    CPUs) unless COLA_FAST_ONEDNN=0 withdraws it, with the reason, which `info` prints."""
    import os
    from cola_fast import info
    libs = ops.gemm_libraries()
    assert libs["blas"] == ""
    wanted = torch.backends.mkldnn.is_available() and os.environ.get("COLA_FAST_ONEDNN", "1") != "0"
    assert (libs["onednn"] == "") == wanted, libs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLA_FAST_ONEDNN", "0")
        ops.gemm_libraries.cache_clear()
        try:
            assert conv_embed.candidates(CPU, torch.float32) == ["reference", "native:blas"]
            lines = info._candidate_lines(info.cpu_candidates())
            assert "  not offered: native:onednn: turned off by COLA_FAST_ONEDNN=0" in lines
        finally:
            ops.gemm_libraries.cache_clear()
    assert ops.gemm_libraries() == libs  # the environment as it was, the same answer


def test_isa_cap_rule_and_the_tuning_key(monkeypatch):
    """COLA_FAST_CPU_ISA lowers the instruction set, never raises it above the host's; an unknown
    value is refused; the ISA the kernels run with is part of every CPU decision's key, so decisions
    never cross ISAs (tests/test_cpu_isa.py checks the kernels' own answer under each cap)."""
    from cola_fast.ops import _backend
    isas = _backend.CPU_ISAS
    for host in isas:
        assert _backend.capped_isa(host, None) == host
        for cap in isas:
            assert _backend.capped_isa(host, cap) == isas[min(isas.index(host), isas.index(cap))]
    key = _autotune.make_key("mine_snippets", "forward", "cpu", "float32", (16, 750), "none")
    assert f", {_backend.cpu_isa()}" in key
    monkeypatch.setenv("COLA_FAST_CPU_ISA", "avx3")
    with pytest.raises(ValueError, match="COLA_FAST_CPU_ISA='avx3': choose one of sse2, avx2, avx512"):
        _backend.cpu_isa_cap()


def test_conv_onednn_gemm_f64_uses_blas_and_is_exact():
    """oneDNN's matmul is float32-only: float64 is not a candidate for it, and the native op given
    gemm=1 in float64 still computes exactly (BLAS)."""
    assert "native:onednn" not in conv_embed.candidates(CPU, torch.float64)
    x, w, b = torch.randn(2, 20, 8, dtype=torch.float64), torch.randn(6, 8, 3, dtype=torch.float64), None
    torch.testing.assert_close(conv_embed.run(x, w, b, "native:onednn"), reference.temporal_conv_embed(x, w, b))


def test_other_op_candidates_match_reference():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(4, 60, generator=g)
    keep = (torch.rand(4, 60, generator=g) < 0.4).float()
    ref = reference.mine_snippets(a, keep, 12, 3, 3, 6)
    for name in mining.candidates(CPU):
        for o, r in zip(mining.run(a, keep, 12, 3, 3, 6, name), ref):
            assert torch.equal(o, r), name
    emb = torch.randn(4, 60, 32, generator=g).relu().requires_grad_(True)
    idx = [torch.randint(0, 60, (4, k), generator=g) for k in (12, 12, 3, 3)]
    loss = reference.snico_loss(emb, *idx, 0.07)
    (grad,) = torch.autograd.grad(loss, emb)
    for name in snico.candidates(CPU):
        lo = snico.run(emb, *idx, 0.07, name)
        torch.testing.assert_close(lo, loss, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(torch.autograd.grad(lo, emb)[0], grad, rtol=1e-4, atol=1e-7, msg=name)
    h = torch.randn(2, 30, 16, generator=g)
    w = torch.randn(5, 16, 1, generator=g)
    torch.testing.assert_close(classifier.run(h, w, "linear"), classifier.run(h, w, "conv1d"))


def test_dropout_candidates_are_valid_dropouts_and_the_check_can_fail():
    x = torch.rand(8, 50, 64) + 0.5
    for name in ("reference", "native"):
        y = dropout.run(x, 0.7, name)
        assert dropout._dropout_mismatch((x, y), 0.7) is None, name
    assert dropout._dropout_mismatch((x, x * 2.0), 0.7) is not None          # kept values wrong
    assert dropout._dropout_mismatch((x, torch.zeros_like(x)), 0.7) is not None  # keep rate wrong
    y = dropout.run(x, 0.7, "native")
    assert dropout._dropout_mismatch((x, y, torch.ones_like(x)), 0.7) is not None  # gradient ignores the mask


# --------------------------------------------------------------------------------------
# the tuner itself
# --------------------------------------------------------------------------------------
def _fake_factory(calls, wrong_fast=True):
    """Candidates of a toy op: "reference" (slow, right), "fast_wrong" (fast, wrong), "ok" (right)."""
    import time

    def factory(variant, device, dtype, shape, autocast):
        calls.append(shape)

        def slow(inp):
            time.sleep(0.002)
            return (inp[0] * 2,)
        cands = {"reference": slow, "ok": lambda inp: (inp[0] * 2,)}
        if wrong_fast:
            cands["fast_wrong"] = lambda inp: (inp[0] * 2 + 1e-2,)
        return _autotune.Tuning(cands, lambda gen: (torch.randn(shape, generator=gen),), "reference",
                                _autotune.mismatch_tolerance(dtype, device))
    return factory


def test_wrong_candidate_is_never_chosen_and_the_decision_is_cached(tuner):
    calls = []
    _autotune.register("toy", _fake_factory(calls))
    assert _autotune.choose("toy", "v", "cpu", "float32", (100,)) == "ok"
    (d,) = _autotune.decisions()
    assert d["source"] == "measured" and "fast_wrong" in d["ineligible"] and "fast_wrong" not in d["timings_ms"]
    assert set(d["timings_ms"]) == {"reference", "ok"}
    # the same class again: no new measurement; a new class: one more
    assert _autotune.choose("toy", "v", "cpu", "float32", (100,)) == "ok"
    _autotune.choose("toy", "v", "cpu", "float32", (200,))
    assert calls == [(100,), (200,)]
    on_disk = json.loads(tuner.read_text())
    assert on_disk["format"] == _autotune.CACHE_FORMAT and len(on_disk["decisions"]) == 2


def test_a_reference_that_is_off_is_settled_by_the_float64_oracle(tuner):
    """torch's composition can be the one that is off (seen: its CPU conv backward at
    (31,50,2048->2048,k9), 5% from the float64 result). With an oracle, a disagreement is
    settled by it: the right candidates stay eligible, the reference does not."""
    def factory(variant, device, dtype, shape, autocast):
        cands = {"reference": lambda inp: (inp[0] * 2 + 1e-2,), "ok": lambda inp: (inp[0] * 2,),
                 "also_ok": lambda inp: (inp[0] * 2,)}
        return _autotune.Tuning(cands, lambda gen: (torch.randn(shape, generator=gen),), "reference",
                                _autotune.mismatch_tolerance(dtype, device),
                                oracle=lambda inp: (inp[0].double() * 2,))
    _autotune.register("toy_oracle", factory)
    assert _autotune.choose("toy_oracle", "v", "cpu", "float32", (100,)) in ("ok", "also_ok")
    (d,) = _autotune.decisions()
    assert set(d["ineligible"]) == {"reference"} and "float64 oracle" in d["ineligible"]["reference"]


def test_disk_cache_is_used_by_a_new_process(tuner, monkeypatch):
    _autotune.register("toy", _fake_factory([]))
    _autotune.choose("toy", "v", "cpu", "float32", (64,))
    _autotune.reset()  # as a new process: memory empty, disk kept

    def no_measure(*a, **k):
        raise AssertionError("measured again although the disk cache holds the decision")
    monkeypatch.setattr(_autotune, "measure", no_measure)
    assert _autotune.choose("toy", "v", "cpu", "float32", (64,)) == "ok"
    assert _autotune.decisions()[0]["source"] == "disk cache"


@pytest.mark.parametrize("content", [b"\x00\xff garbage", b"{\"decisions\": 3", b"[1, 2, 3]",
                                     b'{"format": "something-else", "version": 1, "decisions": {}}',
                                     b'{"format": "cola_fast-autotune", "version": 99, "decisions": {}}'])
def test_disk_cache_survives_corrupt_or_foreign_files(tuner, content):
    tuner.parent.mkdir(parents=True, exist_ok=True)
    tuner.write_bytes(content)
    _autotune.register("toy", _fake_factory([]))
    with pytest.warns(UserWarning, match="ignoring the autotune cache"):
        assert _autotune.choose("toy", "v", "cpu", "float32", (32,)) == "ok"
    data = json.loads(tuner.read_text())  # rewritten as a valid cache
    assert data["version"] == _autotune.CACHE_VERSION and len(data["decisions"]) == 1


def test_cached_choice_that_is_no_candidate_here_is_measured_again(tuner):
    _autotune.register("toy", _fake_factory([]))
    key = _autotune.make_key("toy", "v", "cpu", "float32", (16,), "none")
    tuner.parent.mkdir(parents=True, exist_ok=True)
    tuner.write_text(json.dumps({"format": _autotune.CACHE_FORMAT, "version": _autotune.CACHE_VERSION,
                                 "decisions": {key: {"choice": "gone_backend"}, "junk": 5}}))
    assert _autotune.choose("toy", "v", "cpu", "float32", (16,)) == "ok"
    assert _autotune.decisions()[0]["source"] == "measured"


def test_pinned_choice_wins_over_cache_and_measurement(tuner):
    _autotune.register("toy", _fake_factory([]))
    _autotune.choose("toy", "v", "cpu", "float32", (8,))
    recorded = _autotune.decisions()
    recorded[0]["choice"] = "reference"  # a run that had chosen otherwise
    _autotune.reset()
    assert _autotune.pin(recorded) == 1
    assert _autotune.choose("toy", "v", "cpu", "float32", (8,)) == "reference"
    assert _autotune.decisions()[0]["source"] == "pinned"


def test_autotune_off_takes_the_static_order(tuner, monkeypatch):
    monkeypatch.setenv("COLA_FAST_AUTOTUNE", "off")
    x, w, b = torch.randn(2, 30, 8), torch.randn(4, 8, 3), torch.randn(4)
    ops.temporal_conv_embed(x, w, b)
    (d,) = _autotune.decisions()
    assert d["choice"] == "native:blas" and d["source"] == "off"
    assert not tuner.exists()


def test_measurement_leaves_torch_rng_untouched(tuner):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    x, w, b = torch.randn(2, 40, 8), torch.randn(4, 8, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    mid = torch.get_rng_state()
    ops.dropout(ops.temporal_conv_embed(x, w, b), 0.5, True)  # measures conv and dropout (dropout draws)
    assert _autotune.decisions() and all(d["source"] == "measured" for d in _autotune.decisions())
    torch.manual_seed(123)
    torch.randn(2, 40, 8), torch.randn(4, 8, 3), torch.randn(4)
    assert torch.equal(torch.get_rng_state(), mid) and not torch.equal(before, mid)
    # the op's own draw (the dropout seed) comes from where it would without measurement
    torch.set_rng_state(mid)
    y1 = ops.dropout(ops.temporal_conv_embed(x, w, b), 0.5, True)  # decisions in memory now
    torch.set_rng_state(mid)
    _autotune.reset()
    y2 = ops.dropout(ops.temporal_conv_embed(x, w, b), 0.5, True)  # measured again first
    assert torch.equal(y1, y2)


def test_forced_backend_never_consults_the_tuner(tuner, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the tuner was consulted for a forced backend")
    monkeypatch.setattr(_autotune, "_decide", boom)
    x, w, b = torch.randn(2, 30, 8), torch.randn(4, 8, 3), torch.randn(4)
    y = ops.temporal_conv_embed(x, w, b, backend="reference")
    torch.testing.assert_close(y, reference.temporal_conv_embed(x, w, b))
    monkeypatch.setenv("COLA_FAST_BACKEND", "native")
    ops.temporal_conv_embed(x, w, b)
    a = torch.rand(2, 30)
    ops.mine_snippets(a, torch.ones_like(a), 6, 2)
    ops.dropout(x, 0.5, True)


def test_describe_and_info_list_the_decisions(tuner, capsys):
    from cola_fast import info

    x, w, b = torch.randn(2, 30, 8), torch.randn(4, 8, 3), torch.randn(4)
    ops.temporal_conv_embed(x, w, b)
    (d,) = ops.describe()["auto_decisions"]
    assert d["key"].startswith("temporal_conv_embed/forward|") and d["choice"] in d["timings_ms"]
    assert info.main([]) == 0
    out = capsys.readouterr().out
    assert "temporal_conv_embed/forward" in out and d["choice"] in out


def test_auto_is_one_graph_under_torch_compile(tuner):
    from cola_fast.model import CoLA, CoLALoss, ModelConfig

    model = CoLA(ModelConfig(feature_dim=16, embed_dim=8, num_classes=4)).train()
    loss_fn = CoLALoss()
    x = torch.randn(2, 40, 16)
    y = torch.zeros(2, 4)
    y[:, 0] = 1

    def step(x, y):
        return loss_fn(model(x), y)[0]
    explanation = torch._dynamo.explain(step)(x, y)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    assert {d["key"].split("|")[0] for d in _autotune.decisions()} >= {
        "temporal_conv_embed/train", "mine_snippets/indices", "snico_loss/train", "classifier_1x1/train"}


# --------------------------------------------------------------------------------------
# a training run records its choices, and --resume pins them
# --------------------------------------------------------------------------------------
def test_resumed_run_reuses_the_recorded_choices_and_ends_bit_identical(cache, tmp_path, monkeypatch):
    """The first half of a run chooses by measurement and records the choices (checkpoint and
    autotune.json). The resumed half runs in a process whose measurements would choose
    otherwise (here: always torch's own composition): the recorded choices are pinned, and the
    weights equal those of the uninterrupted run bit for bit."""
    from cola_fast.config import get_preset
    from cola_fast.train import train

    monkeypatch.delenv("COLA_FAST_BACKEND", raising=False)
    _autotune.reset()
    cfg = get_preset("tiny").replace(steps=20, eval_every=10)
    train(cfg, tmp_path / "whole", quiet=True)
    train(cfg.replace(steps=10), tmp_path / "halves", quiet=True)
    recorded = json.loads((tmp_path / "halves" / _autotune.RUN_RECORD).read_text())["decisions"]
    assert {d["key"].split("|")[0] for d in recorded} >= {"temporal_conv_embed/train", "snico_loss/train"}
    chosen = {d["key"]: d["choice"] for d in recorded}

    _autotune.reset()  # as a new process, whose own measurements would choose differently
    real_measure = _autotune.measure

    def torch_everywhere(key, tuning, device):
        d = real_measure(key, tuning, device)
        d.choice = tuning.reference
        return d
    monkeypatch.setattr(_autotune, "measure", torch_everywhere)
    monkeypatch.setenv("COLA_FAST_AUTOTUNE", "refresh")  # and no disk cache to fall back on
    train(cfg, tmp_path / "halves", resume=True, quiet=True)
    pinned = {d["key"]: d["choice"] for d in _autotune.decisions() if d["source"] == "pinned"}
    assert pinned and all(chosen[k] == c for k, c in pinned.items())
    assert any(k.startswith("temporal_conv_embed/train") for k in pinned)
    a = torch.load(tmp_path / "halves" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 20
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    _autotune.reset()


def test_key_names_the_precision_settings_and_the_versions():
    """A decision made under other float32 settings (TF32) or other software is not reused."""
    import cola_fast

    key = _autotune.make_key("toy", "v", "cpu", "float32", (16,), "none")
    assert _autotune.precision() in key and f"cola_fast {cola_fast.__version__}" in key and "triton " in key
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium" if old != "medium" else "highest")
        assert _autotune.make_key("toy", "v", "cpu", "float32", (16,), "none") != key
    finally:
        torch.set_float32_matmul_precision(old)


def test_single_videos_share_shape_classes(monkeypatch):
    """Evaluation calls the classifier and the conv on one video at a time, of every length:
    T is bucketed (a power of two), so a test set costs a handful of measurements, not one per
    length. Training batches keep their exact shape."""

    seen = []
    monkeypatch.setattr(_autotune, "choose", lambda op, variant, dev, dtype, shape, *a: seen.append(shape) or "linear")
    w = torch.zeros(3, 8, 1)
    for T in (300, 400, 500, 511):
        classifier.classifier_1x1(torch.zeros(1, T, 8), w, backend="auto")
    classifier.classifier_1x1(torch.zeros(16, 750, 8), w, backend="auto")
    assert seen == [(1, 512, 8, 3)] * 4 + [(16, 750, 8, 3)]
    # the conv tunes on the whole batch on a GPU (its Triton kernels tune per bucket of B*T rows)
    assert conv_embed.tuning_batch(torch.device("cuda"), 16, 750) == 16
    assert conv_embed.tuning_batch(torch.device("cpu"), 16, 750) == 2


def test_info_explain_says_what_auto_would_run_without_running_it(tuner, monkeypatch, capsys):
    """`info --explain` builds the key a real call makes and reports the decision from the same
    order _decide follows (memory, disk cache, pinned, off), or "would measure", running nothing."""
    from cola_fast import info

    def explained():
        return info.explain("temporal_conv_embed", (2, 30, 8, 4, 3), variant="forward")

    e = explained()
    assert e["decision"] is None and _autotune.decisions() == [] and not tuner.exists()  # nothing ran
    assert e["shape_class"] == (2, 30, 8, 4, 3, 1) and e["candidates"] == conv_embed.candidates(CPU, torch.float32)
    assert info.main(["--explain", "temporal_conv_embed", "2,30,8,4,3", "--variant", "forward"]) == 0
    assert "would measure on first call" in capsys.readouterr().out
    x, w, b = torch.randn(2, 30, 8), torch.randn(4, 8, 3), torch.randn(4)
    ops.temporal_conv_embed(x, w, b)
    (d,) = _autotune.decisions()
    assert e["key"] == d["key"]  # the key explain named is the call's
    assert explained()["decision"]["source"] == "in memory, measured"
    _autotune.reset()
    got = explained()["decision"]
    assert (got["source"], got["choice"], got["timings_ms"]) == ("disk cache", d["choice"], d["timings_ms"])
    other = next(n for n in e["candidates"] if n != d["choice"])
    _autotune.pin({d["key"]: other})
    assert (explained()["decision"]["source"], explained()["decision"]["choice"]) == ("pinned", other)
    _autotune.reset()
    monkeypatch.setenv("COLA_FAST_AUTOTUNE", "off")
    assert explained()["decision"]["source"] == "off"
    assert _autotune.decisions() == []
    mining = info.explain("mine_snippets", (16, 750))
    assert mining["shape_class"] == (16, 750, 150, 37, 3, 6) and "triton" in mining["not_offered"]
    assert info.main(["--explain", "snico_loss", "1,2"]) == 2  # a bad SHAPE: one line, exit status 2
