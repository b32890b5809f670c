"""The reading boundary (cola_fast/inputs.py) under generated malformed inputs (Hypothesis).

For every input kind a command reads (results and ground truth in evaluate; --config,
gt.json and split files in train; features and checkpoints in infer; the W-TALC arrays in
convert_wtalc) a valid file is mutated: a wrong type at any level, a missing or an extra
key, NaN/inf, huge or negative numbers, empty strings, deep nesting, non-UTF-8 bytes,
empty and truncated files. Each must give exit status 2 and one line naming the file,
no traceback, and nothing written. autotune.json keeps its tolerance (a warning, read as
empty) and metrics.jsonl drops only a torn last line.

Example counts are bounded (EXAMPLES) and derandomized: the same examples on every run.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cola_fast import inputs
from cola_fast.data import SyntheticSpec, make_synthetic_dataset
from cola_fast.data.convert_wtalc import main as convert_main
from cola_fast.evaluate import main as evaluate_main
from cola_fast.infer import main as infer_main
from cola_fast.run import RunFolder
from cola_fast.train import main as train_main

EXAMPLES = 12  # per input kind and mutation family; the whole file stays within ~20 s on 2 workers
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# --------------------------------------------------------------------------------------
# mutations of a JSON document (only at paths the document's schema checks)
# --------------------------------------------------------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000
WRONG = {  # a value of another JSON type than the slot's, never a number written as a string
    str: [None, True, 7, -1.5, [], {}, ["x"]],
    float: [None, False, "", "x", "1,2", [], {}, float("nan"), float("inf"), -float("inf")],
    int: [None, True, "", "x", [], {}, float("nan"), 1.5],
    list: [None, False, 3, "", "x", {}, {"a": 1}],
    dict: [None, True, 3, "", "x", [], [1, 2]],
}


def _paths(doc, path=()):
    """Every path of a document (a key or an index at each step)."""
    yield path
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield from _paths(v, path + (k,))


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def _replaced(doc, path, value):
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


def _slot(v):
    return bool if isinstance(v, bool) else int if isinstance(v, int) else type(v)


@st.composite
def wrong_type(draw, doc, skip=()):
    """doc with the value at one path replaced by a value of another type."""
    paths = [p for p in _paths(doc) if not any(p[:len(s)] == s for s in skip)]  # () : the whole document
    path = draw(st.sampled_from(paths))
    value = draw(st.sampled_from(WRONG[_slot(_get(doc, path))]))
    return _replaced(doc, path, value)


@st.composite
def missing_key(draw, doc, required):
    """doc with one required key (a path whose last step is that key's name) removed."""
    paths = [p for p in _paths(doc) if p and p[-1] in required and isinstance(_get(doc, p[:-1]), dict)]
    path = draw(st.sampled_from(paths))
    doc = json.loads(json.dumps(doc))
    del _get(doc, path[:-1])[path[-1]]
    return doc


def text_variants(text: str):
    """Broken bytes of a valid document: empty, truncated, a non-UTF-8 byte, deep nesting."""
    raw = text.encode()
    return st.one_of(
        st.just(b""), st.just(b"   \n"),
        st.integers(1, len(raw) - 1).map(lambda k: raw[:k]),
        st.tuples(st.integers(0, len(raw)), st.sampled_from([b"\xff", b"\xc3", b"\x80\x80", b"\xed\xa0\x80"]))
        .map(lambda t: raw[:t[0]] + t[1] + raw[t[0]:]),
        st.just(DEEP.encode()), st.just(('{"results": ' + DEEP + "}").encode()))


# --------------------------------------------------------------------------------------
# running a command: one line, exit 2, the file named, nothing written
# --------------------------------------------------------------------------------------
def _run(main, argv, capsys):
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def _refused(main, argv, capsys, names, out=None):
    rc, err = _run(main, argv, capsys)
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, f"{argv}: exit {rc}, stderr {err!r}"
    assert any(str(n) in lines[0] for n in names), f"{names} not named in {lines[0]!r}"
    if out is not None:
        assert not Path(out).exists(), f"{out} was written"
    return lines[0]


@pytest.fixture(scope="module")
def env(tiny_run, tmp_path_factory):
    """A small dataset (gt, splits, features), a trained checkpoint and its features, a
    small valid results file and ground truth, and a folder per example."""
    base = tmp_path_factory.mktemp("fuzz")
    data = make_synthetic_dataset(base / "data", SyntheticSpec(feature_dim=8, time_scale=0.2, max_videos=8))
    ckpt = tiny_run[0] / "best.pt"
    state = torch.load(ckpt, weights_only=True)
    feats = base / "v.npy"
    np.save(feats, np.zeros((12, state["feature_dim"]), np.float32))
    gt = {"database": {"v1": {"subset": "test", "annotations": [
        {"label": "Jump", "segment": [1.0, 4.5]}, {"label": "Run", "segment": ["2", "3"]}]},
        "v2": {"subset": "test", "annotations": [{"label": "Run", "segment": [0, 2]}]}}}
    res = {"results": {"v1": [{"label": "Jump", "score": 0.9, "segment": [1.0, 4.0]},
                              {"label": "Run", "score": 0.2, "segment": [2.5, 3.0]}],
                       "v2": [{"label": "Run", "score": 0.5, "segment": [0.0, 1.0]}]}}
    (base / "gt.json").write_text(json.dumps(gt))
    (base / "res.json").write_text(json.dumps(res))
    return dict(base=base, data=data, ckpt=ckpt, state=state, feats=feats, gt=gt, res=res, n=[0])


def _fresh(env) -> Path:
    env["n"][0] += 1
    d = env["base"] / f"ex{env['n'][0]}"
    d.mkdir()
    return d


def _write(path: Path, doc_or_bytes) -> str:
    path.write_bytes(doc_or_bytes if isinstance(doc_or_bytes, bytes) else json.dumps(doc_or_bytes).encode())
    return str(path)


# --------------------------------------------------------------------------------------
# results and ground truth (evaluate)
# --------------------------------------------------------------------------------------
RESULTS_DOC = {"results": {"v1": [{"label": "Jump", "score": 0.9, "segment": [1.0, 4.0]}]}}
GT_DOC = {"database": {"v1": {"subset": "test", "annotations": [{"label": "Jump", "segment": [1.0, 4.5]}]}}}


def _evaluate_results(env, capsys, bad):
    d = _fresh(env)
    path = _write(d / "r.json", bad)
    _refused(evaluate_main, [path, "--gt", str(env["base"] / "gt.json"), "--report", str(d / "rep")],
             capsys, [path], out=d / "rep")


def _evaluate_gt(env, capsys, bad):
    d = _fresh(env)
    path = _write(d / "g.json", bad)
    _refused(evaluate_main, [str(env["base"] / "res.json"), "--gt", path, "--report", str(d / "rep")],
             capsys, [path], out=d / "rep")


@FUZZ
@given(bad=st.one_of(wrong_type(RESULTS_DOC), missing_key(RESULTS_DOC, {"results", "label", "score", "segment"})))
def test_results_wrong_type_or_missing_key(env, capsys, bad):
    _evaluate_results(env, capsys, bad)


@FUZZ
@given(bad=text_variants(json.dumps(RESULTS_DOC)))
def test_results_broken_bytes(env, capsys, bad):
    _evaluate_results(env, capsys, bad)


@FUZZ
@given(bad=st.one_of(wrong_type(GT_DOC), missing_key(GT_DOC, {"database", "subset", "annotations", "label",
                                                                "segment"})))
def test_gt_wrong_type_or_missing_key(env, capsys, bad):
    _evaluate_gt(env, capsys, bad)


@FUZZ
@given(bad=text_variants(json.dumps(GT_DOC)))
def test_gt_broken_bytes(env, capsys, bad):
    _evaluate_gt(env, capsys, bad)


@FUZZ
@given(start=st.floats(-1e300, 1e300), gap=st.floats(1e-6, 1e300))
def test_gt_segment_end_before_start(env, capsys, start, gap):
    bad = _replaced(GT_DOC, ("database", "v1", "annotations", 0, "segment"), [start + gap, start])
    if bad["database"]["v1"]["annotations"][0]["segment"][0] > start:  # not equal after rounding
        _evaluate_gt(env, capsys, bad)


# --------------------------------------------------------------------------------------
# --config, gt.json and split files of a dataset (train: refused before the run folder)
# --------------------------------------------------------------------------------------
CONFIG_DOC = {"steps": 2, "lr": 0.001, "num_segments": 64, "modality": "all", "tiou": [0.3, 0.5]}
BAD_NUMBERS = {"steps": [-1, 0, 10 ** 30], "lr": [-1.0, 0.0, float("inf"), float("nan")],
               "num_segments": [-5, 0, 1.0e12], "tiou": [[], [2.0], [-0.1], [0.5] * 1001]}


def _train_refused(env, capsys, argv, names, out):
    _refused(train_main, ["--preset", "tiny", "--quiet", "--out", str(out), *argv],
             capsys, names, out=out)


@FUZZ
@given(bad=st.one_of(
    wrong_type(CONFIG_DOC),
    st.sampled_from(sorted(BAD_NUMBERS)).flatmap(
        lambda k: st.sampled_from(BAD_NUMBERS[k]).map(lambda v: _replaced(CONFIG_DOC, (k,), v))),
    st.text(min_size=1, max_size=8).filter(lambda k: k not in CONFIG_DOC).map(
        lambda k: {**CONFIG_DOC, k: 1}),
    text_variants(json.dumps(CONFIG_DOC))))
def test_config_file(env, capsys, bad):
    d = _fresh(env)
    path = _write(d / "c.json", bad)
    _train_refused(env, capsys, ["--config", path], [path], d / "out")


KEEP = object()


def _dataset(env, d: Path, gt=KEEP, split=None) -> Path:
    """A copy of the dataset (features linked) with gt.json or split_train.txt replaced."""
    root = d / "data"
    root.mkdir()
    (root / "features").symlink_to(env["data"] / "features")
    for f in ("gt.json", "split_train.txt", "split_test.txt"):
        (root / f).write_bytes((env["data"] / f).read_bytes())
    if gt is not KEEP:
        _write(root / "gt.json", gt)
    if split is not None:
        (root / "split_train.txt").write_bytes(split)
    return root


@FUZZ
@given(data=st.data())
def test_dataset_gt(env, capsys, data):
    doc = json.loads((env["data"] / "gt.json").read_text())
    vid = sorted(doc["database"])[0]
    small = {"database": {vid: doc["database"][vid]}}
    bad = data.draw(st.one_of(wrong_type(small), missing_key(small, {"database", "subset", "annotations"}),
                              text_variants(json.dumps(doc))))
    if isinstance(bad, dict) and "database" in bad and isinstance(bad["database"], dict):
        bad["database"].update({k: v for k, v in doc["database"].items() if k != vid})  # the other videos
    d = _fresh(env)
    root = _dataset(env, d, gt=bad)
    _train_refused(env, capsys, ["--data-root", str(root)], [root / "gt.json"], d / "out")


@FUZZ
@given(bad=st.one_of(
    st.just(b""), st.just(b"\n \n"),
    st.binary(min_size=1, max_size=20).map(lambda b: b"\xff" + b),
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
            min_size=1, max_size=12).filter(lambda t: t.strip()).map(lambda t: ("no_such_video_" + t).encode()),
    st.sampled_from([b"../etc/passwd", b"a/b", b"/abs"])))
