"""Every command-line tool (train, infer, evaluate, data.convert_wtalc, data.probe) over
a table of bad inputs: each gives exactly one line on stderr, exit status 2, and no
traceback. The table runs in-process (fast); a few rows run again as real
`python -m` processes.

Each row: (id, tool, build(ctx) -> argv, a piece of the expected message)."""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cola_fast.data import SyntheticSpec, make_synthetic_dataset
from cola_fast.data.convert_wtalc import main as convert_main
from cola_fast.data.probe import main as probe_main
from cola_fast.evaluate import main as evaluate_main
from cola_fast.infer import main as infer_main
from cola_fast.run import RunFolder
from cola_fast.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
MAINS = {"train": train_main, "infer": infer_main, "evaluate": evaluate_main, "convert_wtalc": convert_main,
         "probe": probe_main}
MODULES = {"train": "cola_fast.train", "infer": "cola_fast.infer", "evaluate": "cola_fast.evaluate",
           "convert_wtalc": "cola_fast.data.convert_wtalc", "probe": "cola_fast.data.probe"}


class Ctx:
    """Inputs the rows build on: a small dataset, a finished small run, a trained
    checkpoint, and a fresh folder per row."""

    def __init__(self, base: Path, data: Path, run: Path, ckpt: Path):
        self.base, self.data, self.run, self.ckpt = base, data, run, ckpt
        self.tmp = base  # replaced per row

    def train(self, *args, out=None):
        return ["--preset", "tiny", "--data-root", str(self.data), "--steps", "2", "--eval-every", "2",
                "--quiet", "--out", str(out or self.tmp / "out"), *args]

    def data_variant(self, edit):
        """A copy of the dataset (features linked) after edit(root)."""
        root = self.tmp / "data"
        root.mkdir()
        (root / "features").symlink_to(self.data / "features")
        for f in ("gt.json", "split_train.txt", "split_test.txt"):
            shutil.copy(self.data / f, root / f)
        edit(root)
        return root

    def huge_features_data(self):
        """A copy of the dataset whose features reach 3e38 (finite float32)."""
        root = self.tmp / "huge"
        shutil.copytree(self.data, root)
        for f in (root / "features").rglob("*.npy"):
            x = np.load(f)
            np.save(f, (x / max(float(np.abs(x).max()), 1e-30) * 3e38).astype(np.float32))
        return root

    def run_copy(self, edit=None):
        """A copy of the finished run, last.pt edited (edit(state) -> new state, or bytes)."""
        run = self.tmp / "run"
        shutil.copytree(self.run, run)
        if edit is not None:
            new = edit(torch.load(run / "last.pt", weights_only=True))
            if isinstance(new, bytes):
                (run / "last.pt").write_bytes(new)
            else:
                torch.save(new, run / "last.pt")
        return run

    def ckpt_variant(self, edit):
        path = self.tmp / "model.pt"
        torch.save(edit(torch.load(self.ckpt, weights_only=True)), path)
        return str(path)

    def feats(self, x, name="v.npy"):
        path = self.tmp / name
        np.save(path, x)
        return str(path)

    def good_feats(self):
        return self.feats(np.zeros((10, 16), np.float32))


# --------------------------------------------------------------------------------------
# the rows
# --------------------------------------------------------------------------------------
def _gt_edit(fn):
    def edit(root):
        gt = json.loads((root / "gt.json").read_text())
        fn(gt, (root / "split_test.txt").read_text().split())
        (root / "gt.json").write_text(json.dumps(gt))
    return edit


def _test_subset_renamed(gt, test_ids):
    for v in test_ids:
        gt["database"][v]["subset"] = "validation"


def _test_without_annotations(gt, test_ids):
    for v in test_ids:
        gt["database"][v]["annotations"] = []


def _escaping_id(root):
    (root / "split_train.txt").write_text("../../../x\n")


def _set(state, **kw):
    state.update(kw)
    return state


def _without(state, key):
    del state[key]
    return state


def _config(state, **kw):
    state["config"].update(kw)
    return state


def _shrunk_weights(state):
    state["model"]["embed_weight"] = state["model"]["embed_weight"][:4]
    return state


