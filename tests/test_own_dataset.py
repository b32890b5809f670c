"""Your own dataset: README's "Your own dataset" example run as it stands in a fresh
folder; the checks at the start (frame rate against gt.json's durations, label typos, test
classes without a training video); re-evaluating a finished run with a corrected frame
rate; infer on the dataset layout."""
import contextlib
import hashlib
import json
import re
import runpy
import shlex
from pathlib import Path

import pytest

from cola_fast.data import SyntheticSpec, VideoDataset, make_synthetic_dataset
from cola_fast.data.checks import classes_without_training, duration_mismatch, label_clashes
from cola_fast.evaluate import main as evaluate_main, reevaluate_run
from cola_fast.infer import main as infer_main
from cola_fast.train import main as train_main, train
from cola_fast.config import get_preset

README = Path(__file__).resolve().parents[1] / "README.md"
MAINS = {"cola_fast.train": train_main, "cola_fast.evaluate": evaluate_main, "cola_fast.infer": infer_main}


def readme_block(marker: str) -> str:
    """The code block after <!-- own-dataset: marker --> in the README."""
    m = re.search(rf"<!-- own-dataset: {re.escape(marker)} -->\n```\w+\n(.*?)```", README.read_text(), re.S)
    assert m, f"README has no block marked {marker!r}"
    return m.group(1)


def readme_quote(after: str) -> list:
    """The lines of the plain ``` block that follows the sentence `after` in the README."""
    text = README.read_text()
    i = text.index(after)
    m = re.compile(r"```\n(.*?)```", re.S).search(text, i)
    return m.group(1).splitlines()


def run(line: str, capsys):
    """One README command, in this process: (exit status, stdout, stderr)."""
    argv = shlex.split(line)
    assert argv[0] == "python", line
    if argv[1] == "-m":
        rc = MAINS[argv[2]](argv[3:])
    else:
        runpy.run_path(argv[1], run_name="__main__")
        rc = 0
    out = capsys.readouterr()
    return rc, out.out, out.err


def hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.relative_to(folder).parts[0].startswith("reeval")}


def make_data(folder: Path) -> Path:
    """The README's dataset, written into folder/my_data."""
    script = folder / "make_my_data.py"
    script.write_text(readme_block("make_my_data.py"))
    with contextlib.chdir(folder):
        runpy.run_path(str(script), run_name="__main__")
    return folder / "my_data"


def test_readme_example_in_a_fresh_folder(tmp_path, monkeypatch, capsys, cache):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "make_my_data.py").write_text(readme_block("make_my_data.py"))
    lines = [ln for ln in readme_block("commands").splitlines() if ln.strip()]
    outputs = {}
    for i, line in enumerate(lines):
        rc, out, err = run(line, capsys)
        assert rc == 0, f"{line}: {err}"
        outputs[i] = out
        if i == 1:  # the run exists: hash its files before evaluate --run
            before = hashes(tmp_path / "runs" / "mine")

    # the header the README quotes
    for quoted in readme_quote("The header of the run says what it read:"):
        assert quoted in outputs[1]
    # the run's config.json leaves out the synthetic fields; its results describe the features neutrally
    config = json.loads((tmp_path / "runs/mine/config.json").read_text())
    assert config["feature_fps"] == 30 and not any(k.startswith("synthetic") for k in config)
    best = json.loads((tmp_path / "runs/mine/best_results.json").read_text())
    assert "I3D" not in best["external_data"]["details"]
    # evaluate --run wrote a new folder and left the run's files as they were
    assert hashes(tmp_path / "runs" / "mine") == before
    (reeval,) = (tmp_path / "runs" / "mine").glob("reeval-*")
    for name in ("config.json", "summary.json", "best_results.json", "last_results.json", "report/index.html"):
        assert (reeval / name).is_file(), name
    # per-class tables: a header row, then the classes in gt.json's "classes" order
    for out in (outputs[2], outputs[4]):
        heads = [ln for ln in out.splitlines() if ln.startswith("class ")]
        assert heads and "0.10" in heads[0] and heads[0].rstrip().endswith("Avg")
        rows = out.splitlines()[out.splitlines().index(heads[-1]) + 1:][:3]
        assert [r.split()[0] for r in rows] == ["Serve", "Dig", "Block"]
    # infer on the layout gives the trainer's detections, and so does the rgb folder with its flow sibling
    dets = json.loads((tmp_path / "dets.json").read_text())["results"]
    assert dets == best["results"] == json.loads((reeval / "best_results.json").read_text())["results"]
    assert infer_main(["runs/mine/best.pt", "my_data/features/test/rgb", "--out", "rgb.json"]) == 0
    assert json.loads((tmp_path / "rgb.json").read_text())["results"] == dets
    assert json.loads((tmp_path / "dets.json").read_text())["external_data"] == best["external_data"]

    # forgetting --set feature_fps=30 stops the run with the README's line
    wrong = lines[1].replace("--set feature_fps=30 ", "").replace("runs/mine", "runs/wrong")
    capsys.readouterr()
    rc, out, err = run(wrong, capsys)
    assert rc == 2 and err.splitlines() == readme_quote("Forgetting `--set feature_fps=30`")
    assert not (tmp_path / "runs/wrong/best.pt").exists()


