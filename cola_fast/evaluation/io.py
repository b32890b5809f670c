"""Reading and writing the ActivityNet-style JSON files, with clear validation errors."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np


from ..inputs import GT_SCHEMA, RESULTS_SCHEMA, InputError, check, read_json

# the boundary's error (cola_fast.inputs), under the name this module gave it first
EvaluationInputError = InputError


def _read_json(path, what: str):
    """A JSON file parsed at the reading boundary (decode, parse, depth); the schema is
    checked by the caller, in bulk first where speed matters."""
    return read_json(path, f"{what} file")


class GroundTruth(dict):
    """The validated dict returned by load_gt; passing it again skips re-validation."""


def _document(path_or_dict, name, what: str, schema):
    """(source name, document checked against schema) of a JSON path or an already
    loaded dict; what: "ground-truth" or "results"."""
    if isinstance(path_or_dict, (str, os.PathLike)):
        src = f"{what} file {os.fspath(path_or_dict)}"
        data = _read_json(path_or_dict, what)
    elif isinstance(path_or_dict, dict):
        src = name or f"<{what} dict>"
        data = path_or_dict
    else:
        raise TypeError(f"expected a {what} path or dict, got {type(path_or_dict).__name__}")
    return src, check(data, schema, src)


def _segment(seg) -> list[float]:
    return [float(seg[0]), float(seg[1])]


def load_gt(path_or_dict, name: str | None = None) -> dict:
    """Load and validate a ground-truth file (COLA_SPEC 1 layout; inputs.GT_SCHEMA).

    Accepts a path (``.json`` or ``.json.gz``) or an already loaded dict. Returns a new
    dict ``{"database": {vid: {"subset": str, "annotations": [{"label": str,
    "segment": [float, float]}]}}}`` (string segment values converted to float, extra
    keys dropped, order kept). Raises InputError (a ValueError) naming the file and the
    path to the bad value.
    """
    if isinstance(path_or_dict, GroundTruth):
        return path_or_dict
    _, data = _document(path_or_dict, name, "ground-truth", GT_SCHEMA)
    out = {vid: {"subset": v["subset"],
                 "annotations": [{"label": a["label"], "segment": _segment(a["segment"])}
                                 for a in v["annotations"]]}
           for vid, v in data["database"].items()}
    return GroundTruth(database=out)


def load_results(path_or_dict, name: str | None = None) -> dict:
    """Load and validate a results file in the ActivityNet format
    ``{"results": {vid: [{"label", "score", "segment"}]}}`` (inputs.RESULTS_SCHEMA).
    Returns a clean copy with float scores and segments (order kept)."""
    _, data = _document(path_or_dict, name, "results", RESULTS_SCHEMA)
    return {"results": {vid: [{"label": d["label"], "score": float(d["score"]), "segment": _segment(d["segment"])}
                              for d in dets]
                        for vid, dets in data["results"].items()}}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def write_json_atomic(obj, path) -> None:
    """Write JSON to ``path`` atomically (temp file in the same folder, then rename)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def results_document(results: dict, version: str = "cola_fast", method: str = "CoLA (cola_fast)",
                     external_data: dict | None = None) -> dict:
    """The results file's top level around already clean per-video detections: the keys
    the official CoLA evaluator (method, results) and the ActivityNet one (version,
    results, external_data) check for. external_data: {"used", "details"} of the features
    (TrainConfig.external_data(); default: used, not described). No validation: see results_json."""
    return {"version": version, "method": method, "results": results,
            "external_data": external_data or {"used": True, "details": "pre-extracted video features"}}


