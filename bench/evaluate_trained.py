"""Whole test-set evaluation of a trained model, the two evaluation pipelines side by side:
the model's outputs for the 210 THUMOS'14 test videos are computed once, then
proposals + NMS + mAP are timed with backend="reference" (the foundation's loop-style
pipeline) and backend="auto"; the results JSON and the mAP must be identical.

    python bench/evaluate_trained.py RUN_DIR/best.pt [--repeats 3]
Writes bench/results/evaluate_trained_cpu.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cola_fast.evaluation import (ProposalConfig, evaluate_detection, generate_proposals,  # noqa: E402
                                  generate_proposals_batch)
from cola_fast.infer import load_model  # noqa: E402
from cola_fast.data import prepare_data  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import measure  # noqa: E402
from machine import machine_lines  # noqa: E402


def model_outputs(checkpoint):
    """(class names, test split, thresholds, [(vid, video_scores, cas, actionness, T)]) of the test videos."""
    model, cfg, names = load_model(checkpoint)
    _, _, test = prepare_data(cfg, log=lambda *a: None)
    outs = []
    with torch.no_grad():
        for i in range(len(test)):
            it = test[i]
            o = model(it["features"][None], mine=False)
            outs.append((it["vid"], o["video_scores"][0].numpy(), o["cas"][0].numpy(),
                         o["actionness"][0].numpy(), it["num_snippets"]))
    return names, test, np.asarray(cfg.tiou), outs


def measure_pipelines(checkpoint, repeats: int) -> dict:
    """Both pipelines timed alternately (cyclic GC on, Python's default); their results checked equal."""
    names, test, thr, outs = model_outputs(checkpoint)
    pcfg = ProposalConfig.thumos14()

    def reference():
        res = {v: generate_proposals(s, c, a, n, names, pcfg, backend="reference") for v, s, c, a, n in outs}
        return res, evaluate_detection(test.gt_path, {"results": res}, "test", thr, backend="reference")

    def fast():
        res = dict(zip([o[0] for o in outs], generate_proposals_batch([o[1:] for o in outs], names, pcfg)))
        return res, evaluate_detection(test.gt_path, {"results": res}, "test", thr, backend="auto")

    t = measure({"reference": reference, "fast": fast}, repeats, collect=True)
    (r_res, r_map), (f_res, f_map) = t["reference"].result, t["fast"].result
    assert r_res == f_res, "the fast pipeline's detections differ from the reference's"
    assert r_map["mAP"] == f_map["mAP"], (r_map["mAP"], f_map["mAP"])
    return dict(checkpoint=checkpoint, repeats=repeats, videos=len(outs), timings=t,
                detections=sum(len(v) for v in f_res.values()), average_mAP=f_map["average_mAP"])


def table(m: dict) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    tr, tf = m["timings"]["reference"], m["timings"]["fast"]
    return "\n".join([
        f"## Whole test-set evaluation of a trained model ({m['checkpoint']})", "", *machine_lines("cpu"), "",
        f"commit {commit}; {m['videos']} test videos, {m['detections']} detections after NMS; proposals + NMS + "
        f"mAP; both read gt.json from its path; median of {m['repeats']} runs each, alternating, cyclic GC on; "
        f"identical detections (==) and mAP (avg {100 * m['average_mAP']:.2f}).", "",
        "| pipeline | median s | spread | speed-up |", "|---|---:|---:|---:|",
        f"| reference (backend=\"reference\", per video) | {tr.median:.3f} | {100 * tr.spread:.0f}% | 1.0x |",
        f"| fast (backend=\"auto\", all videos in one call) | {tf.median:.3f} | {100 * tf.spread:.0f}% "
        f"| {tr.median / tf.median:.1f}x |"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    text = table(measure_pipelines(args.checkpoint, args.repeats))
    print(text)
    with open(os.path.join(HERE, "results", "evaluate_trained_cpu.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