TRAIN = [
    ("r_easy_zero", lambda c: c.train("--set", "r_easy=0"), "r_easy"),
    ("r_hard_too_big", lambda c: c.train("--set", "r_hard=1000"), "r_hard"),
    ("device_foo", lambda c: c.train("--set", "device=foo"), "device"),
    ("device_missing_gpu", lambda c: c.train("--device", "cuda:7"), "cuda:7"),
    ("tiou_2", lambda c: c.train("--set", "tiou=2"), "tiou"),
    ("tiou_not_number", lambda c: c.train("--set", "tiou=0.5,x"), "tiou"),
    ("eval_impl_foo", lambda c: c.train("--set", "eval_impl=foo"), "eval_impl"),
    ("proposals_foo", lambda c: c.train("--set", "proposals=foo"), "proposals"),
    ("data_on_device_maybe", lambda c: c.train("--set", "data_on_device=maybe"), "data_on_device"),
    ("threads_negative", lambda c: c.train("--set", "threads=-1"), "threads"),
    ("plot_videos_negative", lambda c: c.train("--set", "plot_videos=-3"), "plot_videos"),
    ("lambda_snico_inf", lambda c: c.train("--set", "lambda_snico=inf"), "lambda_snico"),
    ("lr_nan", lambda c: c.train("--set", "lr=nan"), "lr"),
    ("lr_zero", lambda c: c.train("--lr", "0"), "lr"),
    ("tau_negative", lambda c: c.train("--set", "tau=-1"), "tau"),
    ("dropout_one", lambda c: c.train("--set", "dropout=1"), "dropout"),
    ("embed_kernel_even", lambda c: c.train("--set", "embed_kernel=2"), "embed_kernel"),
    ("m_not_below_M", lambda c: c.train("--set", "m=6"), "m=6"),
    ("classifier_foo", lambda c: c.train("--set", "classifier=foo"), "classifier"),
    ("amp_fp8", lambda c: c.train("--set", "amp=fp8"), "amp"),
    ("modality_foo", lambda c: c.train("--set", "modality=foo"), "modality"),
    ("seed_negative", lambda c: c.train("--seed", "-1"), "seed"),
    ("unknown_field", lambda c: c.train("--set", "bogus=1"), "unknown config field"),
    ("set_without_equals", lambda c: c.train("--set", "lr"), "field=value"),
    ("unknown_preset", lambda c: ["--preset", "nope", "--out", str(c.tmp / "o")], "unknown preset"),
    ("steps_not_int", lambda c: c.train("--steps", "x"), "--steps"),
    ("batch_size_zero", lambda c: c.train("--batch-size", "0"), "batch_size"),
    ("num_segments_too_small", lambda c: c.train("--num-segments", "10"), "too small"),
    ("seeds_not_ints", lambda c: c.train("--seeds", "a,b"), "--seeds"),
    ("seeds_repeated", lambda c: c.train("--seeds", "1,1"), "--seeds"),
    ("resume_and_overwrite", lambda c: c.train("--resume", "--overwrite"), "exclude"),
    ("data_root_missing", lambda c: c.train("--set", f"data_root={c.tmp / 'nowhere'}"), "nowhere"),
    ("video_id_escapes_root", lambda c: c.train("--set", f"data_root={c.data_variant(_escaping_id)}"),
     "not a plain file name"),
    ("gt_test_subset_not_test",
     lambda c: c.train("--set", f"data_root={c.data_variant(_gt_edit(_test_subset_renamed))}"), 'subset "test"'),
    ("test_split_without_annotations",
     lambda c: c.train("--set", f"data_root={c.data_variant(_gt_edit(_test_without_annotations))}"),
     "no video of split_test.txt has an annotation"),
    ("diverging_lr", lambda c: c.train("--set", "lr=1e30"), "crash.pt"),
    ("diverging_features_3e38", lambda c: c.train("--set", f"data_root={c.huge_features_data()}",
                                                  "--steps", "10"), "crash.pt"),
    ("out_under_a_file", lambda c: c.train(out=c.feats(np.zeros(1)) + "/run"), "cannot create the run folder"),
    ("out_is_a_file", lambda c: c.train(out=c.feats(np.zeros(1))), "cannot create the run folder"),
    ("out_not_empty_not_a_run", lambda c: c.train(out=Path(c.good_feats()).parent), "holds no cola_fast run"),
    ("out_holds_a_run", lambda c: c.train(out=c.run_copy()), "add --resume"),
    ("resume_truncated_last", lambda c: c.train("--resume", out=c.run_copy(
        lambda s: (c.run / "last.pt").read_bytes()[:5000])), "last.pt: not a readable checkpoint"),
    ("resume_empty_last", lambda c: c.train("--resume", out=c.run_copy(lambda s: b"")), "last.pt"),
    ("resume_other_file", lambda c: c.train("--resume", out=c.run_copy(lambda s: b"PK\x03\x04 not torch")),
     "last.pt"),
    ("resume_bare_tensor", lambda c: c.train("--resume", out=c.run_copy(lambda s: torch.zeros(3))),
     "expected a cola_fast checkpoint"),
    ("resume_unknown_config_field", lambda c: c.train("--resume", out=c.run_copy(
        lambda s: _config(s, bogus=1))), "unknown config field"),
    ("resume_bad_config_value", lambda c: c.train("--resume", out=c.run_copy(
        lambda s: _config(s, tiou=[5.0]))), "tiou"),
    ("resume_no_optimizer", lambda c: c.train("--resume", out=c.run_copy(lambda s: _without(s, "optimizer"))),
     "optimizer"),
    ("resume_bad_step", lambda c: c.train("--resume", out=c.run_copy(lambda s: _set(s, step=-4))), "step"),
    ("resume_wrong_weights", lambda c: c.train("--resume", out=c.run_copy(_shrunk_weights)), "do not fit"),
]

