"""Benchmark of cola_fast.evaluation (CPU).

(a) Detection mAP of the real P-MIL results file (31,587 detections, THUMOS'14 test):
    fast (vectorised) vs the loop-style reference (evaluation/reference.py) vs a
    re-implementation of the published approach (pandas DataFrames, groupby per class and
    video, iterrows loop over predictions: evaluation/anet_pandas.py; classes run one after
    another, no process pool). Identical numbers asserted.
(b) Whole test set, model-like outputs: synthetic (video_scores, cas, actionness) for the
    210 THUMOS'14 test videos with their real snippet counts (int(duration * 25 / 16)),
    CAS bumps placed on the real ground-truth instances plus noise; proposals + NMS +
    results JSON + mAP: fast pipeline vs reference pipeline; the same JSON and mAP asserted.

Times are medians over --repeats runs taken side by side in this process.

    The fast rows use the proposal path that generate_proposals picks (native C++ ops of
    cola_fast._C when built, else numpy: backend "auto") and, for
    comparison, the numpy path forced. The table says which path ran.

    PYTHONPATH=. python bench/evaluate.py [--repeats 3] [--out bench/results/evaluate_cpu.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cola_fast.evaluation import (ProposalConfig, evaluate_detection, generate_proposals,  # noqa: E402
                                generate_proposals_batch, load_gt, load_results, results_json)
from cola_fast.evaluation import anet_pandas  # noqa: E402
from cola_fast.evaluation import proposals as fast_props  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import measure  # noqa: E402
from machine import machine_lines  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data")
GT = os.path.join(DATA, "gt.json")
PMIL = os.path.join(DATA, "thumos14_test_pmil.json")
EXPECTED = os.path.join(DATA, "thumos14_test_pmil.expected.json")
SHARED_DUR = os.path.join(ROOT, "..", "..", "shared", "data", "thumos14", "durations.json")
CLASSES = ["BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving",
           "CricketBowling", "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing",
           "HammerThrow", "HighJump", "JavelinThrow", "LongJump", "PoleVault", "Shotput",
           "SoccerPenalty", "TennisSwing", "ThrowDiscus", "VolleyballSpiking"]


def timed(fn, repeats, gc_on=False):
    """(result, median s) of fn over repeats (bench/_timing.py). Each run starts from
    gc.collect(); by default the cyclic GC is off during the run (timeit's convention: its
    passes over every live object of the process, e.g. the other pipelines' results, are not
    the code's own cost); gc_on=True keeps Python's default."""
    t = measure({"fn": fn}, repeats, collect=True, gc_off=not gc_on)["fn"]
    return t.result, t.median


def commit():
    try:
        h = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
        dirty = subprocess.call(["git", "diff", "--quiet", "HEAD", "--", "cola_fast", "csrc", "bench",
                               ":(exclude)bench/results"], cwd=ROOT)
        return h + (" (+ uncommitted changes)" if dirty else "")
    except Exception:
        return "unknown"


def durations_path():
    for p in (os.path.join(DATA, "durations.json"), SHARED_DUR):
        if os.path.exists(p):
            return p
    raise SystemExit("durations.json not found (looked in tests/data and ../shared/data/thumos14)")


def synthetic_outputs(seed=0):
    """Model-like outputs for the 210 test videos: per class, Gaussian-ish bumps on the
    ground-truth instances (some missed, some spurious), low noise elsewhere."""
    rng = np.random.default_rng(seed)
    gt = load_gt(GT)["database"]
    dur = json.load(open(durations_path()))
    items, vids = [], []
    for vid, v in gt.items():
        if v["subset"] != "test":
            continue
        T = int(dur[vid] * 25 / 16)
        t = np.arange(T)
        cas = np.abs(rng.standard_normal((T, 20))) * 0.05
        for a in v["annotations"]:
            c = CLASSES.index(a["label"])
            if rng.random() < 0.15:
              continue  # missed instance
            s, e = (x * 25 / 16 for x in a["segment"])
            s += rng.normal(0, 1)
            e += rng.normal(0, 1)
            amp = rng.uniform(0.5, 3)
            ramp = np.clip(np.minimum(t - s + 1.5, e - t + 1.5) / 3, 0, 1)
            cas[:, c] += amp * ramp
        for _ in range(rng.poisson(2)):  # spurious activations
            c = int(rng.integers(0, 20))
            mu, w = rng.uniform(0, T), rng.uniform(1, 8)
            cas[:, c] += rng.uniform(0.3, 1.5) * np.exp(-0.5 * ((t - mu) / w) ** 2)
        cas = np.maximum(cas + rng.standard_normal((T, 20)) * 0.02, 0).astype(np.float32)
        k = max(1, T // 8)
        logits = np.sort(cas, 0)[-k:].mean(0)
        vs = np.exp(3 * logits)
        vs = (vs / vs.sum()).astype(np.float32)
        items.append((vs, cas, cas.sum(1), T))
        vids.append(vid)
    return vids, items


def measure_files(R: int, pandas_repeats: int) -> dict:
    """(a): the three evaluators on the P-MIL file, from files and from parsed input;
    their mAP checked equal to each other and to the vendored expected numbers."""
    thr = np.linspace(0.1, 0.7, 7)
    exp = json.load(open(EXPECTED))
    fast, t_fast = timed(lambda: evaluate_detection(GT, PMIL, "test", thr, backend="auto"), R)
    ref, t_ref = timed(lambda: evaluate_detection(GT, PMIL, "test", thr, backend="reference"), R)
    pdres, t_pd = timed(lambda: anet_pandas.evaluate(GT, PMIL, "test", thr), pandas_repeats)
    assert fast["mAP"] == ref["mAP"] == list(pdres[0]), (fast["mAP"], ref["mAP"], pdres[0])
    assert fast["average_mAP"] == ref["average_mAP"] == pdres[1]
    assert np.max(np.abs(np.array(fast["mAP"]) - exp["mAP"])) <= 1e-9
    # core only (files already parsed)
    gtd, resd = load_gt(GT), load_results(PMIL)
    rawg, rawr = json.load(open(GT)), json.load(open(PMIL))
    _, tc_fast = timed(lambda: evaluate_detection(gtd, resd, "test", thr, backend="auto"), R)
    _, tc_pd = timed(lambda: anet_pandas.evaluate(rawg, rawr, "test", thr), pandas_repeats)
    return dict(mAP_fast=fast["mAP"], avg_fast=fast["average_mAP"], t_pd=t_pd, t_ref=t_ref, t_fast=t_fast,
              tc_fast=tc_fast, tc_pd=tc_pd)


def table_files(m: dict) -> list:
    return ["## (a) Detection mAP, real P-MIL results (31,587 detections, 210 test videos)", "",
            "mAP@0.1:0.7 = " + ", ".join(f"{100 * v:.2f}" for v in m["mAP_fast"]) +
            f"; avg {100 * m['avg_fast']:.2f} - identical (==) for all three and "
            "within 1e-9 of the vendored expected numbers.", "",
            "| evaluator | from files (s) | speed-up | parsed input (s) | speed-up |",
            "|---|---:|---:|---:|---:|",
            f"| published approach, pandas + iterrows (serial, no process pool) | {m['t_pd']:.3f} | 1.0x | {m['tc_pd']:.3f} | 1.0x |",
            f"| cola_fast reference (loop style, numpy) | {m['t_ref']:.3f} | {m['t_pd'] / m['t_ref']:.1f}x | | |",
            f"| cola_fast fast (vectorised) | {m['t_fast']:.3f} | **{m['t_pd'] / m['t_fast']:.0f}x** | {m['tc_fast']:.3f} | **{m['tc_pd'] / m['tc_fast']:.0f}x** |",
            "", "'from files' includes reading and validating the JSON (json.load of the 2.6 MB "
            "results takes about 0.2 s of it); 'parsed input' starts from loaded dicts.", ""]


def measure_testset(R: int) -> dict:
    """(b): proposals + NMS (+ results JSON + mAP) of every pipeline on the synthetic test-set
    outputs; the results of all pipelines checked equal."""
    thr = np.linspace(0.1, 0.7, 7)
    vids, items = synthetic_outputs()
    cfg = ProposalConfig.thumos14()
    n_snip = sum(it[3] for it in items)

    path = fast_props.proposal_backend()  # what backend "auto" uses (native when built)

    def pipeline(backend, batch=True):
        if backend == "reference":
            dets = generate_proposals_batch(items, CLASSES, cfg, backend=backend)
        elif batch:
            dets = fast_props.generate_proposals_batch(items, CLASSES, cfg, backend=backend)
        else:
            dets = [generate_proposals(*it, CLASSES, cfg, backend=backend) for it in items]
        res = results_json(dict(zip(vids, dets)))
        return res, evaluate_detection(GT, res, "test", thr, backend=backend)

    (res_r, m_r), t_pr = timed(lambda: pipeline("reference"), R)
    (res_f, m_f), t_pf = timed(lambda: pipeline("auto"), R)
    assert res_f == res_r, "results JSON differ"
    del res_r
    (res_v, m_v), t_pv = timed(lambda: pipeline("auto", batch=False), R)
    assert res_v == res_f, "results JSON differ"
    del res_v
    (res_n, m_n), t_pn = timed(lambda: pipeline("numpy"), R)
    assert res_n == res_f, "results JSON differ"
    del res_n
    assert m_f == m_r == m_v == m_n
    # proposals alone
    _, tp_r = timed(lambda: generate_proposals_batch(items, CLASSES, cfg, backend="reference"), R)
    _, tp_f = timed(lambda: fast_props.generate_proposals_batch(items, CLASSES, cfg), R)
    _, tp_v = timed(lambda: [generate_proposals(*it, CLASSES, cfg) for it in items], R)
    _, tp_n = timed(lambda: fast_props.generate_proposals_batch(items, CLASSES, cfg, backend="numpy"), R)
    # the same with Python's cyclic GC on during the runs (its default)
    _, tg_pr = timed(lambda: pipeline("reference"), R, gc_on=True)
    _, tg_pf = timed(lambda: pipeline("auto"), R, gc_on=True)
    _, tgp_r = timed(lambda: generate_proposals_batch(items, CLASSES, cfg, backend="reference"), R, gc_on=True)
    _, tgp_f = timed(lambda: fast_props.generate_proposals_batch(items, CLASSES, cfg), R, gc_on=True)
    n_det = sum(len(v) for v in res_f["results"].values())
    return dict(path=path, n_items=len(items), n_snip=n_snip, n_det=n_det, mAP_f=m_f["mAP"],
              avg_f=m_f["average_mAP"], tp_r=tp_r, t_pr=t_pr, tp_n=tp_n, t_pn=t_pn, tp_v=tp_v, t_pv=t_pv,
              tp_f=tp_f, t_pf=t_pf, tgp_r=tgp_r, tg_pr=tg_pr, tgp_f=tgp_f, tg_pf=tg_pf)


def table_testset(m: dict) -> list:
    return ["## (b) Whole THUMOS'14 test set, model-like outputs", "",
            f"{m['n_items']} videos, {m['n_snip']} snippets in all, {m['n_det']} detections after NMS; "
            "synthetic CAS with bumps on the real instances (see the script). Same results JSON "
            "(dict ==) and the same mAP for all rows. mAP@0.1:0.7 of these outputs: " +
            ", ".join(f"{100 * v:.2f}" for v in m["mAP_f"]) + f"; avg {100 * m['avg_f']:.2f}.", "",
            f"Proposal path of backend \"auto\" in this run: **{m['path']}**"
            + (" (C++ CPU ops of cola_fast._C, single-threaded)" if m['path'] == "native" else
               " (cola_fast._C not built: vectorised numpy)") + "; the numpy row forces the numpy path.", "",
            "| pipeline | proposals + NMS (s) | speed-up | + results JSON + mAP (s) | speed-up |",
            "|---|---:|---:|---:|---:|",
            f"| reference (loop style, per video) | {m['tp_r']:.3f} | 1.0x | {m['t_pr']:.3f} | 1.0x |",
            f"| fast, numpy path, all videos in one call | {m['tp_n']:.3f} | {m['tp_r'] / m['tp_n']:.1f}x | {m['t_pn']:.3f} | {m['t_pr'] / m['t_pn']:.1f}x |",
            f"| fast ({m['path']}), one video per call (generate_proposals) | {m['tp_v']:.3f} | {m['tp_r'] / m['tp_v']:.1f}x | {m['t_pv']:.3f} | {m['t_pr'] / m['t_pv']:.1f}x |",
            f"| fast ({m['path']}), all videos in one call (generate_proposals_batch) | {m['tp_f']:.3f} | **{m['tp_r'] / m['tp_f']:.1f}x** | {m['t_pf']:.3f} | **{m['t_pr'] / m['t_pf']:.1f}x** |",
            "", "With the cyclic GC on during the runs (Python's default; its passes also walk the "
            "other results alive in this process, so absolute times depend on the heap):", "",
            "| pipeline | proposals + NMS (s) | speed-up | + results JSON + mAP (s) | speed-up |",
            "|---|---:|---:|---:|---:|",
            f"| reference (loop style, per video) | {m['tgp_r']:.3f} | 1.0x | {m['tg_pr']:.3f} | 1.0x |",
            f"| fast ({m['path']}), all videos in one call | {m['tgp_f']:.3f} | {m['tgp_r'] / m['tgp_f']:.1f}x | {m['tg_pf']:.3f} | {m['tg_pr'] / m['tg_pf']:.1f}x |",
            ""]


NOTES = [
    "### Notes", "",
    "- (a) meets the >= 50x target by a wide margin. (b): every fast row reproduces the "
    "reference bit for bit (same proposals, same order, equal floats), so each run mean is "
    "summed in numpy's own pairwise order over the same elements (~19M inner + ~10M outer "
    "elements for this test set). The native path does that, the run finding at all 43 "
    "thresholds, the scores, the greedy NMS (window on sorted starts, the reference's IoU "
    "arithmetic) and the min-max normalisation + 24x upsampling in C++ "
    "(csrc/cpu/proposals.cpp, two calls for the whole test set; the upsampled curves are "
    "made segment by segment in a reused buffer, never as whole-test-set arrays, since "
    "first-touch page faults of fresh memory are slow on this machine); groups whose rank "
    "order has equal scores of different segments take numpy's argsort order, as the "
    "reference. What is left in Python: input checks per video, the output dicts, "
    "results JSON and the (vectorised) mAP.",
    "- The numpy path (no compiled extension) is kept as the fallback and gives the same JSON.",
    "- With the cyclic GC on, the proposals keep their speed-up but the '+ results JSON + mAP' "
    "column does not reach 20x: that part (evaluation/io.py: results_json, load_gt of the "
    "ground-truth file, results validation; evaluation/detection.py) makes ~10^5 small objects "
    "while the other pipelines' results are alive, and the GC's full passes over the heap "
    "then cost more than the native proposals themselves. It is outside the proposal code.",
    "- Rows are timed one after another on a shared machine: a row's two columns come from "
    "different moments, so they can even look inconsistent (e.g. a '+ mAP' time below the "
    "proposals-only time); compare ratios within a column.",
    "- The machine is 2 cores shared with other jobs: absolute times vary by about 2x from "
    "run to run; ratios are from the same run.", ""]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pandas-repeats", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "evaluate_cpu.md"))
    args = ap.parse_args()
    R = args.repeats
    files = measure_files(R, args.pandas_repeats)
    testset = measure_testset(R)  # after (a): its large object graphs are gone and no longer slow the GC
    print(f"proposal path of backend 'auto': {testset['path']}")
    lines = [f"# cola_fast.evaluation on CPU", "", *machine_lines("cpu"),
             f"commit {commit()}; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores (shared with other jobs), numpy {np.__version__}, "
             f"python {platform.python_version()}; medians of {R} runs ({args.pandas_repeats} for the "
             "pandas baseline), taken side by side; gc.collect() before each run and the cyclic GC "
             "off during it (timeit's convention; (b) also has a table with it on).", ""]
    lines += table_files(files) + table_testset(testset) + NOTES
    print("\n".join(lines))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
