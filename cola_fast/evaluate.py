"""Detection mAP of an ActivityNet-format results file (COLA_SPEC 6).

    python -m cola_fast.evaluate RESULTS.json --gt GT.json [--subset test]
        [--tiou 0.1:0.7:0.1] [--json] [--backend auto|numpy|native|reference]
        [--ties official|stable] [--report DIR [--compare OTHER_RESULTS.json]]

Prints a table (tIoU thresholds as columns, mAP in percent, plus the average), or with
--json one JSON object {"tiou_thresholds", "mAP" (fractions), "average_mAP",
"per_class_AP": {class: [AP at each threshold]}, "ties"}. --ties official (the default)
orders tied scores as the published code does, by numpy's quicksort, whose order among
ties can differ between machines and numpy versions; --ties stable orders them by score,
then video id, segment start, end (and ground-truth ties by start, end): the same mAP on
every machine, whatever the order of the entries in the files. --report DIR also writes DIR/index.html,
a self-contained page with per-class AP, precision-recall curves, a DETAD-style
false-positive breakdown, length buckets and the worst videos (evaluation/analysis.py);
--compare puts a second results file beside the first on that page.
Exit status 2 for usage errors (missing or malformed files, unknown subset, bad --tiou).
"""
from __future__ import annotations

import json
import sys

from cola_fast.cli import ArgumentParser, fail


def _parser():
    p = ArgumentParser(
        prog="python -m cola_fast.evaluate",
        description="Temporal action detection mAP (ActivityNet protocol, as used by CoLA).")
    p.add_argument("results", help="results JSON: {\"results\": {video: [{label, score, segment}]}}")
    p.add_argument("--gt", required=True, help="ground-truth JSON ({\"database\": ...})")
    p.add_argument("--subset", default="test", help="ground-truth subset to evaluate (default: test)")
    p.add_argument("--tiou", default="0.1:0.7:0.1",
                   help="tIoU thresholds: START:STOP:STEP (inclusive) or a comma list "
                        "(default 0.1:0.7:0.1; ActivityNet: 0.5:0.95:0.05)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--per-class", action="store_true", help="also print / include per-class AP")
    p.add_argument("--backend", choices=("auto", "numpy", "native", "reference"), default=None,
                   help="the evaluator, in the ops' vocabulary: auto (vectorised; default), numpy, "
                        "native (C++ proposal ops), or reference (the loop-style oracle)")
    p.add_argument("--ties", choices=("official", "stable"), default="official",
                   help="order of tied scores and tied tIoUs: official (numpy's quicksort order, as the "
                        "published code; may differ between machines; default) or stable (score, then video "
                        "id, start, end: the same on every machine and for every order of the entries)")
    p.add_argument("--impl", choices=("fast", "reference"), default=None,
                   help="the former name of --backend: fast = auto, reference = reference")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/index.html: per-class AP, PR curves, error breakdown, "
                        "length buckets, worst videos (one offline page)")
    p.add_argument("--compare", metavar="OTHER_RESULTS",
                   help="with --report: a second results file shown beside the first")
    return p


def _labels(a: str, b: str | None):
    """Short names for the two runs on the page: file names, or paths if those agree."""
    import os
    if b is None:
        return (os.path.basename(a),)
    na, nb = os.path.basename(a), os.path.basename(b)
    return (na, nb) if na != nb else (a, b)


def _write_report(args, gt, results, thr) -> str:
    from cola_fast.evaluation import load_results
    from cola_fast.evaluation.report import report_for_results
    other = load_results(args.compare) if args.compare else None
    n_det = sum(len(d) for d in results["results"].values())
    meta = {"results": args.results, "ground truth": args.gt, "subset": args.subset,
            "detections": f"{n_det:,}"}
    if args.compare:
        meta["compared with (B)"] = args.compare
    path, _, _, seconds = report_for_results(args.report, results, gt, subset=args.subset,
                                             tiou_thresholds=thr, other=other,
                                             labels=_labels(args.results, args.compare), meta=meta)
    print(f"report: {path} (analysis {seconds:.2f} s)", file=sys.stderr)
    return path


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from cola_fast.evaluation import (EvaluationInputError, evaluate_detection, format_table,
                                      load_gt, load_results, parse_tiou)
    try:
        thr = parse_tiou(args.tiou)
    except ValueError as e:
        parser.error(f"--tiou: {e}")
    if args.impl and args.backend:
        parser.error("--impl is the former name of --backend: give one of them")
    backend = args.backend or {"fast": "auto", "reference": "reference", None: "auto"}[args.impl]
    if args.compare and not args.report:
        parser.error("--compare needs --report DIR (the comparison is drawn on the report page)")
    try:
        gt = load_gt(args.gt)
        results = load_results(args.results)
        res = evaluate_detection(gt, results, subset=args.subset, tiou_thresholds=thr,
                                 backend=backend, ties=args.ties)
        if args.report:
            try:
                _write_report(args, gt, results, thr)
            except OSError as e:
                return fail(f"cannot write the report to {args.report}: {e}")
    except (EvaluationInputError, ValueError, TypeError, OSError) as e:
        return fail(e)
    if args.json:
        out = {k: res[k] for k in ("tiou_thresholds", "mAP", "average_mAP")}
        out["per_class_AP"] = res["ap_per_class"]
        out["ties"] = res["ties"]
        if args.per_class:
            out["ap_per_class"] = res["ap_per_class"]
        print(json.dumps(out))
    else:
        print(format_table(res, title=f"detection mAP (%), subset {args.subset!r}, ties {args.ties}, "
                                      f"{args.results}"))
        if args.per_class:
            w = max(len(n) for n in res["ap_per_class"])
            for name, aps in res["ap_per_class"].items():
                print(f"{name.ljust(w)}  " + "  ".join(f"{100 * a:6.2f}" for a in aps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