INFER = [
    ("ckpt_missing", lambda c: [str(c.tmp / "none.pt"), c.good_feats()], "not found"),
    ("ckpt_junk", lambda c: [_junk(c), c.good_feats()], "could not be read"),
    ("ckpt_bare_tensor", lambda c: [c.ckpt_variant(lambda s: torch.zeros(3)), c.good_feats()], "Tensor"),
    ("ckpt_int", lambda c: [c.ckpt_variant(lambda s: 7), c.good_feats()], "int"),
    ("ckpt_config_not_dict", lambda c: [c.ckpt_variant(lambda s: _set(s, config=[1, 2])), c.good_feats()],
     "config: expected a JSON object"),
    ("ckpt_config_unknown_key", lambda c: [c.ckpt_variant(lambda s: _config(s, bogus=1)), c.good_feats()],
     "unknown config field"),
    ("ckpt_no_model", lambda c: [c.ckpt_variant(lambda s: _without(s, "model")), c.good_feats()], "'model'"),
    ("ckpt_wrong_weights", lambda c: [c.ckpt_variant(_shrunk_weights), c.good_feats()], "do not fit"),
    ("ckpt_bad_feature_dim", lambda c: [c.ckpt_variant(lambda s: _set(s, feature_dim="x")), c.good_feats()],
     "feature_dim"),
    ("features_unicode", lambda c: [str(c.ckpt), c.feats(np.full((10, 16), "a"))], "real numbers"),
    ("features_complex", lambda c: [str(c.ckpt), c.feats(np.zeros((10, 16), np.complex64))], "real numbers"),
    ("features_bool", lambda c: [str(c.ckpt), c.feats(np.zeros((10, 16), bool))], "real numbers"),
    ("features_nan", lambda c: [str(c.ckpt), c.feats(np.full((10, 16), np.nan, np.float32))], "NaN"),
    ("features_1d", lambda c: [str(c.ckpt), c.feats(np.zeros(16, np.float32))], "2-D"),
    ("features_no_snippets", lambda c: [str(c.ckpt), c.feats(np.zeros((0, 16), np.float32))], "empty"),
    ("features_wrong_width", lambda c: [str(c.ckpt), c.feats(np.zeros((10, 3), np.float32))], "channels"),
    ("features_object_array", lambda c: [str(c.ckpt), c.feats(np.array([None, 1], dtype=object))], "v.npy"),
    ("features_missing", lambda c: [str(c.ckpt), str(c.tmp / "none.npy")], "no such file"),
    ("features_empty_folder", lambda c: [str(c.ckpt), str(c.tmp)], "no .npy files"),
    ("device_bogus", lambda c: [str(c.ckpt), c.good_feats(), "--device", "bogus"], "device"),
    ("out_is_a_folder", lambda c: [str(c.ckpt), c.good_feats(), "--out", str(c.tmp)], "is a folder"),
    ("plot_is_a_file", lambda c: [str(c.ckpt), c.good_feats(), "--plot", c.good_feats()], "not a folder"),
    ("gt_missing", lambda c: [str(c.ckpt), c.good_feats(), "--gt", str(c.tmp / "gt.json")], "gt.json"),
    ("non_utf8_name_plot", lambda c: [str(c.ckpt), c.feats(np.zeros((10, 16), np.float32),
                                                           os.fsdecode(b"v\xff.npy")),
                                      "--plot", str(c.tmp / "plots")], "UTF-8"),
]


