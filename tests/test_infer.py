"""python -m cola_fast.infer: a checkpoint plus features -> the same detections the
trainer's evaluation produced for those videos; plots; clear errors."""
import json

import numpy as np
import pytest

from cola_fast.infer import main
from cola_fast.config import resolve_device


@pytest.fixture(scope="module")
def feats_dir(synthetic_root, video_features, tmp_path_factory):
    out = tmp_path_factory.mktemp("feats")
    vids = ["video_test_0000004", "video_test_0000007", "video_test_0000026"]
    for v in vids:
        np.save(out / f"{v}.npy", video_features(v))
    return out, vids, synthetic_root


@pytest.mark.gpu
def test_infer_reproduces_trainer_detections(tiny_run, feats_dir, tmp_path):
    """At 1e-9, so on the device the trainer evaluated on (its config's device, "auto": CUDA
    on a GPU machine), with the same kernels; CPU and CUDA results differ by float rounding."""
    run, _, _ = tiny_run
    d, vids, _ = feats_dir
    out = tmp_path / "dets.json"
    device = str(resolve_device(json.loads((run / "config.json").read_text())["device"]))
    assert main([str(run / "best.pt"), str(d), "--out", str(out), "--device", device]) == 0
    got = json.loads(out.read_text())["results"]
    want = json.loads((run / "best_results.json").read_text())["results"]
    assert sorted(got) == sorted(vids)
    for v in vids:
        assert len(got[v]) == len(want[v]) > 0
        for a, b in zip(got[v], want[v]):
            assert a["label"] == b["label"]
            assert a["score"] == pytest.approx(b["score"], abs=1e-9)
            assert a["segment"] == pytest.approx(b["segment"], abs=1e-9)


def _same_detections(got: dict, want: dict) -> None:
    for v in want:
        assert len(got[v]) == len(want[v])
        for a, b in zip(got[v], want[v]):
            assert a["label"] == b["label"]
            assert a["score"] == pytest.approx(b["score"], abs=1e-9)
            assert a["segment"] == pytest.approx(b["segment"], abs=1e-9)


def test_infer_on_the_dataset_layout_reproduces_trainer_detections(tiny_run, synthetic_root, tmp_path, capsys):
    """--data-root ROOT --split test: every test video, rgb and flow joined as the trainer
    joins them; a file of features/test/rgb finds its flow sibling; a lone rgb folder is refused."""
    run, _, _ = tiny_run
    device = str(resolve_device(json.loads((run / "config.json").read_text())["device"]))
    want = json.loads((run / "best_results.json").read_text())["results"]
    out = tmp_path / "dets.json"
    assert main([str(run / "best.pt"), "--data-root", str(synthetic_root), "--split", "test",
                 "--out", str(out), "--device", device]) == 0
    got = json.loads(out.read_text())["results"]
    assert sorted(got) == sorted(want) and len(got) > 100
    _same_detections(got, want)
    one = synthetic_root / "features" / "test" / "rgb" / "video_test_0000007.npy"
    assert main([str(run / "best.pt"), str(one), "--out", str(out), "--device", device]) == 0
    _same_detections(json.loads(out.read_text())["results"], {"video_test_0000007": want["video_test_0000007"]})
    split_dir = tmp_path / "split" / "features" / "test"  # features/test/ itself: both streams
    for m in ("rgb", "flow"):
        (split_dir / m).mkdir(parents=True)
        (split_dir / m / one.name).write_bytes((one.parents[1] / m / one.name).read_bytes())
    assert main([str(run / "best.pt"), str(split_dir), "--out", str(out), "--device", device]) == 0
    _same_detections(json.loads(out.read_text())["results"], {"video_test_0000007": want["video_test_0000007"]})
    lone = tmp_path / "features" / "test" / "rgb"
    lone.mkdir(parents=True)
    (lone / one.name).write_bytes(one.read_bytes())
    capsys.readouterr()
    assert main([str(run / "best.pt"), str(lone)]) == 2
    assert "no sibling folder" in capsys.readouterr().err
    assert main([str(run / "best.pt"), str(one), "--data-root", str(synthetic_root)]) == 2
    assert "one of them" in capsys.readouterr().err


def test_infer_single_file_and_plot(tiny_run, feats_dir, tmp_path, capsys):
    run, _, _ = tiny_run
    d, vids, root = feats_dir
    plots = tmp_path / "plots"
    rc = main([str(run / "best.pt"), str(d / f"{vids[0]}.npy"), "--plot", str(plots), "--gt", str(root / "gt.json")])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["results"]) == [vids[0]]
    png = plots / f"{vids[0]}.png"
    assert png.exists() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_infer_errors(tiny_run, tmp_path, capsys):
    run, _, _ = tiny_run
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 3), np.float32))
    assert main([str(run / "best.pt"), str(bad)]) == 2
    assert "channels" in capsys.readouterr().err
    nan = tmp_path / "nan.npy"
    x = np.zeros((10, 128), np.float32)
    x[3, 5] = np.nan
    np.save(nan, x)
    assert main([str(run / "best.pt"), str(nan)]) == 2
    assert "NaN" in capsys.readouterr().err
    assert main([str(tmp_path / "none.pt"), str(nan)]) == 2
    assert "not found" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main([str(junk), str(nan)]) == 2
    assert "could not be read" in capsys.readouterr().err
