"""Detection mAP of an ActivityNet-format results file (COLA_SPEC 6), or of a finished
run's checkpoints with corrected evaluation settings.

    python -m cola_fast.evaluate RESULTS.json --gt GT.json [--subset test]
        [--tiou 0.1:0.7:0.1] [--json] [--per-class] [--backend auto|numpy|native|reference]
        [--ties official|stable] [--report DIR [--compare OTHER_RESULTS.json]]
    python -m cola_fast.evaluate --run RUN [--set feature_fps=30 ...] [--out DIR] [--per-class]

Prints a table (tIoU thresholds as columns, mAP in percent, plus the average), or with
--json one JSON object {"tiou_thresholds", "mAP" (fractions), "average_mAP",
"per_class_AP": {class: [AP at each threshold]}, "ties"}. --per-class adds a table of AP per
class, with a header row, in the class order of the ground truth (its "classes" list,
else alphabetical). --ties official (the default) orders tied scores as the published code
does, by numpy's quicksort, whose order among ties can differ between machines and numpy
versions; --ties stable orders them by score, then video id, segment start, end (and
ground-truth ties by start, end): the same mAP on every machine, whatever the order of the
entries in the files. --report DIR also writes DIR/index.html, a self-contained page with
per-class AP, precision-recall curves, a DETAD-style false-positive breakdown, length
buckets and the worst videos (evaluation/analysis.py); --compare puts a second results
file beside the first on that page.

--run RUN evaluates the run's checkpoints (best.pt, last.pt) on its test split again,
with the run's settings except the evaluation-only ones given by --set, --tiou or --backend
(config.EVALUATION_FIELDS: feature_fps, snippet_frames, tiou, proposals, eval_backend,
check_durations, external_data_details, device). It writes into a new folder, RUN/reeval-<time>/ or
--out DIR: config.json (the settings used), <checkpoint>_results.json per checkpoint,
summary.json (mAP of each) and report/index.html (for the checkpoint scoring best);
the run's own files are not touched.
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
    p.add_argument("results", nargs="?", help="results JSON: {\"results\": {video: [{label, score, segment}]}}")
    p.add_argument("--gt", help="ground-truth JSON ({\"database\": ...}); required with RESULTS")
    p.add_argument("--run", metavar="RUN", help="instead of RESULTS: evaluate this run's checkpoints again on "
                   "its test split (see above)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="with --run: an evaluation-only setting to change, e.g. feature_fps=30 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="with --run: the folder to write (default: RUN/reeval-<time>)")
    p.add_argument("--subset", default="test", help="ground-truth subset to evaluate (default: test)")
    p.add_argument("--tiou", default=None,
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
        thr = parse_tiou(args.tiou or "0.1:0.7:0.1")
    except ValueError as e:
        parser.error(f"--tiou: {e}")
    if args.impl and args.backend:
        parser.error("--impl is the former name of --backend: give one of them")
    backend = args.backend or {"fast": "auto", "reference": "reference", None: "auto"}[args.impl]
    if args.run:
        return _main_run(parser, args, thr, backend)
    if args.set or args.out:
        parser.error("--set and --out go with --run")
    if not args.results or not args.gt:
        parser.error("give a RESULTS file and --gt GT.json, or --run RUN")
    if args.compare and not args.report:
        parser.error("--compare needs --report DIR (the comparison is drawn on the report page)")
    try:
        gt = load_gt(args.gt)
        results = load_results(args.results)
        res = evaluate_detection(gt, results, subset=args.subset, tiou_thresholds=thr,
                                 backend=backend, ties=args.ties)
        order = gt_class_order(args.gt) if args.per_class else None
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
            print(per_class_table(res, order))
    return 0


def _main_run(parser, args, thr, backend) -> int:
    """evaluate --run: --tiou and --backend are the run's tiou and eval_backend settings."""
    if args.results or args.gt or args.report or args.json:
        parser.error("--run evaluates a run's checkpoints: give no RESULTS, --gt, --report or --json with it")
    named = ([f"tiou={','.join(f'{t:g}' for t in thr)}"] if args.tiou else []) + \
            ([f"eval_backend={backend}"] if args.backend or args.impl else [])
    try:
        reevaluate_run(args.run, named + args.set, args.out, per_class=args.per_class)
    except (ValueError, OSError) as e:  # DataError, RunError, EvaluationInputError
        return fail(e)
    return 0


def gt_class_order(path) -> list:
    """The class order of a gt.json: its "classes" list, else alphabetical (as the trainer's)."""
    from cola_fast.data import class_names_from_gt
    return class_names_from_gt(path)


def per_class_table(res: dict, order) -> str:
    """AP per class in percent: a header row (class, each tIoU threshold, Avg), then one
    row per class in `order` (the classes of res that order lacks come last)."""
    aps = res["ap_per_class"]
    names = [c for c in order if c in aps] + [c for c in aps if c not in order]
    w = max([len("class")] + [len(n) for n in names])
    lines = [f"{'class'.ljust(w)}  " + "  ".join(f"{float(t):6.2f}" for t in res["tiou_thresholds"]) + "     Avg"]
    for name in names:
        vals = [100 * float(a) for a in aps[name]]
        lines.append(f"{name.ljust(w)}  " + "  ".join(f"{v:6.2f}" for v in vals) + f"  {sum(vals) / len(vals):6.2f}")
    return "\n".join(lines)


