"""The evaluation report: per-class AP against the published-style evaluation, the
DETAD-style error categories on hand-made cases, length buckets, the page itself (offline,
every class named, well formed; rendered by a headless chromium when one is installed),
the CLI flags and the trainer's end-of-run report."""
import json
import os
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser

import numpy as np
import pytest

from cola_fast.evaluation import evaluate_detection, load_gt, load_results
from cola_fast.evaluation import reference as R
from cola_fast.evaluation.analysis import (CATEGORIES, ERROR_TYPES, analyze,
                                           prediction_categories)
from cola_fast.evaluation.report import render_html, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
GT = os.path.join(DATA, "gt.json")
PMIL = os.path.join(DATA, "thumos14_test_pmil.json")
EXPECTED = os.path.join(DATA, "thumos14_test_pmil.expected.json")
PER_CLASS = os.path.join(DATA, "thumos14_test_pmil.per_class.expected.json")
THR = np.linspace(0.1, 0.7, 7)


@pytest.fixture(scope="module")
def pmil_analysis(gt, pmil):
    return analyze(gt, pmil, "test", THR)


def _shifted(results, by):
    """Every detection moved by `by` seconds (a second, worse run for comparisons)."""
    return {"results": {v: [{**d, "segment": [d["segment"][0] + by, d["segment"][1] + by]} for d in ds]
                        for v, ds in results["results"].items()}}


# ----------------------------------------------------------------------------------
# per-class AP
# ----------------------------------------------------------------------------------
def test_per_class_ap_equals_published_style_on_pmil(gt, pmil, pmil_analysis):
    """The vendored per-class AP (computed by evaluation/anet_pandas.py, whose mAP is the
    official one) against the analysis and the evaluation, to 1e-9."""
    exp = json.load(open(PER_CLASS))
    official = json.load(open(EXPECTED))
    exp_ap = np.array(list(exp["per_class_AP"].values())).T
    # the vendored per-class numbers average to the official mAP
    np.testing.assert_allclose(exp_ap.mean(axis=1), official["mAP"], rtol=0, atol=1e-9)
    a = pmil_analysis
    assert a.class_names == list(exp["per_class_AP"])
    np.testing.assert_allclose(a.ap, exp_ap, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.mAP, official["mAP"], rtol=0, atol=1e-9)
    res = evaluate_detection(gt, pmil, "test", THR)
    assert list(res["ap_per_class"]) == a.class_names
    np.testing.assert_array_equal(np.array(list(res["ap_per_class"].values())).T, a.ap)


def test_per_class_ap_equals_pandas_oracle_on_three_real_classes(pmil, pmil_analysis):
    """The published-style evaluation run now on the real file's three smallest classes (a
    class's AP depends only on its own predictions and instances; all 20 take 20-60 s on 2
    cores: set COLA_FAST_FULL_ORACLE=1 for the test below)."""
    pytest.importorskip("pandas")
    from cola_fast.evaluation import anet_pandas
    a = pmil_analysis
    small = [a.class_names[i] for i in np.argsort(a.n_pred, kind="stable")[:3]]
    sub = {"results": {v: [d for d in ds if d["label"] in small] for v, ds in pmil["results"].items()}}
    _, _, ap, names = anet_pandas.evaluate(GT, sub, "test", THR)
    assert names == a.class_names
    for n in small:
        i = names.index(n)
        np.testing.assert_allclose(a.ap[:, i], ap[:, i], rtol=0, atol=1e-9)
        assert a.ap[:, i].max() > 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("COLA_FAST_FULL_ORACLE") != "1",
                    reason="20-60 s: set COLA_FAST_FULL_ORACLE=1 (the vendored numbers are checked always)")
def test_per_class_ap_equals_pandas_oracle_recomputed(pmil_analysis):
    """The published-style evaluation run now on the whole real file."""
    pytest.importorskip("pandas")
    from cola_fast.evaluation import anet_pandas
    m, _, ap, names = anet_pandas.evaluate(GT, PMIL, "test", THR)
    assert names == pmil_analysis.class_names
    np.testing.assert_allclose(pmil_analysis.ap, ap, rtol=0, atol=1e-9)