def test_split_file(env, capsys, bad):
    d = _fresh(env)
    root = _dataset(env, d, split=bad)
    _train_refused(env, capsys, ["--data-root", str(root)], [root / "split_train.txt", root / "gt.json"], d / "out")


# --------------------------------------------------------------------------------------
# features and checkpoints (infer)
# --------------------------------------------------------------------------------------
def _arrays(width):
    return st.sampled_from([
        np.zeros(width, np.float32), np.zeros((2, 3, width), np.float32), np.float32(3.0),
        np.zeros((0, width), np.float32), np.zeros((5, 0), np.float32), np.zeros((5, width + 1), np.float32),
        np.full((5, width), np.nan, np.float32), np.full((5, width), np.inf, np.float32),
        np.zeros((5, width), bool), np.zeros((5, width), np.complex64), np.full((5, width), "a"),
        np.array([None, 1], dtype=object)])


@FUZZ
@given(data=st.data())
def test_features(env, capsys, data):
    d = _fresh(env)
    path = d / "v.npy"
    kind = data.draw(st.sampled_from(["array", "bytes"]))
    if kind == "array":
        np.save(path, data.draw(_arrays(env["state"]["feature_dim"])))
    else:
        raw = env["feats"].read_bytes()
        path.write_bytes(data.draw(st.one_of(st.integers(0, len(raw) - 1).map(lambda k: raw[:k]),
                                             st.binary(max_size=64))))
    _refused(infer_main, [str(env["ckpt"]), str(path), "--out", str(d / "o.json")], capsys, [path], out=d / "o.json")


