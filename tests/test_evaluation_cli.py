"""python -m cola_fast.evaluate, run as a subprocess."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
GT = os.path.join(DATA, "gt.json")
PMIL = os.path.join(DATA, "thumos14_test_pmil.json")


def run(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "cola_fast.evaluate", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_json_matches_expected():
    p = run(PMIL, "--gt", GT, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    exp = json.load(open(os.path.join(DATA, "thumos14_test_pmil.expected.json")))
    assert set(out) == {"tiou_thresholds", "mAP", "average_mAP", "per_class_AP", "ties"}
    assert out["ties"] == "official"
    assert out["tiou_thresholds"] == pytest.approx(exp["tiou_thresholds"], abs=1e-12)
    assert out["mAP"] == pytest.approx(exp["mAP"], abs=1e-9)
    assert out["average_mAP"] == pytest.approx(exp["average_mAP"], abs=1e-9)


def test_cli_table():
    p = run(PMIL, "--gt", GT, "--subset", "test", "--tiou", "0.3,0.5,0.7")
    assert p.returncode == 0, p.stderr
    assert "0.30" in p.stdout and "0.70" in p.stdout and "Avg" in p.stdout
    assert "33.94" in p.stdout  # mAP@0.5 of the expected file, in percent


def test_cli_per_class_has_a_header_and_the_class_order(capsys):
    """--per-class: a header row, then the classes in gt.json's order (no "classes" list in
    THUMOS'14's: alphabetical), each row's Avg the mean of its APs. (In this process: the
    command line itself is the subprocess tests' above.)"""
    from cola_fast.evaluate import main
    assert main([PMIL, "--gt", GT, "--tiou", "0.3,0.5,0.7", "--per-class"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("class "))
    assert lines[head].split() == ["class", "0.30", "0.50", "0.70", "Avg"]
    rows = [ln.split() for ln in lines[head + 1:]]
    assert len(rows) == 20 and [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert all(abs(sum(map(float, r[1:4])) / 3 - float(r[4])) < 0.01 for r in rows)


def test_cli_reference_impl_small(tmp_path):
    res = {"results": {"video_test_0000004": [
        {"label": "CricketBowling", "score": 0.4, "segment": [19.2, 21.76]}]}}
    f = tmp_path / "r.json"
    f.write_text(json.dumps(res))
    a = run(str(f), "--gt", GT, "--json", "--backend", "reference")
    b = run(str(f), "--gt", GT, "--json")
    c = run(str(f), "--gt", GT, "--json", "--impl", "reference")  # the flag's former name
    assert a.returncode == 0 and b.returncode == 0 and c.returncode == 0, a.stderr + b.stderr + c.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout) == json.loads(c.stdout)


@pytest.mark.parametrize("case", ["missing_results", "missing_gt", "malformed", "subset", "tiou",
                                  "bad_segment"])
def test_cli_errors(tmp_path, case):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    seg = tmp_path / "seg.json"
    seg.write_text(json.dumps({"results": {"v9": [{"label": "a", "score": 1, "segment": [2, 1]}]}}))
    args = {
        "missing_results": [str(tmp_path / "nope.json"), "--gt", GT],
        "missing_gt": [PMIL, "--gt", str(tmp_path / "nope.json")],
        "malformed": [str(bad), "--gt", GT],
        "subset": [PMIL, "--gt", GT, "--subset", "validation"],
        "tiou": [PMIL, "--gt", GT, "--tiou", "abc"],
        "bad_segment": [str(seg), "--gt", GT],
    }[case]
    p = run(*args)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "error" in p.stderr.lower()
    if case == "bad_segment":
        assert "v9" in p.stderr
