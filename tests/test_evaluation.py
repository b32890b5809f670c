"""Detection mAP: fast == reference == pandas re-implementation of the published
ActivityNet evaluation, and the vendored expected numbers for the real P-MIL file."""
import json
import math
import os

import numpy as np
import pytest

from cola_fast.evaluation import (EvaluationInputError, evaluate_detection, format_table,
                                  load_gt, load_results, parse_tiou, results_json)
from cola_fast.evaluation import reference as R
from cola_fast.evaluation.detection import evaluate_detection_fast

DATA = os.path.join(os.path.dirname(__file__), "data")
GT = os.path.join(DATA, "gt.json")
PMIL = os.path.join(DATA, "thumos14_test_pmil.json")
EXPECTED = os.path.join(DATA, "thumos14_test_pmil.expected.json")

try:
    import pandas  # noqa: F401
    HAVE_PANDAS = True
except ImportError:  # pragma: no cover
    HAVE_PANDAS = False


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_pmil_expected_numbers(gt, pmil, backend):
    exp = json.load(open(EXPECTED))
    res = evaluate_detection(gt, pmil, subset="test", tiou_thresholds=np.linspace(0.1, 0.7, 7),
                             backend=backend)
    np.testing.assert_allclose(res["tiou_thresholds"], exp["tiou_thresholds"], atol=1e-12)
    np.testing.assert_allclose(res["mAP"], exp["mAP"], rtol=0, atol=1e-9)
    assert abs(res["average_mAP"] - exp["average_mAP"]) <= 1e-9
    assert len(res["ap_per_class"]) == 20


def test_pmil_fast_equals_reference_per_class(gt, pmil):
    thr = np.linspace(0.5, 0.95, 10)  # a second threshold set
    a, na = evaluate_detection_fast(gt, pmil, "test", thr)
    b, nb = R.evaluate_detection(gt, pmil, "test", thr)
    assert na == nb
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------
# random ground truth / predictions with ties, empty classes, foreign videos and labels
# ----------------------------------------------------------------------------------
def _random_case(seed, n_vid=6, n_cls=4, n_gt=25, n_pred=120, grid=True, zero_len=False):
    rng = np.random.default_rng(seed)
    labels = [f"act{i}" for i in range(n_cls)]
    db = {}
    for v in range(n_vid):
        anns = []
        for _ in range(rng.integers(0, n_gt // n_vid + 3)):
            if grid:  # integer grid -> many equal tIoUs; duplicates possible
                s = float(rng.integers(0, 20))
                e = s + float(rng.integers(0 if zero_len else 1, 6))
            else:
                s = float(rng.uniform(0, 30))
                e = s + float(rng.uniform(0.1, 8))
            # the last class never gets ground truth in video 0 and few elsewhere
            lab = labels[int(rng.integers(0, n_cls - 1 if v == 0 else n_cls))]
            anns.append({"label": lab, "segment": [str(s), str(e)] if rng.random() < 0.3 else [s, e]})
        db[f"v{v}"] = {"subset": "test" if v < n_vid - 1 else "train", "annotations": anns}
    # a class that exists only in the train subset
    db[f"v{n_vid - 1}"]["annotations"].append({"label": "train_only", "segment": [0.0, 1.0]})
    results = {}
    for _ in range(n_pred):
        v = f"v{int(rng.integers(0, n_vid + 2))}"  # v{n_vid}, v{n_vid+1}: no ground truth
        if grid:
            s = float(rng.integers(0, 20))
            e = s + float(rng.integers(0 if zero_len else 1, 6))
            score = float(rng.integers(0, 5)) / 4  # many tied scores
        else:
            s = float(rng.uniform(0, 30))
            e = s + float(rng.uniform(0.1, 8))
            score = float(rng.random())
        lab = labels[int(rng.integers(0, n_cls))] if rng.random() > 0.05 else "unknown_label"
        results.setdefault(v, []).append({"label": lab, "score": score, "segment": [s, e]})
    return {"database": db}, {"results": results}


CASES = [(seed, grid, zl) for seed in range(8) for grid, zl in ((True, False), (False, False))]
CASES += [(100 + s, True, True) for s in range(3)]


@pytest.mark.parametrize("seed,grid,zero_len", CASES)
def test_fast_equals_reference_random(seed, grid, zero_len):
    g, r = _random_case(seed, grid=grid, zero_len=zero_len)
    gt_ = load_gt(g)
    res_ = load_results(r)
    thr = np.linspace(0.1, 0.9, 9)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, na = evaluate_detection_fast(gt_, res_, "test", thr)
        b, nb = R.evaluate_detection(gt_, res_, "test", thr)
    assert na == nb
    np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not HAVE_PANDAS, reason="pandas not installed")
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fast_equals_pandas_oracle(seed):
    from cola_fast.evaluation import anet_pandas
    g, r = _random_case(seed, n_vid=5, n_pred=80, grid=bool(seed % 2))
    thr = np.linspace(0.1, 0.7, 7)
    m, avg, ap, names = anet_pandas.evaluate(g, r, "test", thr)
    res = evaluate_detection(g, r, "test", thr, backend="auto")
    assert list(res["ap_per_class"]) == names
    np.testing.assert_array_equal(np.array(list(res["ap_per_class"].values())).T, ap)
    np.testing.assert_array_equal(res["mAP"], m)
    assert res["average_mAP"] == avg


def test_pandas_oracle_is_independent_of_the_reference():
    """anet_pandas computes tIoU and the interpolated AP itself: comparing the fast path with
    it must not compare the reference's helpers with themselves."""
    import ast
    import inspect
    from cola_fast.evaluation import anet_pandas
    tree = ast.parse(inspect.getsource(anet_pandas))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and ("reference" in m or "detection" in m or "_pairwise" in m) for m in imported), imported