CKPT_WRONG = {"model": [None, [1], "x", {"embed_weight": 3}], "config": [None, [1, 2], "x", {"steps": "x"}],
              "class_names": [None, [], [1], "abc", [""]], "feature_dim": [None, -1, 0, "x", True, 2.5, 10 ** 9]}


@FUZZ
@given(data=st.data())
def test_checkpoint(env, capsys, data):
    d = _fresh(env)
    path = d / "c.pt"
    kind = data.draw(st.sampled_from(["wrong", "missing", "bytes", "object"]))
    state = dict(env["state"])
    if kind == "wrong":
        key = data.draw(st.sampled_from(sorted(CKPT_WRONG)))
        state[key] = data.draw(st.sampled_from(CKPT_WRONG[key]))
        torch.save(state, path)
    elif kind == "missing":
        del state[data.draw(st.sampled_from(sorted(CKPT_WRONG)))]
        torch.save(state, path)
    elif kind == "object":
        torch.save(data.draw(st.sampled_from([7, "x", [1, 2], torch.zeros(3), None])), path)
    else:
        raw = env["ckpt"].read_bytes()
        path.write_bytes(data.draw(st.one_of(st.integers(0, len(raw) - 1).map(lambda k: raw[:k]),
                                             st.binary(max_size=64))))
    _refused(infer_main, [str(path), str(env["feats"]), "--out", str(d / "o.json")], capsys, [path],
             out=d / "o.json")