def results_json(per_video_dets: dict, path=None, version: str = "cola_fast",
                 method: str = "CoLA (cola_fast)", external_data: dict | None = None) -> dict:
    """Build ``{"version", "method", "results": {vid: [dets]}, "external_data"}`` from
    ``{vid: [{"label", "score", "segment"}]}`` (as returned by generate_proposals);
    validated, numpy scalars converted to Python floats. Written atomically if ``path``.
    The four keys are what the field's evaluators check for: the official CoLA one needs
    ``method`` and ``results``, the ActivityNet one ``version``, ``results`` and
    ``external_data``."""
    if not isinstance(per_video_dets, dict):
        raise TypeError(f"results_json expects a dict vid -> detections, got {type(per_video_dets).__name__}")
    got = _bulk({"results": per_video_dets})
    if got is None:
        clean = load_results({"results": _jsonable(per_video_dets)}, name="<per_video_dets>")
    else:
        keys, counts, labels, scores, segs = got
        sc, sg = scores.tolist(), segs.tolist()
        dets = [{"label": lab, "score": v, "segment": g} for lab, v, g in zip(labels, sc, sg)]
        ends = np.cumsum(counts).tolist()
        starts = [0] + ends[:-1]
        clean = {"results": {str(k): dets[a:b] for k, a, b in zip(keys, starts, ends)}}
    out = results_document(clean["results"], version, method, external_data)
    if path is not None:
        write_json_atomic(out, path)
    return out


def format_table(res: dict, title: str | None = None) -> str:
    """A readable mAP table: one column per tIoU threshold (percent, 2 decimals) and Avg."""
    th = [float(t) for t in res["tiou_thresholds"]]
    maps = [float(m) for m in res["mAP"]]
    heads = [f"{t:.2f}" for t in th] + ["Avg"]
    vals = [f"{100 * m:.2f}" for m in maps] + [f"{100 * float(res['average_mAP']):.2f}"]
    w = [max(len(h), len(v)) for h, v in zip(heads, vals)]
    lines = []
    if title:
        lines.append(title)
    lines.append("| tIoU | " + " | ".join(h.rjust(n) for h, n in zip(heads, w)) + " |")
    lines.append("|------|" + "|".join("-" * (n + 2) for n in w) + "|")
    lines.append("| mAP  | " + " | ".join(v.rjust(n) for v, n in zip(vals, w)) + " |")
    return "\n".join(lines)


def _bulk(data):
    """Bulk extraction + checks of a results dict; None when anything is unusual (the
    caller then runs the per-item validator for a precise error or a clean copy)."""
    res = data.get("results") if isinstance(data, dict) else None
    if not isinstance(res, dict):
        return None
    try:
        lists = list(res.values())
        if not all(type(d) is list for d in lists):
            return None
        flat = [x for d in lists for x in d]
        labels = [x["label"] for x in flat]
        raw_scores = [x["score"] for x in flat]
        scores = np.array(raw_scores, dtype=np.float64).reshape(len(flat))
        segs = np.array([x["segment"] for x in flat], dtype=np.float64)
        segs = segs.reshape(len(flat), -1) if flat else np.zeros((0, 2))
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    ok = (segs.shape[1] == 2 and all(type(lab) is str for lab in labels)
          and not any(isinstance(v, (bool, str, bytes)) for v in raw_scores)
          and bool(np.all(np.isfinite(scores))) and bool(np.all(np.isfinite(segs)))
          and bool(np.all(segs[:, 1] >= segs[:, 0])))
    if not ok:
        return None
    return list(res.keys()), [len(d) for d in lists], labels, scores, segs


def results_arrays(path_or_dict, name: str | None = None):
    """Results as flat arrays (video ids, per-detection video index, labels, scores,
    starts, ends), validated in bulk; anything odd is handed to load_results, which
    either raises its precise error or returns the clean copy used instead."""
    if isinstance(path_or_dict, (str, os.PathLike)):
        name = f"results file {os.fspath(path_or_dict)}"
        data = _read_json(path_or_dict, "results")
    else:
        data = path_or_dict
    got = _bulk(data)
    if got is None:
        got = _bulk(load_results(data, name))
    keys, counts, labels, scores, segs = got
    vid_of = np.repeat(np.arange(len(keys)), counts)
    return keys, vid_of, labels, scores, segs[:, 0].copy(), segs[:, 1].copy()