def test_many_predictions_per_gt_and_multi_choice():
    """Dense nested predictions on close ground truth: several eligible instances per
    prediction, contested in rank order (exercises the round-based matching)."""
    rng = np.random.default_rng(7)
    db = {"a": {"subset": "test", "annotations": [
        {"label": "x", "segment": [float(i), float(i) + 1.5]} for i in range(0, 30, 1)]}}
    dets = []
    for _ in range(600):
        s = float(rng.integers(0, 60)) / 2
        dets.append({"label": "x", "score": float(rng.integers(0, 10)),
                     "segment": [s, s + float(rng.integers(1, 8)) / 2]})
    thr = np.linspace(0.05, 0.95, 19)
    a, _ = evaluate_detection_fast(load_gt({"database": db}), load_results({"results": {"a": dets}}), "test", thr)
    b, _ = R.evaluate_detection(load_gt({"database": db}), load_results({"results": {"a": dets}}), "test", thr)
    np.testing.assert_array_equal(a, b)


def test_hand_computed_ap():
    """Independent oracle: one class, two instances, three predictions."""
    db = {"v": {"subset": "test", "annotations": [
        {"label": "a", "segment": [0, 10]}, {"label": "a", "segment": [20, 30]}]}}
    res = {"results": {"v": [
        {"label": "a", "score": 0.9, "segment": [0, 10]},     # TP (tIoU 1)
        {"label": "a", "score": 0.8, "segment": [0, 9]},      # duplicate of gt0 -> FP
        {"label": "a", "score": 0.7, "segment": [22, 30]},    # tIoU 0.8 with gt1
    ]}}
    out = evaluate_detection({"database": db}, res, "test", [0.5, 0.85])
    # @0.5: TP FP TP -> prec 1, .5, .667; rec .5, .5, 1 -> AP = .5*1 + .5*(2/3)
    # @0.85: TP FP FP -> AP = .5
    assert math.isclose(out["mAP"][0], 0.5 + 0.5 * 2 / 3, rel_tol=0, abs_tol=1e-15)
    assert math.isclose(out["mAP"][1], 0.5, abs_tol=1e-15)
    assert out["average_mAP"] == pytest.approx((0.5 + 0.5 * 2 / 3 + 0.5) / 2, abs=1e-15)


