"""Fitting the field's tools (issue 14): plots that cannot kill a run, results files the
official CoLA and ActivityNet evaluators accept, official CoLA weights in and out, frame
rate and snippet length as settings, --config, help text, the official batch schedule."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from cola_fast.config import TrainConfig, get_preset, parse_override
from cola_fast.data import BatchStream
from cola_fast.train import build_parser, main as train_main, train



def _quick(**kw):
    """The tiny preset cut to a few steps: one evaluation at the end."""
    return get_preset("tiny").replace(**{"steps": 10, "eval_every": 10, **kw})


def _dataset_root(cache) -> Path:
    roots = sorted(Path(cache).glob("synthetic_thumos14_*"))
    assert roots, "the tiny run should have built its synthetic dataset in the cache"
    return roots[0]


def _video_features(root: Path, vid: str) -> np.ndarray:
    d = root / "features" / "test"
    return np.concatenate([np.load(d / "rgb" / f"{vid}.npy"), np.load(d / "flow" / f"{vid}.npy")], axis=1)


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------
def test_plot_videos_writes_pngs_and_the_run_finishes(cache, tmp_path):
    """The plotting loop used to rebind the ground truth passed to evaluate(): a crash at
    the first evaluation."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    summary = train(_quick(plot_videos=2), out, quiet=True)
    pngs = sorted((out / "plots" / "step000010").glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 1000 for p in pngs)
    assert summary["best"]["step"] == 10 and (out / "last.pt").exists()


