"""Ties in the detection mAP (evaluate --ties): "stable" gives one answer however tied
entries are ordered in the files and whichever sort numpy runs underneath; "official"
depends on both (so these tests can see a difference); the fast path and the reference
agree under both rules."""
import json

import numpy as np
import pytest

from cola_fast.evaluate import main as evaluate_main
from cola_fast.evaluation import evaluate_detection, load_gt, load_results
from cola_fast.evaluation import reference as R
from cola_fast.evaluation.detection import evaluate_detection_fast


def _tied_case(seed=0, n_vid=5, n_pred=150):
    """Scores on a coarse grid (many ties) and segments on an integer grid (many equal tIoUs)."""
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c"]
    db, results = {}, {}
    for v in range(n_vid):
        anns = []
        for _ in range(int(rng.integers(2, 7))):
            s = float(rng.integers(0, 20))
            anns.append({"label": labels[int(rng.integers(0, 3))], "segment": [s, s + float(rng.integers(1, 6))]})
        db[f"video_{v}"] = {"subset": "test", "annotations": anns}
    for _ in range(n_pred):
        v = f"video_{int(rng.integers(0, n_vid))}"
        s = float(rng.integers(0, 20))
        results.setdefault(v, []).append({"label": labels[int(rng.integers(0, 3))],
                                          "score": float(rng.integers(1, 6)) / 10,
                                          "segment": [s, s + float(rng.integers(1, 6))]})
    return {"database": db}, {"results": results}


def _permuted(gt, res, seed):
    """The same entries in another order: videos, detections in a video, annotations."""
    rng = np.random.default_rng(seed)

    def shuffle(items):
        return [items[i] for i in rng.permutation(len(items))]
    db = {v: {**d, "annotations": shuffle(d["annotations"])} for v, d in shuffle(list(gt["database"].items()))}
    r = {v: shuffle(d) for v, d in shuffle(list(res["results"].items()))}
    return {"database": db}, {"results": r}


def _argsort_with(kind):
    """np.argsort whose default sort (the machine-dependent quicksort) is replaced: a numpy
    kind, or "reversed" (a stable sort that puts ties in reverse order: another machine)."""
    orig = np.argsort

    def argsort(a, axis=-1, kind_=None, order=None, **kw):
        k = kw.pop("kind", kind_)
        if k is not None:  # an explicit kind is machine-independent: keep it
            return orig(a, axis=axis, kind=k, order=order)
        if kind == "reversed":
            a = np.asarray(a)
            n = a.shape[axis]
            flipped = np.flip(a, axis=axis)
            return n - 1 - np.flip(orig(flipped, axis=axis, kind="stable"), axis=axis)
        return orig(a, axis=axis, kind=kind, order=order)
    return argsort


KINDS = ("quicksort", "heapsort", "stable", "reversed")
THR = np.linspace(0.1, 0.7, 7)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_stable_is_one_answer_for_every_order_and_sort_kind(monkeypatch, backend):
    gt, res = _tied_case()
    answers = {"official": set(), "stable": set()}
    for perm in range(4):
        g, r = (gt, res) if perm == 0 else _permuted(gt, res, perm)
        for kind in KINDS:
            monkeypatch.setattr(np, "argsort", _argsort_with(kind))
            for ties in answers:
                out = evaluate_detection(g, r, tiou_thresholds=THR, backend=backend, ties=ties)
                answers[ties].add(tuple(out["mAP"]))
            monkeypatch.undo()
    assert len(answers["stable"]) == 1, answers["stable"]
    assert len(answers["official"]) > 1, "the case has no tie that the order decides: the test sees nothing"


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("ties", ["official", "stable"])
def test_fast_equals_reference_under_both_rules(seed, ties):
    g, r = load_gt(_tied_case(seed)[0]), load_results(_tied_case(seed)[1])
    a, na = evaluate_detection_fast(g, r, "test", THR, ties=ties)
    b, nb = R.evaluate_detection(g, r, "test", THR, ties=ties)
    assert na == nb
    np.testing.assert_array_equal(a, b)


def test_evaluate_ties_flag_and_json(tmp_path, capsys):
    gt, res = _tied_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "r.json").write_text(json.dumps(res))
    out = {}
    for ties in ("official", "stable"):
        assert evaluate_main([str(tmp_path / "r.json"), "--gt", str(tmp_path / "gt.json"), "--json",
                              "--ties", ties]) == 0
        out[ties] = json.loads(capsys.readouterr().out)
        assert out[ties]["ties"] == ties
    with pytest.raises(SystemExit) as e:
        evaluate_main([str(tmp_path / "r.json"), "--gt", str(tmp_path / "gt.json"), "--ties", "nope"])
    assert e.value.code == 2


def test_unknown_rule_is_refused():
    gt, res = _tied_case()
    with pytest.raises(ValueError, match="ties must be one of"):
        evaluate_detection(gt, res, ties="sorted")
