"""Detection mAP of an ActivityNet-format results file (COLA_SPEC 6).

    python -m cola_fast.evaluate RESULTS.json --gt GT.json [--subset test]
        [--tiou 0.1:0.7:0.1] [--json] [--impl fast|reference]

Prints a table (tIoU thresholds as columns, mAP in percent, plus the average), or with
--json one JSON object {"tiou_thresholds", "mAP" (fractions), "average_mAP"}.
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
    p.add_argument("--impl", choices=("fast", "reference"), default="fast",
                   help="vectorised evaluator (default) or the loop-style reference")
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from cola_fast.evaluation import (EvaluationInputError, evaluate_detection, format_table,
                                      load_gt, load_results, parse_tiou)
    try:
        thr = parse_tiou(args.tiou)
    except ValueError as e:
        parser.error(f"--tiou: {e}")
    try:
        gt = load_gt(args.gt)
        results = load_results(args.results)
        res = evaluate_detection(gt, results, subset=args.subset, tiou_thresholds=thr,
                                 impl=args.impl)
    except (EvaluationInputError, ValueError, TypeError, OSError) as e:
        return fail(e)
    if args.json:
        out = {k: res[k] for k in ("tiou_thresholds", "mAP", "average_mAP")}
        if args.per_class:
            out["ap_per_class"] = res["ap_per_class"]
        print(json.dumps(out))
    else:
        print(format_table(res, title=f"detection mAP (%), subset {args.subset!r}, "
                                      f"{args.results}"))
        if args.per_class:
            w = max(len(n) for n in res["ap_per_class"])
            for name, aps in res["ap_per_class"].items():
                print(f"{name.ljust(w)}  " + "  ".join(f"{100 * a:6.2f}" for a in aps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