# --------------------------------------------------------------------------------------
# the W-TALC arrays (convert_wtalc)
# --------------------------------------------------------------------------------------
def _wtalc(d: Path, names, feats):
    ann = d / "ann"
    ann.mkdir()
    v = len(names)
    np.save(ann / "videoname.npy", np.array(names, dtype=object), allow_pickle=True)
    np.save(ann / "subset.npy", np.array(["validation"] * v, dtype=object), allow_pickle=True)
    segs = np.empty(v, dtype=object)
    labs = np.empty(v, dtype=object)
    for i in range(v):
        segs[i], labs[i] = [[0.5, 1.5]], ["Jump"]
    np.save(ann / "segments.npy", segs, allow_pickle=True)
    np.save(ann / "labels.npy", labs, allow_pickle=True)
    np.save(ann / "classlist.npy", np.array(["Jump"], dtype=object), allow_pickle=True)
    np.save(d / "f.npy", feats, allow_pickle=True)
    return ann


@FUZZ
@given(data=st.data())
def test_wtalc(env, capsys, data):
    d = _fresh(env)
    good = np.empty(2, dtype=object)
    good[0], good[1] = np.zeros((4, 6), np.float32), np.zeros((3, 6), np.float32)
    ann = _wtalc(d, ["a", "b"], good)
    target = data.draw(st.sampled_from(["f.npy", "ann/videoname.npy", "ann/segments.npy", "ann/labels.npy",
                                        "ann/classlist.npy"]))
    raw = (d / target).read_bytes()
    bad = data.draw(st.one_of(st.integers(0, len(raw) - 1).map(lambda k: raw[:k]), st.binary(max_size=32),
                              st.sampled_from(["scalar", "nan"])))
    if bad == "scalar":
        np.save(d / target, np.array(3.0))
    elif bad == "nan":
        f = np.empty(2, dtype=object)
        f[0], f[1] = np.full((4, 6), np.nan, np.float32), np.zeros((3, 6), np.float32)
        np.save(d / "f.npy", f, allow_pickle=True)
        target = "f.npy"
    else:
        (d / target).write_bytes(bad)
    out = d / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _refused(convert_main, [str(d / "f.npy"), str(ann), str(out), "--allow-pickle"], capsys,
                 [d / target, ann], out=out)