def test_analysis_matches_evaluation_on_random_cases():
    from test_evaluation import _random_case
    for seed in range(4):
        g, r = _random_case(seed, grid=bool(seed % 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            a = analyze(g, r, "test", THR)
            res = evaluate_detection(g, r, "test", THR)
        np.testing.assert_array_equal(np.array(list(res["ap_per_class"].values())).T, a.ap)
        # the precision-recall curve at 0.5 ends at the evaluation's recall
        for i, (rec, prec) in enumerate(a.pr_curves):
            assert np.all(np.diff(rec) >= 0) and np.all((prec >= 0) & (prec <= 1))


# ----------------------------------------------------------------------------------
# error categories, hand-made
# ----------------------------------------------------------------------------------
HAND_GT = {"database": {
    "v1": {"subset": "test", "annotations": [
        {"label": "a", "segment": [10, 20]}, {"label": "b", "segment": [30, 40]},
        {"label": "a", "segment": [50, 60]}]},
    "v2": {"subset": "test", "annotations": [{"label": "a", "segment": [0, 10]}]},
    "vt": {"subset": "train", "annotations": [{"label": "a", "segment": [0, 10]}]}}}

# (video, label, score, segment, expected category at tIoU 0.5); tIoU with the instance
# that overlaps the prediction most, among all instances of its video
HAND_PRED = [
    ("v1", "a", 0.90, [10, 20], "true positive"),      # 1 with a@[10,20]
    ("v1", "a", 0.80, [10, 19], "double detection"),   # 0.9 with a@[10,20], already taken
    ("v1", "a", 0.70, [30, 40], "wrong label"),        # 1 with b@[30,40]
    ("v1", "a", 0.60, [50, 54], "localisation"),       # 0.4 with a@[50,60]
    ("v1", "a", 0.50, [30, 33], "confusion"),          # 0.3 with b@[30,40]
    ("v1", "a", 0.40, [70, 80], "background"),         # no overlap
    ("v1", "a", 0.38, [59, 69], "background"),         # 1/19 < 0.1 with a@[50,60]
    ("v3", "a", 0.35, [0, 10], "background"),          # a video without ground truth
    ("v2", "a", 0.30, [0, 10], "true positive"),       # 1 with a@[0,10] of v2
    ("v1", "a", 0.05, [29, 37], "wrong label"),        # 7/11 with b@[30,40], 0 with any a
    ("v2", "b", 0.95, [0, 10], "wrong label"),         # 1 with a@[0,10] of v2
    ("v1", "b", 0.85, [31, 40], "true positive"),      # 0.9 with b@[30,40]
    ("v1", "b", 0.20, [12, 18], "wrong label"),        # 0.6 with a@[10,20]
    ("v1", "b", 0.10, [8, 12], "confusion"),           # 2/12 with a@[10,20]
]


def _hand_results():
    res = {}
    for v, lab, sc, seg, _ in HAND_PRED:
        res.setdefault(v, []).append({"label": lab, "score": sc, "segment": seg})
    return {"results": res}


def _expected_in_results_order():
    by_video = {}
    for v, _, _, _, cat in HAND_PRED:
        by_video.setdefault(v, []).append(cat)
    return [c for v in _hand_results()["results"] for c in by_video[v]]


def test_error_categories_hand_made():
    got = prediction_categories(HAND_GT, _hand_results(), "test", tiou=0.5)
    assert got == _expected_in_results_order()


def test_error_categories_follow_the_threshold():
    """At tIoU 0.3 the prediction with tIoU 0.4 takes the free a@[50,60] (true positive)
    and the one with tIoU 0.3 with b@[30,40] becomes a wrong label."""
    cats = dict(zip([(v, lab, sc) for v, lab, sc, _, _ in HAND_PRED],
                    _reorder(prediction_categories(HAND_GT, _hand_results(), "test", tiou=0.3))))
    assert cats[("v1", "a", 0.60)] == "true positive"
    assert cats[("v1", "a", 0.50)] == "wrong label"
    assert cats[("v1", "a", 0.80)] == "double detection"
    assert cats[("v1", "b", 0.10)] == "confusion"    # 2/12: below 0.3, above 0.1
    assert cats[("v1", "a", 0.38)] == "background"   # 1/19: below 0.1 at any threshold
def _reorder(cats_in_results_order):
    """Categories in results order -> in HAND_PRED order."""
    order = []
    for v in _hand_results()["results"]:
        order += [i for i, p in enumerate(HAND_PRED) if p[0] == v]
    out = [None] * len(HAND_PRED)
    for i, c in zip(order, cats_in_results_order):
        out[i] = c
    return out


def _oracle_categories(gt, results, thr, min_tiou=0.1):
    """DETAD's rules written as plain loops over the reference's per-class matching."""
    db = {v: x for v, x in gt["database"].items() if x["subset"] == "test"}
    names = []
    for x in db.values():
        for a in x["annotations"]:
            if a["label"] not in names:
                names.append(a["label"])
    preds = [(v, d) for v, ds in results["results"].items() for d in ds if d["label"] in names]
    tp = set()
    for c in names:
        mine = [(i, v, d) for i, (v, d) in enumerate(preds) if d["label"] == c]
        order = np.argsort(np.array([d["score"] for _, _, d in mine]))[::-1]
        taken = set()
        for k in order:
            i, v, d = mine[k]
            gts = [(j, a) for j, a in enumerate(db.get(v, {"annotations": []})["annotations"])
                   if a["label"] == c]
            if not gts:
                continue
            t = R.segment_iou(np.array(d["segment"]), np.array([a["segment"] for _, a in gts]))
            for jj in np.argsort(t)[::-1]:
                if t[jj] < thr:
                    break
                if (v, gts[jj][0]) in taken:
                    continue
                taken.add((v, gts[jj][0]))
                tp.add(i)
                break
    out = []
    for i, (v, d) in enumerate(preds):
        if i in tp:
            out.append("true positive")
            continue
        anns = db.get(v, {"annotations": []})["annotations"]
        if not anns:
            out.append("background")
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.nan_to_num(R.segment_iou(np.array(d["segment"]), np.array([a["segment"] for a in anns])))
        j = int(np.argmax(t))
        same = anns[j]["label"] == d["label"]
        if t[j] >= thr:
            out.append("double detection" if same else "wrong label")
        elif t[j] >= min_tiou:
            out.append("localisation" if same else "confusion")
        else:
            out.append("background")
    return out


@pytest.mark.parametrize("seed", range(6))
def test_error_categories_equal_loop_oracle_random(seed):
    from test_evaluation import _random_case
    g, r = _random_case(seed, grid=bool(seed % 2))
    g = load_gt(g)
    r = load_results(r)
    for thr in (0.3, 0.5):
        with np.errstate(invalid="ignore", divide="ignore"):
            got = prediction_categories(g, r, "test", tiou=thr)
        assert got == _oracle_categories(g, r, thr)


def test_profile_bands_hand_made():
    a = analyze(HAND_GT, _hand_results(), "test", [0.5], n_bands=4)
    # class a: G = 3 (two instances in v1, one in v2), 10 predictions; class b: G = 1, 4 predictions
    # a by score: TP DD WL | LOC CONF BG | BG BG TP | WL ; b: WL | TP | WL | CONF
    c = {n: i for i, n in enumerate(CATEGORIES)}
    exp = np.zeros((4, 6), dtype=int)
    for band, cats in enumerate([["true positive", "double detection", "wrong label", "wrong label"],
                                 ["localisation", "confusion", "background", "true positive"],
                                 ["background", "background", "true positive", "wrong label"],
                                 ["wrong label", "confusion"]]):
        for k in cats:
            exp[band, c[k]] += 1
    np.testing.assert_array_equal(a.profile, exp)
    assert a.category_counts.sum() == len(HAND_PRED)


def test_gain_of_removing_each_error_type_hand_made():
    """One class, two instances; ranked: background (0.9), TP, TP. AP = 2/3 (the
    interpolated precision is 2/3 at both recalls); without the background prediction
    AP = 1: gain 1/3 for background, 0 for the other types."""
    g = {"database": {"v": {"subset": "test", "annotations": [
        {"label": "a", "segment": [0, 10]}, {"label": "a", "segment": [20, 30]}]}}}
    r = {"results": {"v": [{"label": "a", "score": 0.9, "segment": [40, 50]},
                           {"label": "a", "score": 0.8, "segment": [0, 10]},
                           {"label": "a", "score": 0.7, "segment": [20, 30]}]}}
    a = analyze(g, r, "test", [0.5])
    assert a.mAP[0] == pytest.approx(2 / 3, abs=1e-15)
    exp = {name: 0.0 for name in ERROR_TYPES}
    exp["background"] = 1 / 3
    for k, name in enumerate(ERROR_TYPES):
        assert a.gain_at_error_tiou[k] == pytest.approx(exp[name], abs=1e-15), name
        assert a.gain[k, 0] == pytest.approx(exp[name], abs=1e-15), name


def test_length_buckets_hand_made():
    """Instances of lengths 1, 2, 3, 10, 11, 12: terciles at 2.667 and 10.333 -> short
    {1, 2}, medium {3, 10}, long {11, 12}. Ranked: TP on the length-1 instance, a
    background FP, TP on the length-11 instance. AP short = 1/2 (rec .5 at prec 1), medium
    = 0 (only the FP stays), long = 1/4 (rec .5 at prec .5)."""
    segs = [[0, 1], [10, 12], [20, 23], [30, 40], [50, 61], [70, 82]]
    g = {"database": {"v": {"subset": "test", "annotations": [
        {"label": "a", "segment": s} for s in segs]}}}
    r = {"results": {"v": [{"label": "a", "score": 0.9, "segment": [0, 1]},
                           {"label": "a", "score": 0.8, "segment": [100, 104]},
                           {"label": "a", "score": 0.7, "segment": [50, 61]}]}}
    a = analyze(g, r, "test", [0.5])
    np.testing.assert_allclose(a.length_edges, [2 + 2 / 3, 10 + 1 / 3])
    np.testing.assert_array_equal(a.length_gt_counts, [2, 2, 2])
    np.testing.assert_array_equal(a.length_pred_counts, [1, 1, 1])  # lengths 1, 4, 11
    np.testing.assert_allclose(a.length_mAP[:, 0], [0.5, 0.0, 0.25], atol=1e-15)


def test_worst_videos_hand_made():
    a = analyze(HAND_GT, _hand_results(), "test", [0.5])
    # top predictions (band 1G): a's three best (TP, double detection, wrong label, all in
    # v1) and b's best (wrong label in v2). v1: a@[50,60] and b@[30,40] taken by no top
    # prediction (b's true positive is its second) + 2 top false positives = 4 errors;
    # v2: a@[0,10] (taken by a's ninth) + 1 top false positive = 2
    assert [w["video"] for w in a.worst_videos] == ["v1", "v2"]
    assert (a.worst_videos[0]["missed"], a.worst_videos[0]["false_positives"]) == (2, 2)
    assert (a.worst_videos[1]["missed"], a.worst_videos[1]["false_positives"]) == (1, 1)


def test_analysis_of_real_file_is_fast(gt, pmil):
    t0 = time.perf_counter()
    analyze(gt, pmil, "test", THR)
    assert time.perf_counter() - t0 < 5.0


# ----------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------
_VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "wbr", "source"}
_URL_ATTRS = {"href", "src", "xlink:href", "action", "srcset", "poster", "data", "background",
              "formaction", "cite", "manifest"}


class _Checker(HTMLParser):
    """Collects text, forbidden references and tag balance."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text, self.remote, self.stack, self.errors, self.svgs = [], [], [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "link", "iframe", "object", "embed", "img", "base"):
            self.remote.append(f"<{tag}>")
        if tag == "svg":
            self.svgs += 1
        for k, v in attrs:
            if k in _URL_ATTRS and v and not (v.startswith("#") or v.startswith("data:")):
                self.remote.append(f"{k}={v}")
            if v and "url(" in v and "url(data:" not in v:
                self.remote.append(f"{k}={v}")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _check_page(page, class_names):
    assert page.startswith("<!DOCTYPE html>")
    assert "://" not in page and "@import" not in page and "url(" not in page
    p = _Checker()
    p.feed(page)
    p.close()
    assert p.remote == []
    assert p.errors == [] and p.stack == []
    text = " ".join(p.text)
    missing = [n for n in class_names if n not in text]
    assert missing == []
    assert p.svgs >= len(class_names)  # at least one PR plot per class
    return p


def test_page_is_offline_and_names_every_class(pmil_analysis, tmp_path):
    path = write_report(tmp_path / "rep", pmil_analysis, meta={"results": "pmil"})
    page = open(path, encoding="utf-8").read()
    _check_page(page, pmil_analysis.class_names)
    for name in CATEGORIES:
        assert name in page
    assert f"{100 * pmil_analysis.average_mAP:.2f}" in page  # 42.96


def test_compare_page_has_both_runs_and_differences(gt, pmil, pmil_analysis):
    b = analyze(gt, _shifted(pmil, 1.0), "test", THR)
    page = render_html(pmil_analysis, b, labels=("pmil", "pmil shifted 1s"))
    _check_page(page, pmil_analysis.class_names)
    assert "pmil shifted 1s" in page and "B - A" in page
    assert f"{100 * (b.average_mAP - pmil_analysis.average_mAP):+.2f}" in page


def test_page_escapes_names():
    g = {"database": {"<v&1>": {"subset": "test", "annotations": [
        {"label": "<b>jump & run</b>", "segment": [0, 5]}]}}}
    r = {"results": {"<v&1>": [{"label": "<b>jump & run</b>", "score": 1.0, "segment": [3, 9]}]}}
    page = render_html(analyze(g, r, "test", [0.5]))
    assert "<b>jump" not in page and "&lt;b&gt;jump &amp; run&lt;/b&gt;" in page
    _check_page(page, ["<b>jump & run</b>"])


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (apt-get install chromium)")
def test_page_renders_in_headless_chromium(pmil_analysis, tmp_path):
    """The page loaded by a real browser, with its network off: the DOM it builds keeps
    every figure and names every class."""
    path = write_report(tmp_path / "rep", pmil_analysis)
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--dump-dom",
           "file://" + os.path.abspath(path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    dom = p.stdout
    assert dom.count("<svg") == open(path, encoding="utf-8").read().count("<svg")
    for n in pmil_analysis.class_names:
        assert n in dom


# ----------------------------------------------------------------------------------
# command line and trainer
# ----------------------------------------------------------------------------------
def _run(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "cola_fast.evaluate", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_json_per_class_and_report(tmp_path, pmil):
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_shifted(pmil, 1.0)))
    rep = tmp_path / "rep"
    p = _run(PMIL, "--gt", GT, "--json", "--report", str(rep), "--compare", str(other))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    exp = json.load(open(PER_CLASS))["per_class_AP"]
    assert list(out["per_class_AP"]) == list(exp)
    np.testing.assert_allclose(np.array(list(out["per_class_AP"].values())),
                               np.array(list(exp.values())), rtol=0, atol=1e-9)
    page = (rep / "index.html").read_text(encoding="utf-8")
    _check_page(page, list(exp))
    assert "other.json" in page and "thumos14_test_pmil.json" in page
    assert "report:" in p.stderr


@pytest.mark.parametrize("case", ["compare_without_report", "missing_compare"])
def test_cli_report_errors(tmp_path, case):
    args = {"compare_without_report": [PMIL, "--gt", GT, "--compare", PMIL],
            "missing_compare": [PMIL, "--gt", GT, "--report", str(tmp_path / "r"),
                                "--compare", str(tmp_path / "nope.json")]}[case]
    p = _run(*args)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "error" in p.stderr.lower()
    if case == "missing_compare":
        assert "nope.json" in p.stderr


def test_trainer_writes_the_report_and_can_be_told_not_to(cache, tmp_path):
    from cola_fast.config import get_preset, parse_override
    from cola_fast.train import train
    cfg = get_preset("tiny").replace(steps=4, eval_every=4)
    train(cfg, tmp_path / "on", quiet=True)
    page = (tmp_path / "on" / "report" / "index.html").read_text(encoding="utf-8")
    names = list(json.load(open(GT))["database"].values())
    classes = sorted({a["label"] for v in names if v["subset"] == "test" for a in v["annotations"]})
    _check_page(page, classes)
    off = parse_override(cfg, "report=false")
    assert off.report is False
    train(off, tmp_path / "off", quiet=True)
    assert (tmp_path / "off" / "best.pt").exists()
    assert not (tmp_path / "off" / "report").exists()


# ----------------------------------------------------------------------------------
# a training run's page: best beside last, environment, curves; a --seeds page
# ----------------------------------------------------------------------------------
def test_run_page_has_best_last_environment_and_curves(tiny_run, tmp_path):
    """The tiny run's own page (best = last there), then the same folder with its best
    moved to an earlier step: both evaluations side by side."""
    import shutil
    from cola_fast.evaluation.report import report_for_run
    out, summary, _ = tiny_run
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert f"best = last step ({summary['last']['step']})" in page
    assert "<h2>Curves</h2>" in page and "SniCo loss" in page and "classification loss" in page
    assert page.count("<polyline") >= 5  # the four curves with more than one point, and more
    env = json.loads((out / "env.json").read_text())
    assert "<h2>Environment</h2>" in page and env["torch"] in page and "cpu_isa" in page
    run = tmp_path / "run"
    shutil.copytree(out, run, ignore=shutil.ignore_patterns("report", "*.pt"))
    moved = dict(summary, best=dict(summary["best"], step=30))
    (run / "summary.json").write_text(json.dumps(moved))
    from cola_fast.config import get_preset  # the tiny run's ground truth is the synthetic one
    from cola_fast.data import prepare_data
    test_gt = prepare_data(get_preset("tiny"), log=lambda *a: None)[2].gt_path
    path = report_for_run(run, test_gt, summary["best"]["tiou_thresholds"], say=lambda *a: None)
    page = open(path, encoding="utf-8").read()
    assert "best (step 30, chosen on the test set)" in page and f"last step ({summary['last']['step']})" in page
    assert "B - A" in page


def test_seeds_page_has_the_table_and_every_seeds_curves(tiny_run, tmp_path):
    import shutil
    from cola_fast.evaluation.report import report_for_seeds
    from cola_fast.train import seeds_table
    out, summary, _ = tiny_run
    other = tmp_path / "seed1"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("report", "*.pt"))
    table = seeds_table([summary, dict(summary, seed=1)])
    path = report_for_seeds(tmp_path, [(0, out), (1, other)], table, say=lambda *a: None)
    page = open(path, encoding="utf-8").read()
    assert "seed 0" in page and "seed 1" in page and "mean ± std" in page and "last step" in page
    assert page.count("<svg") == 5 and page.count("<polyline") >= 8  # two runs in each plot
    assert "http" not in page.replace("http://www.w3.org", "")  # nothing fetched