def test_missing_matplotlib_is_said_before_training_and_the_run_finishes(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "run"
    train(_quick(plot_videos=2), out, quiet=True)
    err = capsys.readouterr().err
    assert "pip install cola_fast[plot]" in err and err.count("needs matplotlib") == 1
    assert "plotting" not in err, "plots were still attempted"
    assert (out / "last.pt").exists() and not (out / "plots").exists()


def test_a_failing_plot_is_reported_once_and_never_fatal(cache, tmp_path, monkeypatch, capsys):
    import cola_fast.visualize

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(cola_fast.visualize, "plot_video", broken)
    out = tmp_path / "run"
    train(_quick(plot_videos=3, steps=20), out, quiet=True)
    err = capsys.readouterr().err
    assert err.count("disk full") == 1, err
    assert json.loads((out / "summary.json").read_text())["best"]["step"] > 0


# --------------------------------------------------------------------------------------
# results files
# --------------------------------------------------------------------------------------
def _accepted_by_both_evaluators(doc: dict):
    """The top-level checks of the two evaluators: official CoLA (method, results) and
    ActivityNet (version, results, external_data)."""
    for key in ("version", "method", "results", "external_data"):
        assert key in doc, f"results file lacks {key!r}"
    assert isinstance(doc["results"], dict) and isinstance(doc["external_data"], dict)


def test_training_results_file_has_the_evaluators_keys(tiny_run):
    run, _, _ = tiny_run
    _accepted_by_both_evaluators(json.loads((run / "best_results.json").read_text()))


def test_infer_results_file_and_stdout_have_the_evaluators_keys(tiny_run, cache, tmp_path, capsys):
    from cola_fast.infer import main as infer_main
    run, _, _ = tiny_run
    f = tmp_path / "video_test_0000004.npy"
    np.save(f, _video_features(_dataset_root(cache), "video_test_0000004"))
    out = tmp_path / "dets.json"
    assert infer_main([str(run / "best.pt"), str(f), "--out", str(out)]) == 0
    _accepted_by_both_evaluators(json.loads(out.read_text()))
    capsys.readouterr()
    assert infer_main([str(run / "best.pt"), str(f)]) == 0
    _accepted_by_both_evaluators(json.loads(capsys.readouterr().out))


# --------------------------------------------------------------------------------------
# official CoLA weights
# --------------------------------------------------------------------------------------
class OfficialActionness(nn.Module):
    """The official model's module layout (names and layers), written from its state
    dict keys: f_embed = Conv1d(D, E, 3, padding 1) + ReLU, f_cls = Conv1d(E, C, 1, no
    bias) + ReLU."""

    def __init__(self, D, E, C):
        super().__init__()
        self.f_embed = nn.Sequential(nn.Conv1d(D, E, 3, padding=1), nn.ReLU())
        self.f_cls = nn.Sequential(nn.Conv1d(E, C, 1, bias=False), nn.ReLU())

    def forward(self, x):  # x (B, T, D) -> cas (B, T, C), eval mode (no dropout)
        return self.f_cls(self.f_embed(x.transpose(1, 2))).transpose(1, 2)


class OfficialCoLA(nn.Module):
    def __init__(self, D, E, C):
        super().__init__()
        self.actionness_module = OfficialActionness(D, E, C)


def _official_file(tmp_path, D=2048, E=64, C=20, legacy=False, suffix=".pth") -> tuple[Path, OfficialCoLA]:
    torch.manual_seed(3)
    net = OfficialCoLA(D, E, C)
    path = tmp_path / f"official{'_legacy' if legacy else ''}{suffix}"
    if legacy:  # the pre-1.6 pickle format, as old .pkl files are
        torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    else:
        torch.save(net.state_dict(), path)
    return path, net


@pytest.mark.parametrize("legacy,suffix", [(False, ".pth"), (True, ".pkl"), (False, ".pkl")])
def test_infer_loads_an_official_state_dict_as_it_is(tmp_path, legacy, suffix):
    from cola_fast.infer import load_model
    from cola_fast.official import THUMOS14_CLASSES
    path, net = _official_file(tmp_path, D=32, E=24, C=20, legacy=legacy, suffix=suffix)
    model, cfg, names = load_model(path)
    assert (model.cfg.feature_dim, model.cfg.embed_dim, model.cfg.num_classes) == (32, 24, 20)
    assert names == THUMOS14_CLASSES and names == sorted(names)
    x = torch.randn(1, 50, 32)
    with torch.no_grad():
        want = net.actionness_module(x)
        got = model(x, mine=False)["cas"]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_infer_official_weights_end_to_end_with_gt_class_names(tmp_path, capsys):
    """The CLI with an official file and --gt: the classes come from the gt file."""
    from cola_fast.infer import main as infer_main
    gt = {"database": {"v1": {"subset": "test", "duration": 30.0,
                              "annotations": [{"label": "Zeta", "segment": [1.0, 4.0]}]},
                       "v2": {"subset": "test", "duration": 30.0,
                              "annotations": [{"label": "Alpha", "segment": [2.0, 5.0]}]}}}
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    path, _ = _official_file(tmp_path, D=16, E=8, C=2)
    feats = tmp_path / "v1.npy"
    np.save(feats, np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32))
    out = tmp_path / "dets.json"
    assert infer_main([str(path), str(feats), "--gt", str(gt_path), "--out", str(out)]) == 0
    labels = {d["label"] for d in json.loads(out.read_text())["results"]["v1"]}
    assert labels and labels <= {"Alpha", "Zeta"}
    # C != 20 and no --gt: a clear error
    assert infer_main([str(path), str(feats)]) == 2
    assert "--gt" in capsys.readouterr().err


def test_official_loading_never_unpickles_arbitrary_objects(tmp_path, capsys):
    from cola_fast.infer import main as infer_main
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "evil.pkl"
    torch.save({"actionness_module.f_embed.0.weight": Evil()}, bad)
    feats = tmp_path / "v.npy"
    np.save(feats, np.zeros((10, 4), np.float32))
    assert infer_main([str(bad), str(feats)]) == 2
    assert not marker.exists(), "an arbitrary object was unpickled"
    assert "weights_only" in capsys.readouterr().err