def test_no_predictions_and_label_outside_gt():
    db = {"v": {"subset": "test", "annotations": [{"label": "a", "segment": [0, 1]}]}}
    for backend in ("auto", "reference"):
        out = evaluate_detection({"database": db}, {"results": {}}, "test", [0.5], backend=backend)
        assert out["mAP"] == [0.0]
        out = evaluate_detection({"database": db}, {"results": {"v": [
            {"label": "zzz", "score": 1.0, "segment": [0, 1]}]}}, "test", [0.5], backend=backend)
        assert out["mAP"] == [0.0]


# ----------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------
def test_load_gt_errors(tmp_path):
    with pytest.raises(EvaluationInputError, match="not found"):
        load_gt(tmp_path / "missing.json")
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(EvaluationInputError, match="not valid JSON"):
        load_gt(p)
    p.write_text(json.dumps({"videos": {}}))
    with pytest.raises(EvaluationInputError, match="database"):
        load_gt(p)
    bad = {"database": {"vid_7": {"subset": "test", "annotations": [
        {"label": "a", "segment": [5, 2]}]}}}
    with pytest.raises(EvaluationInputError, match="vid_7.*before its start"):
        load_gt(bad)
    bad["database"]["vid_7"]["annotations"][0]["segment"] = ["x", 2]
    with pytest.raises(EvaluationInputError, match="vid_7.*number"):
        load_gt(bad)
    bad["database"]["vid_7"]["annotations"][0]["segment"] = [1]
    with pytest.raises(EvaluationInputError, match="vid_7"):
        load_gt(bad)
    with pytest.raises(EvaluationInputError, match="subset"):
        load_gt({"database": {"v": {"annotations": []}}})
    with pytest.raises(TypeError):
        load_gt(42)


def test_load_results_errors():
    with pytest.raises(EvaluationInputError, match="'results'"):
        load_results({"foo": 1})
    with pytest.raises(EvaluationInputError, match="v1.*score"):
        load_results({"results": {"v1": [{"label": "a", "segment": [0, 1]}]}})
    with pytest.raises(EvaluationInputError, match="v1.*finite"):
        load_results({"results": {"v1": [{"label": "a", "score": float("nan"), "segment": [0, 1]}]}})


def test_evaluate_detection_errors(gt):
    r = {"results": {}}
    with pytest.raises(ValueError, match="unknown subset"):
        evaluate_detection(gt, r, subset="validation")
    with pytest.raises(ValueError, match="backend"):
        evaluate_detection(gt, r, backend="slow")
    with pytest.raises(ValueError, match="tIoU"):
        evaluate_detection(gt, r, tiou_thresholds=[1.5])
    with pytest.raises(ValueError, match="tIoU"):
        parse_tiou("0.1:0.7")


def test_parse_tiou_matches_linspace():
    np.testing.assert_array_equal(parse_tiou("0.1:0.7:0.1"), np.linspace(0.1, 0.7, 7))
    np.testing.assert_array_equal(parse_tiou("0.5:0.95:0.05"), np.linspace(0.5, 0.95, 10))
    np.testing.assert_array_equal(parse_tiou("0.3,0.5"), [0.3, 0.5])


def test_results_json_and_table(tmp_path, gt):
    per_video = {"video_test_0000004": [{"label": "CricketBowling", "score": np.float32(0.5),
                                          "segment": [np.float64(19.2), 21.76]}]}
    path = tmp_path / "sub" / "res.json"
    out = results_json(per_video, path)
    assert json.load(open(path)) == out
    assert out["results"]["video_test_0000004"][0]["score"] == 0.5
    assert not [f for f in os.listdir(path.parent) if f.startswith(".tmp_")]
    res = evaluate_detection(gt, str(path))
    table = format_table(res)
    assert "0.10" in table and "0.70" in table and "Avg" in table
    assert f"{100 * res['average_mAP']:.2f}" in table
    with pytest.raises(EvaluationInputError):
        results_json({"v": [{"label": "a", "score": 1.0, "segment": [3, 1]}]})