# --------------------------------------------------------------------------------------
# the deliberate tolerances: autotune.json, a torn last line of metrics.jsonl
# --------------------------------------------------------------------------------------
@FUZZ
@given(bad=st.one_of(text_variants('{"format": "cola_fast-autotune", "version": 1, "decisions": {}}'),
                     st.binary(max_size=40)))
def test_autotune_cache_is_rewritten_not_refused(tmp_path_factory, bad):
    from cola_fast.ops import _autotune
    path = tmp_path_factory.mktemp("tune") / "autotune.json"
    path.write_bytes(bad)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert _autotune._read_cache(path) == {}
    assert any("autotune cache" in str(x.message) for x in w)


def test_metrics_torn_last_line_dropped_bad_middle_line_refused(tmp_path):
    recs = [{"step": s, "kind": "train"} for s in (10, 20, 30)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 40, "ki')
    assert [r["step"] for r in inputs.read_jsonl(path, "", inputs.METRICS_LINE)] == [10, 20, 30]
    path.write_bytes(b'{"step": 10}\n{"step": \xff}\n{"step": 30}\n')
    with pytest.raises(inputs.InputError, match=r"metrics.jsonl line 2: not UTF-8"):
        RunFolder(tmp_path).trim_metrics(20)
    path.write_text('{"step": 10}\n{"step": "x"}\n{"step": 30}\n')
    with pytest.raises(inputs.InputError, match=r"metrics.jsonl line 2: step: expected an integer"):
        RunFolder(tmp_path).trim_metrics(20)


# --------------------------------------------------------------------------------------
# the schema checker itself: paths and limits
# --------------------------------------------------------------------------------------
def test_path_of_the_bad_value():
    doc = {"database": {"video_test_0000004": {"subset": "test", "annotations": [
        {"label": "a", "segment": [1, 2]}] * 3 + [{"label": "a", "segment": "1,2"}]}}}
    with pytest.raises(inputs.InputError) as e:
        inputs.check(doc, inputs.GT_SCHEMA, "gt.json")
    assert str(e.value) == ("gt.json: database.video_test_0000004.annotations[3].segment: "
                            "expected [start, end], got a string '1,2'")


def test_limits(tmp_path):
    from cola_fast.evaluation import parse_tiou
    with pytest.raises(inputs.InputError, match="more than the limit of 1000"):
        parse_tiou("0:1:1e-5")
    with pytest.raises(inputs.InputError):  # 1001 thresholds: one too many
        parse_tiou("0:1:0.001")
    assert len(parse_tiou("0.001:1:0.001")) == 1000
    with pytest.raises(inputs.InputError):
        parse_tiou(",".join(["0.5"] * 1001))
    p = tmp_path / "deep.json"
    p.write_text(DEEP)
    with pytest.raises(inputs.InputError, match="nested too deeply"):
        inputs.read_json(p, "results file")
    p.write_text("[" * 70 + "]" * 70)
    with pytest.raises(inputs.InputError, match="nested more than"):
        inputs.read_json(p, "results file", inputs.Json())
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(GT_DOC).encode())
    assert inputs.read_json(bom, "", inputs.GT_SCHEMA) == GT_DOC