def test_reevaluation_corrects_a_wrong_frame_rate(tmp_path, capsys, cache):
    """The same weights (the frame rate plays no part in training) evaluated at 30 fps by
    evaluate --run give the mAP of the run trained with 30 fps."""
    data = make_data(tmp_path)
    cfg = get_preset("tiny").replace(data_root=str(data), steps=20, eval_every=10)
    train(cfg.replace(feature_fps=30.0), tmp_path / "right", quiet=True, deterministic=True)
    train(cfg.replace(check_durations=False), tmp_path / "wrong", quiet=True, deterministic=True)
    right = [json.loads(ln) for ln in (tmp_path / "right/metrics.jsonl").read_text().splitlines()]
    right = [r for r in right if r["kind"] == "eval" and r["step"] == 20][0]["average_mAP"]
    wrong = json.loads((tmp_path / "wrong/summary.json").read_text())["best"]["average_mAP"]
    before = hashes(tmp_path / "wrong")
    got = reevaluate_run(tmp_path / "wrong", ["feature_fps=30"], tmp_path / "fixed", say=lambda *a: None)
    assert got["checkpoints"]["last.pt"]["average_mAP"] == right
    assert right > wrong + 0.1
    assert hashes(tmp_path / "wrong") == before
    assert json.loads((tmp_path / "fixed/summary.json").read_text())["changed"] == {"feature_fps": 30.0}
    capsys.readouterr()
    # a training setting is refused in one line; so is a folder already written
    assert evaluate_main(["--run", str(tmp_path / "wrong"), "--set", "lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr is a training setting" in err
    assert evaluate_main(["--run", str(tmp_path / "wrong"), "--out", str(tmp_path / "fixed")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    # --tiou is the run's tiou setting; --resume with a new frame rate points to evaluate --run
    assert evaluate_main(["--run", str(tmp_path / "wrong"), "--tiou", "0.5", "--out", str(tmp_path / "t5")]) == 0
    assert json.loads((tmp_path / "t5/summary.json").read_text())["changed"] == {"tiou": [0.5]}
    capsys.readouterr()
    assert train_main(["--out", str(tmp_path / "wrong"), "--resume", "--set", "feature_fps=30", "--quiet"]) == 0
    assert f"evaluate --run {tmp_path / 'wrong'} --set feature_fps=..." in capsys.readouterr().err
    assert hashes(tmp_path / "wrong") == before


def test_label_typo_refused(tmp_path, capsys, cache):
    data = make_data(tmp_path)
    gt = json.loads((data / "gt.json").read_text())
    del gt["classes"]
    gt["database"]["test005"]["annotations"][0]["label"] = " dig"  # Dig, in lower case, a space before
    (data / "gt.json").write_text(json.dumps(gt))
    rc = train_main(["--preset", "tiny", "--data-root", str(data), "--set", "feature_fps=30",
                     "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "'Dig' and ' dig' differ only in case or spaces" in err and "test005" in err and "train" in err


def test_test_class_without_training_video_warns(tmp_path, capsys, cache):
    data = make_data(tmp_path)
    gt = json.loads((data / "gt.json").read_text())
    gt["classes"].append("Spike")
    gt["database"]["test001"]["annotations"].append({"label": "Spike", "segment": [1.0, 2.0]})
    (data / "gt.json").write_text(json.dumps(gt))
    from cola_fast.data import prepare_data
    _, train_ds, _ = prepare_data(get_preset("tiny").replace(data_root=str(data), feature_fps=30.0), log=print)
    out = capsys.readouterr()
    assert "warning: 1 class with test videos but no training video (the model cannot learn them): Spike" in out.out
    assert "4 classes, in order (gt.json's \"classes\" list): Serve, Dig, Block, Spike" in out.out


def test_duration_check_rule():
    T = {f"v{i}": 100 + i for i in range(9)}
    exact = {v: t * 16 / 30 for v, t in T.items()}
    assert duration_mismatch(T, exact, 30, 16) is None
    assert duration_mismatch(T, {v: d * 1.04 for v, d in exact.items()}, 30, 16) is None
    msg = duration_mismatch(T, {v: d * 1.06 for v, d in exact.items()}, 30, 16)
    assert msg and "feature_fps=30 with snippet_frames=16" in msg and "feature_fps=28.3 would fit" in msg
    # the median: a few odd durations do not decide, videos without one are skipped
    odd = {**exact, "v0": 1.0, "v1": None, "v2": -3}
    assert duration_mismatch(T, odd, 30, 16) is None
    assert duration_mismatch(T, {}, 25, 16) is None
    assert "feature_fps=30 would fit" in duration_mismatch(T, exact, 25, 16)


def test_label_and_class_rules():
    assert label_clashes({"a": ["Run", "Jump"], "b": ["Run"]}) is None
    msg = label_clashes({"a": ["Run"], "b": ["Run"], "c": ["run "]})
    assert "'Run' and 'run '" in msg and "2 videos (a, b)" in msg and "1 video (c)" in msg
    assert "the class list" in label_clashes({"a": ["Run"]}, ["Run", "RUN"])
    assert classes_without_training(["A", "B", "C"], [["A"]], [["A", "C"], ["B"]]) == ["B", "C"]


def test_synthetic_durations_agree_with_their_time_scale(tmp_path):
    """The built-in data's gt.json durations are T x 16 / 25 s, at any time scale: the
    default presets pass the check."""
    for ts in (1.0, 0.5):
        root = make_synthetic_dataset(tmp_path / f"s{ts}", SyntheticSpec(feature_dim=4, time_scale=ts, max_videos=4))
        for split in ("train", "test"):
            ds = VideoDataset(root, split, num_segments=8, preload=False)
            lengths = dict(zip(ds.video_ids, ds.num_snippets))
            assert all(abs(ds.durations[v] - lengths[v] * 16 / 25) < 1e-3 for v in ds.video_ids)
            assert duration_mismatch(lengths, ds.durations, 25, 16, tolerance=1e-4) is None


def test_external_data_comes_from_the_setting():
    cfg = get_preset("tiny")
    assert cfg.external_data()["used"] is False and "synthetic" in cfg.external_data()["details"]
    assert cfg.replace(data_root="d").external_data()["details"].startswith("pre-extracted video features")
    i3d = cfg.replace(data_root="d", external_data_details="I3D features (rgb + flow)")
    assert i3d.external_data() == {"used": True, "details": "I3D features (rgb + flow)"}
    assert "synthetic_seed" in cfg.recorded() and "synthetic_seed" not in i3d.recorded()
