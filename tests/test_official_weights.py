"""Official CoLA weights in and out (cola_fast/official.py): infer loads an official state
dict as it is, train --init starts from one, export writes the official layout; no
unpickling of arbitrary objects, clear errors for wrong shapes."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from cola_fast.train import main as train_main, train


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