def test_wrong_official_shapes_fail_clearly(tmp_path):
    from cola_fast.official import from_official
    sd = OfficialCoLA(8, 4, 3).state_dict()
    sd["actionness_module.f_embed.0.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match="f_embed.0.bias must be"):
        from_official(sd)
    sd = OfficialCoLA(8, 4, 3).state_dict()
    sd["actionness_module.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected keys"):
        from_official(sd)


def test_train_init_starts_from_official_weights(cache, tmp_path):
    """--init: with lr 1e-12 (0 is refused as a setting) the weights move by about 1e-12 in two
    Adam steps, so the run's best.pt holds the official file's tensors to 1e-9 (a random start
    would differ by about 0.1); embed_dim follows the file's shapes."""
    path, net = _official_file(tmp_path, D=128, E=48, C=20)
    out = tmp_path / "run"
    rc = train_main(["--preset", "tiny", "--init", str(path), "--out", str(out), "--quiet", "--steps", "2",
                     "--eval-every", "2", "--lr", "1e-12", "--set", "weight_decay=0"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["embed_dim"] == 48 and cfg["init"] == str(path)
    got = torch.load(out / "best.pt", weights_only=True)["model"]
    sd = net.state_dict()
    close = dict(rtol=0, atol=1e-9)
    torch.testing.assert_close(got["embed_weight"], sd["actionness_module.f_embed.0.weight"], **close)
    torch.testing.assert_close(got["embed_bias"], sd["actionness_module.f_embed.0.bias"], **close)
    torch.testing.assert_close(got["classifier.weight"], sd["actionness_module.f_cls.0.weight"], **close)


def test_train_init_with_wrong_feature_dim_fails_clearly(cache, tmp_path, capsys):
    path, _ = _official_file(tmp_path, D=100, E=8, C=20)
    assert train_main(["--preset", "tiny", "--init", str(path), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "feature_dim=100" in capsys.readouterr().err


def test_train_init_official_weights_into_the_anet_classifier_fails_clearly(cache, tmp_path, capsys):
    path, _ = _official_file(tmp_path, D=128, E=8, C=20)
    assert train_main(["--preset", "tiny", "--init", str(path), "--out", str(tmp_path / "r"), "--quiet",
                       "--set", "classifier=anet"]) == 2
    assert "THUMOS'14 classifier" in capsys.readouterr().err


def test_export_to_the_official_layout_loads_into_the_official_model(tiny_run, tmp_path):
    """Export best.pt; the official module layout loads it strictly and computes the
    same class activations as cola_fast."""
    from cola_fast.infer import load_model
    from cola_fast.official import main as official_main
    run, _, _ = tiny_run
    out = tmp_path / "exported.pth"
    assert official_main(["export", str(run / "best.pt"), str(out)]) == 0
    sd = torch.load(out, weights_only=True)
    E, D, _ = sd["actionness_module.f_embed.0.weight"].shape
    C = sd["actionness_module.f_cls.0.weight"].shape[0]
    net = OfficialCoLA(D, E, C)
    net.load_state_dict(sd)  # strict
    model, _, _ = load_model(run / "best.pt")
    x = torch.randn(2, 40, D)
    with torch.no_grad():
        torch.testing.assert_close(net.actionness_module(x), model(x, mine=False)["cas"], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------
# frame rate and snippet length
# --------------------------------------------------------------------------------------
def test_fps_and_snippet_frames_scale_every_segment(tiny_run, cache, tmp_path, capsys):
    from cola_fast.infer import main as infer_main
    run, _, _ = tiny_run
    f = tmp_path / "video_test_0000007.npy"
    np.save(f, _video_features(_dataset_root(cache), "video_test_0000007"))

    def segments(*extra):
        capsys.readouterr()
        assert infer_main([str(run / "best.pt"), str(f), *extra]) == 0
        dets = json.loads(capsys.readouterr().out)["results"]["video_test_0000007"]
        assert dets
        return np.array([d["segment"] for d in dets])

    # The published NMS adds 1 to segment lengths in seconds, so another time scale is
    # not a plain rescaling of the detections. Checked instead: the same snippet
    # duration (8 frames at 12.5 fps = 16 at 25) gives the same detections, and a
    # shorter one puts every detection inside the shorter timeline.
    T = np.load(f).shape[0]
    base = segments()
    np.testing.assert_array_equal(segments("--fps", "12.5", "--snippet-frames", "8"), base)
    assert base[:, 1].max() > T * 16 / 50 + 1e-6  # the default timeline exceeds the fps=50 one
    assert segments("--fps", "50")[:, 1].max() <= T * 16 / 50 + 1e-9
    assert segments("--snippet-frames", "8")[:, 1].max() <= T * 8 / 25 + 1e-9


def test_fps_settings_reach_the_trainer_evaluation(cache, tmp_path):
    """The trainer's evaluation converts with the config's feature_fps and snippet_frames:
    the same snippet duration gives the same results file, a halved one halves the timeline."""
    runs = {}
    for name, kw in (("default", {}), ("same", dict(feature_fps=12.5, snippet_frames=8)),
                     ("fast", dict(feature_fps=50.0))):
        train(_quick(**kw), tmp_path / name, quiet=True, deterministic=True)
        runs[name] = json.loads((tmp_path / name / "best_results.json").read_text())["results"]
    assert runs["same"] == runs["default"]
    end = {k: max(d["segment"][1] for dets in r.values() for d in dets) for k, r in runs.items()}
    assert end["fast"] <= end["default"] / 2 + 1.0 and end["fast"] < end["default"] * 0.75


@pytest.mark.parametrize("item,msg", [("feature_fps=0", "feature_fps"), ("snippet_frames=0", "snippet_frames"),
                                      ("batch_schedule=epochs", "batch_schedule"), ("compile=maybe", "compile")])
def test_bad_new_settings_fail_clearly(item, msg):
    with pytest.raises(ValueError, match=msg):
        parse_override(TrainConfig(), item)


# --------------------------------------------------------------------------------------
# --config, help, TensorBoard
# --------------------------------------------------------------------------------------
def test_config_file_is_read_and_flags_override_it(tiny_run, tmp_path):
    run, _, _ = tiny_run
    args = build_parser().parse_args(["--config", str(run / "config.json"), "--steps", "7",
                                      "--set", "lr=0.5"])
    from cola_fast.train import config_from_args
    cfg = config_from_args(args)
    saved = json.loads((run / "config.json").read_text())
    assert cfg.preset == "tiny" and cfg.steps == 7 and cfg.lr == 0.5
    assert {k: v for k, v in cfg.to_dict().items() if k not in ("steps", "lr")} == \
        {k: v for k, v in saved.items() if k not in ("steps", "lr")}


@pytest.mark.parametrize("content,msg", [("{", "not valid JSON"), ('{"stepz": 3}', "unknown config fields"),
                                         ("[1]", "JSON object"), ('{"feature_fps": -1}', "feature_fps"),
                                         ('{"compile": "yes"}', "compile")])
def test_bad_config_file_fails_clearly(tmp_path, capsys, content, msg):
    f = tmp_path / "c.json"
    f.write_text(content)
    assert train_main(["--config", str(f), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert msg in err and str(f) in err


def test_every_train_flag_has_help_with_its_default():
    for action in build_parser()._actions:
        if action.dest == "help":
            continue
        assert action.help and "default" in action.help, f"{action.option_strings} lacks help with a default"


def test_missing_tensorboard_is_said_once(cache, tmp_path, monkeypatch, capsys):
    """Said once on the console with the run's other messages (not with --quiet, whose stderr
    holds only what a user must act on)."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = tmp_path / "run"
    train(_quick(), out)
    said = capsys.readouterr().out
    assert said.count("TensorBoard is not available") == 1 and str(out / "metrics.jsonl") in said
    train(_quick(), tmp_path / "quiet", quiet=True)
    assert "TensorBoard" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# compile switch
# --------------------------------------------------------------------------------------
def test_compile_switch_wraps_the_model_and_loss_of_the_step(cache, tmp_path, monkeypatch):
    compiled = []

    def fake_compile(fn, **kw):
        compiled.append(type(fn).__name__)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(_quick(compile=True), tmp_path / "on", quiet=True)
    assert compiled == ["CoLA", "CoLALoss"]
    compiled.clear()
    train(_quick(), tmp_path / "off", quiet=True)
    assert compiled == []


@pytest.mark.slow
def test_compile_switch_really_compiles_and_trains(cache, tmp_path):
    """A real torch.compile run (reference ops: they compile without recompiles on the CPU)."""
    from torch._dynamo.utils import counters
    counters.clear()
    out = tmp_path / "run"
    train(_quick(compile=True, backend="reference"), out, quiet=True)
    assert counters["stats"]["unique_graphs"] >= 1
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in recs if r["kind"] == "train")


# --------------------------------------------------------------------------------------
# official batch schedule
# --------------------------------------------------------------------------------------
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
def test_official_schedule_run_resumes_to_the_same_model(cache, tmp_path, monkeypatch, on_device):
    """Steps 0-19 cross the short batch (step 12). A run stopped after its step-10
    checkpoint and resumed ends bit-identical to the uninterrupted one (host and
    device-bank data paths)."""
    import cola_fast.train as tr
    cfg = _quick(steps=20, batch_schedule="official", data_on_device=on_device)
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