def _junk(c):
    path = c.tmp / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    return str(path)


def _gz(c, text: bytes, name="res.json.gz"):
    path = c.tmp / name
    path.write_bytes(gzip.compress(text)[:-12] if name.endswith(".gz") else text)
    return str(path)


def _gt(c):
    return str(c.data / "gt.json")


EVALUATE = [
    ("results_truncated_gz", lambda c: [_gz(c, b'{"results": {}}' * 50), "--gt", _gt(c)], "cannot read"),
    ("results_missing", lambda c: [str(c.tmp / "none.json"), "--gt", _gt(c)], "not found"),
    ("results_not_json", lambda c: [_gz(c, b"{nope", "r.json"), "--gt", _gt(c)], "not valid JSON"),
    ("results_wrong_shape", lambda c: [_gz(c, b"[1, 2]", "r.json"), "--gt", _gt(c)], "results"),
    ("gt_not_json", lambda c: [_gz(c, b'{"results": {}}', "r.json"), "--gt", _gz(c, b"\xff\xfe", "g.json")],
     "g.json"),
    ("gt_is_folder", lambda c: [_gz(c, b'{"results": {}}', "r.json"), "--gt", str(c.tmp)], "directory"),
    ("tiou_bad", lambda c: [_gz(c, b'{"results": {}}', "r.json"), "--gt", _gt(c), "--tiou", "x"], "--tiou"),
    ("subset_unknown", lambda c: [_gz(c, b'{"results": {}}', "r.json"), "--gt", _gt(c), "--subset", "nope"],
     "nope"),
    ("impl_bad", lambda c: [_gz(c, b'{"results": {}}', "r.json"), "--gt", _gt(c), "--impl", "x"], "--impl"),
    ("gt_flag_missing", lambda c: [_gz(c, b'{"results": {}}', "r.json")], "--gt"),
]


def _wtalc(c, names=None, pickle=True, out=None):
    from test_data_wtalc import write_wtalc
    f, a = write_wtalc(c.data, c.tmp / "wt")
    if names is not None:
        vids = np.load(a / "videoname.npy")
        vids[: len(names)] = names
        np.save(a / "videoname.npy", np.array(list(vids), dtype=object), allow_pickle=True)
    return [str(f), str(a), str(out or c.tmp / "converted")] + (["--allow-pickle"] if pickle else [])


CONVERT = [
    ("no_allow_pickle", lambda c: _wtalc(c, pickle=False), "--allow-pickle"),
    ("name_escapes_out_root", lambda c: _wtalc(c, names=[b"../../escaped"]), "not a plain file name"),
    ("name_absolute", lambda c: _wtalc(c, names=[b"/tmp/abs"]), "not a plain file name"),
    ("name_not_utf8", lambda c: _wtalc(c, names=[b"v\xff"]), "UTF-8"),
    ("out_root_not_empty", lambda c: _wtalc(c, out=Path(c.good_feats()).parent), "not empty"),
    ("annotations_missing", lambda c: [c.good_feats(), str(c.tmp / "none"), str(c.tmp / "o"), "--allow-pickle"],
     "not found"),
    ("features_not_wtalc", lambda c: [c.good_feats(), str(_wtalc(c)[1]), str(c.tmp / "o"), "--allow-pickle"],
     "1-D object array"),
]

PROBE = [
    ("root_missing", lambda c: [str(c.tmp / "nowhere")], "nowhere"),
    ("video_id_escapes_root", lambda c: [str(c.data_variant(_escaping_id))], "not a plain file name"),
    ("steps_zero", lambda c: [str(c.data), "--steps", "0"], "--steps"),
]