# ======================================================================================
# --run: a finished run's checkpoints evaluated again with corrected evaluation settings
# ======================================================================================
CHECKPOINTS = ("best.pt", "last.pt")


def reeval_config(saved, items: list):
    """The run's configuration with the --set items applied; ValueError for a field that
    is not evaluation-only (a model trained with it would differ: start a new run)."""
    from cola_fast.config import EVALUATION_FIELDS, parse_override
    cfg = saved
    for item in items:
        cfg = parse_override(cfg, item)
        changed = [k for k, v in cfg.to_dict().items() if v != getattr(saved, k) and k not in EVALUATION_FIELDS]
        if changed:
            raise ValueError(f"--set {item}: {changed[0]} is a training setting; re-evaluation changes only "
                             f"{', '.join(EVALUATION_FIELDS)} (train a new run to change {changed[0]})")
    return cfg.validate("settings")


def reeval_folder(run, out):
    """The new folder of a re-evaluation: out, or run/reeval-<time> (never an existing one)."""
    import time
    from pathlib import Path
    if out is None:
        out = Path(run) / time.strftime("reeval-%Y%m%d-%H%M%S")
        n = 1
        while out.exists():
            n += 1
            out = out.with_name(time.strftime("reeval-%Y%m%d-%H%M%S") + f"-{n}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def reevaluate_run(run, items: list, out=None, per_class: bool = False, say=print) -> dict:
    """Evaluate the checkpoints of run on its test split with the settings items
    (--set FIELD=VALUE, evaluation-only) into a new folder; returns
    {"folder", "checkpoints": {name: {"step", "tiou_thresholds", "mAP", "average_mAP"}}}."""
    import torch
    from pathlib import Path
    from cola_fast.infer import load_model

    run = Path(run)
    names = [n for n in CHECKPOINTS if (run / n).is_file()]
    if not names:
        raise ValueError(f"--run {run}: holds no checkpoint ({' or '.join(CHECKPOINTS)})")
    _, saved, class_names = load_model(run / names[0])
    cfg = reeval_config(saved, items)
    threads = torch.get_num_threads()
    try:
        if cfg.threads > 0:  # the run's thread count, as its evaluations had
            torch.set_num_threads(cfg.threads)
        return _reevaluate(run, names, cfg, saved, class_names, out, per_class, say)
    finally:
        torch.set_num_threads(threads)


def _reevaluate(run, names, cfg, saved, class_names, out, per_class, say) -> dict:
    """reevaluate_run's work once its settings are known."""
    import torch
    from pathlib import Path
    from cola_fast.config import resolve_device
    from cola_fast.data import prepare_data
    from cola_fast.detect import evaluate
    from cola_fast.evaluation import format_table, load_gt, write_json_atomic
    from cola_fast.evaluation.report import report_for_results
    from cola_fast.infer import load_model

    device = resolve_device(cfg.device)
    changes = {k: v for k, v in cfg.to_dict().items() if v != getattr(saved, k)}
    say(f"re-evaluating {run} with " + (", ".join(f"{k}={v!r}" for k, v in changes.items()) or "its own settings"))
    _, _, test_ds = prepare_data(cfg, log=say)
    if test_ds.class_names != class_names:
        raise ValueError(f"--run {run}: the data's classes {test_ds.class_names} are not the checkpoint's "
                         f"{class_names}")
    gt = load_gt(test_ds.gt_path)
    folder = reeval_folder(run, None if out is None else Path(out))
    write_json_atomic({"run": str(run), "changed": changes, "config": cfg.recorded()}, folder / "config.json")
    summary, results = {}, {}
    for name in names:
        model, _, _ = load_model(run / name, device)
        res, results[name] = evaluate(model, test_ds, cfg, device, gt=gt)
        stem = name[:-len(".pt")]
        write_json_atomic(results[name], folder / f"{stem}_results.json")
        step = torch.load(run / name, map_location="cpu", weights_only=True).get("step")
        summary[name] = {"step": step, "tiou_thresholds": [float(t) for t in res["tiou_thresholds"]],
                         "mAP": [float(m) for m in res["mAP"]], "average_mAP": float(res["average_mAP"])}
        say(format_table(res, title=f"{name} (step {step}), detection mAP (%)"))
        if per_class:
            say(per_class_table(res, class_names))
    top = max(names, key=lambda n: summary[n]["average_mAP"])
    write_json_atomic({"run": str(run), "changed": changes, "checkpoints": summary, "best": top},
                      folder / "summary.json")
    path, *_ = report_for_results(folder / "report", results[top], gt, tiou_thresholds=cfg.tiou,
                                  labels=(top,), title=f"cola_fast re-evaluation: {run} ({top})",
                                  meta={"run": str(run), "checkpoint": top, "changed": json.dumps(changes)})
    say(f"re-evaluation: {folder} (results, summary.json; report {path})")
    return {"folder": folder, "checkpoints": summary}


if __name__ == "__main__":
    sys.exit(main())