ROWS = ([("train",) + r for r in TRAIN] + [("infer",) + r for r in INFER]
        + [("evaluate",) + r for r in EVALUATE] + [("convert_wtalc",) + r for r in CONVERT]
        + [("probe",) + r for r in PROBE])


@pytest.fixture(scope="module")
def ctx(tiny_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli_errors")
    data = make_synthetic_dataset(base / "data", SyntheticSpec(feature_dim=8, time_scale=0.2, max_videos=12))
    run = base / "run"
    assert train_main(["--preset", "tiny", "--data-root", str(data), "--steps", "2", "--eval-every", "2",
                       "--quiet", "--out", str(run)]) == 0
    return Ctx(base, data, run, tiny_run[0] / "best.pt")


def _check_one_line(rc, err, expect, where):
    lines = err.splitlines()
    assert rc == 2, f"{where}: exit status {rc}, stderr {err!r}"
    assert len(lines) == 1, f"{where}: {len(lines)} lines on stderr: {err!r}"
    assert "Traceback" not in err
    assert expect in lines[0], f"{where}: {expect!r} not in {lines[0]!r}"


@pytest.mark.parametrize("tool,name,build,expect", ROWS, ids=[f"{r[0]}-{r[1]}" for r in ROWS])
def test_bad_input_is_one_line_exit_2(tool, name, build, expect, ctx, tmp_path, capsys):
    ctx.tmp = tmp_path
    argv = build(ctx)
    capsys.readouterr()
    try:
        rc = MAINS[tool](argv)
    except SystemExit as e:  # argparse usage errors exit from inside
        rc = e.code
    _check_one_line(rc, capsys.readouterr().err, expect, f"{tool} {name}")


def test_bad_inputs_leave_nothing_behind(ctx, tmp_path, capsys):
    """A refused setting creates no folder; a refused run folder is left as it was."""
    ctx.tmp = tmp_path
    assert train_main(ctx.train("--set", "tiou=2")) == 2
    assert not (tmp_path / "out").exists()
    run = ctx.run_copy()
    before = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()}
    assert train_main(ctx.train(out=run)) == 2
    assert {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()} == before


def test_diverging_run_saves_crash_pt(ctx, tmp_path, capsys):
    """The loss going non-finite (here BCE refusing NaN scores) saves crash.pt and says so."""
    ctx.tmp = tmp_path
    assert train_main(ctx.train("--set", "lr=1e30")) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "crash.pt" in err
    state = torch.load(tmp_path / "out" / "crash.pt", weights_only=True)
    assert state["step"] >= 0 and "model" in state
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    """--set backend=triton on a CPU (no interpreter): refused before any work."""
    from cola_fast.train import check_backend
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend=triton"):
        check_backend("triton", torch.device("cpu"))


def test_folder_in_use_is_one_line(ctx, tmp_path, capsys):
    held = RunFolder(tmp_path / "busy")
    held.open("new")
    try:
        ctx.tmp = tmp_path
        rc = train_main(ctx.train(out=tmp_path / "busy"))
    finally:
        held.close()
    _check_one_line(rc, capsys.readouterr().err, "in use by another trainer", "train busy folder")


SUBPROCESS_ROWS = ["train-out_holds_a_run", "train-steps_not_int", "infer-features_complex",
                   "evaluate-results_truncated_gz", "convert_wtalc-name_escapes_out_root"]


@pytest.mark.parametrize("row", SUBPROCESS_ROWS)
def test_bad_input_as_a_process(row, ctx, tmp_path, cache):
    """The same rows through `python -m`: the real exit status and the whole stderr."""
    tool, name, build, expect = next(r for r in ROWS if f"{r[0]}-{r[1]}" == row)
    ctx.tmp = tmp_path
    argv = build(ctx)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               COLA_FAST_CACHE=str(cache))
    r = subprocess.run([sys.executable, "-m", MODULES[tool], *argv], env=env, capture_output=True,
                       text=True, timeout=300)
    _check_one_line(r.returncode, r.stderr, expect, row)


def test_every_preset_passes_validation():
    """The checks refuse bad settings, never a preset's own."""
    from cola_fast.config import PRESETS, get_preset
    for name in PRESETS:
        get_preset(name).validate(name)
