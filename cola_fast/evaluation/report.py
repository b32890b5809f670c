"""The evaluation report: one self-contained HTML page (DIR/index.html) drawn from
analysis.Analysis - mAP table, per-class AP, precision-recall curves, the DETAD-style
false-positive breakdown, length buckets and timelines of the worst videos; with a
second run, both side by side and their per-class differences.

A training run's page (report_for_run) compares the best evaluation (chosen on the test
set) with the last step's, and adds the run's environment (env.json) and its curves
(metrics.jsonl: the losses and the mAP at every evaluation). A --seeds run's page
(report_for_seeds) has the mean and std table, every seed's curves and environments.

Figures are inline SVG written here (no plotting library, no script, no stylesheet or
font from anywhere): the page opens offline and nothing on it is fetched.
"""
from __future__ import annotations

import html
import json
import os
import time

import numpy as np

from .analysis import CATEGORIES, ERROR_TYPES, Analysis

CAT_COLORS = ("#2e7d32", "#9ccc65", "#1e88e5", "#fb8c00", "#8e24aa", "#e53935")
RUN_COLORS = ("#1e88e5", "#fb8c00")
_FONT = 'font-family="sans-serif"'

_CSS = """
body{font-family:sans-serif;margin:24px auto;max-width:1180px;color:#222;line-height:1.4}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:2px 7px;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left} .neg{color:#c62828} .pos{color:#2e7d32}
.grid{display:flex;flex-wrap:wrap;gap:6px} .note{color:#555;font-size:13px;max-width:980px}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _pct(x, digits=2) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def _signed(x, digits=2) -> str:
    if not np.isfinite(x):
        return "-"
    cls = "pos" if x > 0 else "neg" if x < 0 else ""
    return f'<span class="{cls}">{100 * x:+.{digits}f}</span>'


def _svg(w, h, body) -> str:
    return (f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'{_FONT} font-size="11">{"".join(body)}</svg>')


def _text(x, y, s, anchor="start", size=11, color="#222", extra="") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{color}" {extra}>{_e(s)}</text>')


# ------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------
def hbar_chart(labels, series, colors, width=560, row=16, vmax=None, signed=False, fmt=_pct):
    """Horizontal bars, one row per label, one bar per series (values as fractions)."""
    series = [np.asarray(s, dtype=float) for s in series]
    lab_w = 8 + 7 * max((len(str(lab)) for lab in labels), default=4)
    plot_w = width - lab_w - 60
    n_s = len(series)
    row = row + 5 * (n_s - 1)
    h = 20 + row * len(labels) + 10
    vals = np.concatenate([np.nan_to_num(s) for s in series]) if series else np.zeros(1)
    top = vmax if vmax is not None else max(float(np.abs(vals).max()), 1e-9)
    x0 = lab_w + (plot_w / 2 if signed else 0)
    scale = (plot_w / 2 if signed else plot_w) / top
    body = [f'<line x1="{x0:.1f}" y1="14" x2="{x0:.1f}" y2="{h - 8}" stroke="#888"/>']
    for i, lab in enumerate(labels):
        y = 18 + i * row
        body.append(_text(lab_w - 6, y + row * 0.65, lab, "end"))
        bh = (row - 4) / n_s
        for k, s in enumerate(series):
            v = float(np.nan_to_num(s[i]))
            x = x0 + min(0.0, v) * scale
            body.append(f'<rect x="{x:.1f}" y="{y + k * bh:.1f}" width="{abs(v) * scale:.1f}" '
                        f'height="{bh:.1f}" fill="{colors[k]}"><title>{_e(lab)}: {fmt(s[i])}</title></rect>')
            if signed:  # the value on the other side of the axis, clear of the labels
                tx, anchor = (x0 - 4, "end") if v >= 0 else (x0 + 4, "start")
            else:
                tx, anchor = x0 + v * scale + 4, "start"
            body.append(_text(tx, y + k * bh + bh * 0.8, fmt(s[i]), anchor, size=9, color="#444"))
    return _svg(width, h, body)


def pr_plot(title, curves, colors, ap_values, w=180, h=150):
    """A small precision-recall plot: curves [(recall, precision)] in the given colors."""
    L, T, R, B = 30, 18, 8, 24
    pw, ph = w - L - R, h - T - B
    body = [f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>',
            _text(w / 2, 12, title, "middle", size=11)]
    for v in (0.0, 0.5, 1.0):
        body.append(_text(L - 3, T + ph * (1 - v) + 4, f"{v:g}", "end", size=9))
        body.append(_text(L + pw * v, T + ph + 11, f"{v:g}", "middle", size=9))
    body.append(_text(L + pw / 2, h - 2, "recall", "middle", size=9, color="#666"))
    body.append(_text(9, T + ph / 2, "precision", "middle", size=9, color="#666",
                      extra=f'transform="rotate(-90 9 {T + ph / 2:.1f})"'))
    for (rec, prec), col in zip(curves, colors):
        if len(rec) == 0:
            continue
        pts = " ".join(f"{L + pw * r:.1f},{T + ph * (1 - p):.1f}" for r, p in zip(rec, prec))
        body.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="1.4"/>')
    for k, (a, col) in enumerate(zip(ap_values, colors)):
        body.append(_text(L + pw - 3, T + 12 + 12 * k, f"AP {_pct(a, 1)}", "end", size=10, color=col))
    return _svg(w, h, body)


def stacked_bars(groups, fractions, width=560, h=230):
    """Vertical bars, one per group, stacked by category (fractions summing to 1)."""
    L, T, B = 36, 10, 40
    n = len(groups)
    pw, ph = width - L - 10, h - T - B
    bw = pw / max(n, 1)
    body = []
    for v in (0, 0.25, 0.5, 0.75, 1):
        y = T + ph * (1 - v)
        body.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        body.append(_text(L - 4, y + 4, f"{int(100 * v)}%", "end", size=9))
    for i, (g, fr) in enumerate(zip(groups, fractions)):
        x, y = L + i * bw + 2, T + ph
        for k, f in enumerate(fr):
            hh = ph * f
            y -= hh
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 4:.1f}" height="{hh:.1f}" '
                        f'fill="{CAT_COLORS[k]}"><title>{_e(g)} {CATEGORIES[k]}: {100 * f:.1f}%</title></rect>')
        body.append(_text(x + (bw - 4) / 2, T + ph + 14, g, "middle", size=10))
    body.append(_text(L + pw / 2, h - 6, "top predictions of each class (G = its number of instances)",
                      "middle", size=10, color="#555"))
    return _svg(width, h, body)


def vbar_chart(labels, series, colors, width=420, h=220, fmt=_pct):
    """Grouped vertical bars (values as fractions, may be negative)."""
    L, T, B = 44, 16, 52
    series = [np.nan_to_num(np.asarray(s, dtype=float)) for s in series]
    allv = np.concatenate(series) if series else np.zeros(1)
    hi, lo = max(float(allv.max()), 0.0), min(float(allv.min()), 0.0)
    span = max(hi - lo, 1e-9)
    pw, ph = width - L - 10, h - T - B
    y0 = T + ph * hi / span
    gw = pw / max(len(labels), 1)
    bw = (gw - 10) / len(series)
    body = [f'<line x1="{L}" y1="{y0:.1f}" x2="{L + pw}" y2="{y0:.1f}" stroke="#888"/>']
    for i, lab in enumerate(labels):
        for k, s in enumerate(series):
            v = float(s[i])
            x = L + i * gw + 5 + k * bw
            y = y0 - max(v, 0) * ph / span
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{abs(v) * ph / span:.1f}" '
                        f'fill="{colors[k]}"><title>{_e(lab)}: {fmt(v)}</title></rect>')
            body.append(_text(x + bw / 2, (y - 3) if v >= 0 else (y0 + abs(v) * ph / span + 10),
                              fmt(v), "middle", size=9))
        body.append(_text(L + i * gw + gw / 2, T + ph + 16, lab, "middle", size=10))
    return _svg(width, h, body)


def timeline(video, class_names, width=1100):
    """Ground truth (grey, outlined red when missed) against the top predictions (coloured
    by category) of one video, one row pair per class present."""
    classes = sorted({g[0] for g in video["gt"]} | {p[0] for p in video["pred"]})
    end = max([g[2] for g in video["gt"]] + [p[2] for p in video["pred"]] + [1.0])
    lab_w = 8 + 7 * max(len(class_names[c]) for c in classes)
    pw = width - lab_w - 16
    sx = pw / end
    row = 22
    h = 26 + row * len(classes) + 18
    body = []
    for t in np.linspace(0, end, 9):
        x = lab_w + t * sx
        body.append(f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{h - 16}" stroke="#eee"/>')
        body.append(_text(x, h - 4, f"{t:.0f}s", "middle", size=9, color="#666"))
    for i, c in enumerate(classes):
        y = 16 + i * row
        body.append(_text(lab_w - 6, y + 14, class_names[c], "end", size=10))
        for cg, s, e, took in video["gt"]:
            if cg == c:
                stroke = "#2e7d32" if took else "#c62828"
                body.append(f'<rect x="{lab_w + s * sx:.1f}" y="{y:.1f}" width="{max((e - s) * sx, 1):.1f}" '
                            f'height="8" fill="#bdbdbd" stroke="{stroke}" stroke-width="0.8">'
                            f'<title>ground truth {_e(class_names[c])} {s:.1f}-{e:.1f}s'
                            f'{"" if took else " (missed)"}</title></rect>')
        for cp, s, e, sc, cat in video["pred"]:
            if cp == c:
                body.append(f'<rect x="{lab_w + s * sx:.1f}" y="{y + 10:.1f}" width="{max((e - s) * sx, 1):.1f}" '
                            f'height="8" fill="{CAT_COLORS[cat]}" fill-opacity="0.85">'
                            f'<title>{_e(class_names[c])} {s:.1f}-{e:.1f}s score {sc:.3f}: '
                            f'{CATEGORIES[cat]}</title></rect>')
    return _svg(width, h, body)


SEED_COLORS = ("#1e88e5", "#fb8c00", "#2e7d32", "#8e24aa", "#e53935", "#00897b", "#6d4c41", "#546e7a")


def line_plot(title, series, w=280, h=190, percent=False):
    """Lines over the training steps: series [(label, steps, values, colour)], one polyline
    each (with a dot per point when a series has few), axes from the data's ranges."""
    L, T, R, B = 46, 20, 10, 28
    pw, ph = w - L - R, h - T - B
    pts = [(x, y) for _, xs, ys, _ in series for x, y in zip(xs, ys) if np.isfinite(y)]
    body = [f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>',
            _text(w / 2, 13, title, "middle", size=11)]
    if not pts:
        body.append(_text(w / 2, T + ph / 2, "no values", "middle", size=10, color="#888"))
        return _svg(w, h, body)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + max(abs(y0), 1e-9))
    sx, sy = pw / (x1 - x0), ph / (y1 - y0)
    fmt = (lambda v: f"{100 * v:.1f}") if percent else (lambda v: f"{v:.3g}")
    for v in (y0, (y0 + y1) / 2, y1):
        body.append(_text(L - 3, T + ph - (v - y0) * sy + 3, fmt(v), "end", size=9))
    for v in (x0, x1):
        body.append(_text(L + (v - x0) * sx, T + ph + 11, f"{v:g}", "middle", size=9))
    body.append(_text(L + pw / 2, h - 3, "step", "middle", size=9, color="#666"))
    for label, xs, ys, col in series:
        xy = [(L + (x - x0) * sx, T + ph - (y - y0) * sy) for x, y in zip(xs, ys) if np.isfinite(y)]
        if len(xy) > 1:
            body.append(f'<polyline points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in xy)}" fill="none" '
                        f'stroke="{col}" stroke-width="1.4"><title>{_e(label)}</title></polyline>')
        if len(xy) <= 30:
            body += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.2" fill="{col}"><title>{_e(label)} step '
                     f'{x:g}: {fmt(y)}</title></circle>' for (a, b), x, y in zip(xy, xs, ys)]
    return _svg(w, h, body)


def read_metrics(run_dir) -> tuple[list, list]:
    """(train records, eval records) of run_dir/metrics.jsonl, as the trainer writes them
    (cola_fast.train.MetricLog); a line that is not a JSON object with a step (torn by a
    kill) is skipped, a missing file gives two empty lists."""
    try:
        lines = open(os.path.join(os.fspath(run_dir), "metrics.jsonl"), encoding="utf-8",
                     errors="replace").read().splitlines()
    except OSError:
        return [], []
    recs = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), int):
            recs.append(r)
    return [r for r in recs if r.get("kind") == "train"], [r for r in recs if r.get("kind") == "eval"]


CURVES = (("train", "loss", "total loss", False), ("train", "loss_action", "classification loss", False),
          ("train", "loss_snico", "SniCo loss", False), ("eval", "average_mAP", "average mAP (%)", True),
          ("eval", "mAP@0.5", "mAP@0.5 (%)", True))


def _curves_section(runs) -> str:
    """runs: [(label, run folder)]: one plot per curve of CURVES, one line per run."""
    metrics = [(label, *read_metrics(d)) for label, d in runs]
    plots = []
    for kind, key, title, percent in CURVES:
        series = []
        for i, (label, train, evals) in enumerate(metrics):
            recs = [r for r in (train if kind == "train" else evals) if isinstance(r.get(key), (int, float))]
            series.append((label, [r["step"] for r in recs], [float(r[key]) for r in recs],
                           SEED_COLORS[i % len(SEED_COLORS)]))
        plots.append(line_plot(title, series, percent=percent))
    legend = _legend(SEED_COLORS, [label for label, _ in runs]) if len(runs) > 1 else ""
    return ("<h2>Curves</h2>"
            '<p class="note">From metrics.jsonl: the training losses averaged over each logging '
            "interval, and the mAP of every evaluation on the test split.</p>"
            + legend + '<div class="grid">' + "".join(plots) + "</div>")


def _env_section(envs) -> str:
    """envs: [(label, env.json record or None)]: one row per field, one column per run;
    rows where the runs differ are marked."""
    keys = list(dict.fromkeys(k for _, e in envs if e for k in e))
    if not keys:
        return '<h2>Environment</h2><p class="note">No env.json (a run started before it was recorded).</p>'
    head = "".join(f"<th>{_e(label)}</th>" for label, _ in envs) if len(envs) > 1 else "<th>value</th>"
    rows = []
    for k in keys:
        vals = [(e or {}).get(k, "-") for _, e in envs]
        mark = ' style="background:#fff3e0"' if len({json.dumps(v) for v in vals}) > 1 else ""
        rows.append(f'<tr{mark}><td class="l">{_e(k)}</td>'
                    + "".join(f'<td class="l">{_e(v)}</td>' for v in vals) + "</tr>")
    return ("<h2>Environment</h2>"
            '<p class="note">env.json: where the run ran (written at its start, compared on --resume)'
            + ("; fields that differ between the runs are shaded" if len(envs) > 1 else "") + ".</p>"
            f'<table><tr><th class="l">field</th>{head}</tr>{"".join(rows)}</table>')


def _markdown_table_html(text: str) -> str:
    """The markdown tables of text (| a | b | lines) as HTML tables, other lines as notes."""
    out, rows = [], []

    def flush():
        if rows:
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows
                     if not set(r.replace("|", "").strip()) <= set("-: ")]
            head = "".join(f"<th>{_e(c)}</th>" for c in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
            rows.clear()
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append(line)
            continue
        flush()
        if line.strip():
            out.append(f"<h3>{_e(line.strip())}</h3>")
    flush()
    return "".join(out)


# ------------------------------------------------------------------------------------
# page sections
# ------------------------------------------------------------------------------------
def _legend(colors, names) -> str:
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{c}"></i>{_e(n)}</span>' for c, n in zip(colors, names)) + "</div>"


def _map_table(runs, labels) -> str:
    thr = runs[0].tiou_thresholds
    head = "".join(f"<th>{t:.2f}</th>" for t in thr) + "<th>Avg</th>"
    rows = []
    for a, lab in zip(runs, labels):
        rows.append(f'<tr><td class="l">{_e(lab)}</td>' + "".join(f"<td>{_pct(m)}</td>" for m in a.mAP)
                    + f"<td><b>{_pct(a.average_mAP)}</b></td></tr>")
    if len(runs) == 2:
        d = runs[1].mAP - runs[0].mAP
        rows.append('<tr><td class="l">difference (B - A)</td>'
                    + "".join(f"<td>{_signed(x)}</td>" for x in d)
                    + f"<td>{_signed(runs[1].average_mAP - runs[0].average_mAP)}</td></tr>")
    return f'<table><tr><th class="l">mAP (%) at tIoU</th>{head}</tr>{"".join(rows)}</table>'


def _per_class_section(runs, labels) -> str:
    a = runs[0]
    avg = [r.ap.mean(axis=0) for r in runs]
    order = np.argsort(-avg[-1] if len(runs) == 1 else -avg[0], kind="stable")
    names = [a.class_names[i] for i in order]
    thr = a.tiou_thresholds
    out = ["<h2>Per-class AP</h2>"]
    if len(runs) == 1:
        out.append('<p class="note">Sorted by AP averaged over the tIoU thresholds.</p>')
        head = "".join(f"<th>{t:.2f}</th>" for t in thr)
        body = "".join(
            f'<tr><td class="l">{_e(a.class_names[i])}</td><td>{a.n_gt[i]}</td><td>{a.n_pred[i]}</td>'
            + "".join(f"<td>{_pct(x)}</td>" for x in a.ap[:, i]) + f"<td><b>{_pct(avg[0][i])}</b></td></tr>"
            for i in order)
        out.append(hbar_chart(names, [avg[0][order], a.ap_at_pr_tiou[order]], RUN_COLORS, vmax=1.0))
        out.append(_legend(RUN_COLORS, ["AP averaged over tIoU", f"AP at tIoU {a.pr_tiou:g}"]))
        out.append(f'<table><tr><th class="l">class</th><th>instances</th><th>predictions</th>{head}'
                   f"<th>Avg</th></tr>{body}</table>")
    else:
        b = runs[1]
        diff = avg[1] - avg[0]
        d_order = np.argsort(-diff, kind="stable")
        out.append(f'<p class="note">A = {_e(labels[0])}, B = {_e(labels[1])}. Sorted by A\'s AP averaged '
                   "over the tIoU thresholds.</p>")
        out.append(hbar_chart(names, [avg[0][order], avg[1][order]], RUN_COLORS, vmax=1.0))
        out.append(_legend(RUN_COLORS, [f"A: {labels[0]}", f"B: {labels[1]}"]))
        out.append("<h3>Per-class difference B - A (average AP, points)</h3>")
        out.append(hbar_chart([a.class_names[i] for i in d_order], [diff[d_order]], ["#546e7a"],
                              signed=True, fmt=lambda x: f"{100 * x:+.2f}"))
        head = "".join(f"<th>A {t:.2f}</th><th>B {t:.2f}</th>" for t in thr)
        body = "".join(
            f'<tr><td class="l">{_e(a.class_names[i])}</td><td>{a.n_gt[i]}</td>'
            + "".join(f"<td>{_pct(a.ap[t, i])}</td><td>{_pct(b.ap[t, i])}</td>" for t in range(len(thr)))
            + f"<td><b>{_pct(avg[0][i])}</b></td><td><b>{_pct(avg[1][i])}</b></td>"
              f"<td>{_signed(diff[i])}</td></tr>"
            for i in order)
        out.append(f'<table><tr><th class="l">class</th><th>instances</th>{head}<th>A Avg</th><th>B Avg</th>'
                   f"<th>B - A</th></tr>{body}</table>")
    return "".join(out)


def _pr_section(runs) -> str:
    a = runs[0]
    colors = RUN_COLORS[:len(runs)]
    plots = [pr_plot(n, [r.pr_curves[i] for r in runs], colors, [r.ap_at_pr_tiou[i] for r in runs])
             for i, n in enumerate(a.class_names)]
    return (f"<h2>Precision-recall at tIoU {a.pr_tiou:g}</h2>"
            '<p class="note">Precision (vertical) against recall after each true positive, in score '
            "order; AP is the interpolated area, as the evaluation computes it.</p>"
            + (_legend(colors, ["A", "B"]) if len(runs) == 2 else "")
            + '<div class="grid">' + "".join(plots) + "</div>")


def _errors_section(runs, labels) -> str:
    a = runs[0]
    out = [f"<h2>False positives (DETAD-style breakdown) at tIoU {a.error_tiou:g}</h2>",
           '<p class="note">Each prediction that the matching leaves unmatched is put in one category '
           "by the ground-truth instance (of any class, in its video) it overlaps most, with tIoU m: "
           f"<b>double detection</b> m &ge; {a.error_tiou:g}, same class (the instance was already "
           f"taken); <b>wrong label</b> m &ge; {a.error_tiou:g}, another class; <b>localisation</b> "
           f"{a.min_tiou:g} &le; m &lt; {a.error_tiou:g}, same class; <b>confusion</b> {a.min_tiou:g} "
           f"&le; m &lt; {a.error_tiou:g}, another class; <b>background</b> m &lt; {a.min_tiou:g}. "
           "Band kG holds each class's predictions of rank (k-1)G+1 to kG, G being the class's number "
           "of instances. The gain is the mAP (points) the evaluation would report if the predictions "
           "of that category were removed from the ranked lists.</p>",
           _legend(CAT_COLORS, CATEGORIES)]
    out.append('<div class="grid">')
    for r, lab in zip(runs, labels):
        out.append("<div>" + (f"<h3>{_e(lab)}</h3>" if len(runs) == 2 else ""))
        tot = r.profile.sum(axis=1, keepdims=True)
        frac = np.where(tot > 0, r.profile / np.maximum(tot, 1), 0.0)
        groups = [f"{k + 1}G" for k in range(len(frac))]
        out.append(stacked_bars(groups, frac))
        head = "".join(f"<th>{g}</th>" for g in groups)
        body = "".join(f'<tr><td class="l">{_e(CATEGORIES[k])}</td>'
                       + "".join(f"<td>{100 * f:.1f}</td>" for f in frac[:, k]) + "</tr>"
                       for k in range(len(CATEGORIES)))
        out.append(f'<table><tr><th class="l">% of band</th>{head}</tr>{body}</table></div>')
    out.append("</div>")
    out.append("<h3>mAP gained by removing each error type</h3>")
    out.append(vbar_chart(list(ERROR_TYPES), [r.gain_at_error_tiou for r in runs], RUN_COLORS,
                          fmt=lambda x: f"{100 * x:.2f}"))
    if len(runs) == 2:
        out.append(_legend(RUN_COLORS, labels))
    head = "".join(f"<th>{t:.2f}</th>" for t in a.tiou_thresholds)

    def cells(r, k):
        share = r.category_counts[k + 1] / max(r.category_counts.sum(), 1)
        return (f"<td>{100 * share:.1f}</td>" + "".join(f"<td>{100 * g:+.2f}</td>" for g in r.gain[k])
                + f"<td><b>{100 * r.gain[k].mean():+.2f}</b></td>")
    rows = _rows_per_run(runs, labels, [_e(n) for n in ERROR_TYPES], cells)
    out.append(f'<table><tr><th class="l">error type</th><th>% of all predictions at '
               f"{a.error_tiou:g}</th>{head}"
               f"<th>Avg</th></tr>{rows}</table>")
    out.append('<p class="note">The table gives the mAP gain (points) at every tIoU threshold of '
               "the evaluation, the category taken at that threshold; the chart, at tIoU "
               f"{a.error_tiou:g}.</p>")
    return "".join(out)


def _rows_per_run(runs, labels, names, cells) -> str:
    """Table rows, one per (run, name): the name (HTML, after the run's label when two runs
    are compared), then cells(run, index of the name), the row's other <td>s."""
    rows = []
    for r, lab in zip(runs, labels):
        who = f"{_e(lab)}: " if len(runs) == 2 else ""
        rows += [f'<tr><td class="l">{who}{name}</td>{cells(r, k)}</tr>' for k, name in enumerate(names)]
    return "".join(rows)


def _length_section(runs, labels) -> str:
    a = runs[0]
    lo, hi = a.length_edges
    names = [f"short (< {lo:.1f}s)", f"medium ({lo:.1f}-{hi:.1f}s)", f"long (&ge; {hi:.1f}s)"]
    out = ["<h2>Lengths: detections against ground truth</h2>",
           '<p class="note">Buckets cut at the terciles of the ground-truth lengths. AP of a bucket: '
           "only that bucket's instances count, true positives matched outside it are removed, all "
           "false positives stay (DETAD's sensitivity analysis); mAP averages the classes with "
           "instances in the bucket. Detections are counted by their own length; top = each class's "
           "G best.</p>"]
    shares = [a.length_gt_counts / max(a.length_gt_counts.sum(), 1)]
    legend = ["ground-truth instances"]
    for r, lab in zip(runs, labels):
        shares.append(r.length_pred_counts / max(r.length_pred_counts.sum(), 1))
        shares.append(r.length_top_counts / max(r.length_top_counts.sum(), 1))
        pre = f"{lab}: " if len(runs) == 2 else ""
        legend += [f"{pre}all detections", f"{pre}top detections"]
    colors = ["#757575", "#90caf9", "#1e88e5", "#ffcc80", "#fb8c00"][:len(shares)]
    plain = [n.replace("&ge;", ">=") for n in names]
    bucket_map = [r.length_mAP.mean(axis=1) for r in runs]
    out.append('<div class="grid">'
               + vbar_chart(plain, shares, colors, width=560, fmt=lambda x: f"{100 * x:.0f}%")
               + vbar_chart(plain, bucket_map, RUN_COLORS, width=420) + "</div>")
    map_names = [f"average mAP per bucket{': ' + lab if len(runs) == 2 else ''}" for lab in labels]
    out.append(_legend(colors, legend) + _legend(RUN_COLORS[:len(runs)], map_names))
    head = "".join(f"<th>{t:.2f}</th>" for t in a.tiou_thresholds)

    def cells(r, b):
        return (f"<td>{a.length_gt_counts[b]}</td><td>{r.length_pred_counts[b]}</td>"
                f"<td>{r.length_top_counts[b]}</td>" + "".join(f"<td>{_pct(x)}</td>" for x in r.length_mAP[b])
                + f"<td><b>{_pct(r.length_mAP[b].mean())}</b></td>")
    rows = _rows_per_run(runs, labels, names, cells)
    out.append(f'<table><tr><th class="l">bucket</th><th>instances</th><th>detections</th><th>top</th>'
               f"{head}<th>Avg</th></tr>{rows}</table>")
    return "".join(out)


def _worst_section(a: Analysis, label) -> str:
    out = [f"<h2>Worst videos{': ' + _e(label) if label else ''}</h2>",
           f'<p class="note">At tIoU {a.error_tiou:g}: errors = instances that no top prediction took '
           "(outlined red; taken ones outlined green) + top predictions that are false positives; top = "
           "each class's G best predictions. Upper bars: ground truth; lower bars: top predictions "
           "by category.</p>",
           _legend(["#bdbdbd"] + list(CAT_COLORS), ["ground truth"] + list(CATEGORIES))]
    if not a.worst_videos:
        out.append("<p>No video has an error.</p>")
    for v in a.worst_videos:
        out.append(f"<h3>{_e(v['video'])}: {v['errors']} errors ({v['missed']} missed, "
                   f"{v['false_positives']} false positives)</h3>")
        out.append(timeline(v, a.class_names))
    return "".join(out)


def render_html(analysis: Analysis, other: Analysis | None = None, labels=("A", "B"),
                title: str = "cola_fast evaluation report", meta: dict | None = None,
                sections: list | None = None) -> str:
    """The whole page as a string; sections: more HTML sections, placed after the mAP table."""
    runs = [analysis] if other is None else [analysis, other]
    if other is not None and other.class_names != analysis.class_names:
        raise ValueError("the two runs were analysed against different classes")
    labels = list(labels[:len(runs)]) if other is not None else [labels[0]]
    meta_rows = "".join(f'<tr><td class="l">{_e(k)}</td><td class="l">{_e(v)}</td></tr>'
                        for k, v in (meta or {}).items())
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
             f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>",
             f"<table>{meta_rows}</table>" if meta_rows else "",
             "<h2>mAP</h2>", _map_table(runs, labels), *(sections or []),
             _per_class_section(runs, labels), _pr_section(runs), _errors_section(runs, labels),
             _length_section(runs, labels),
             _worst_section(analysis, labels[0] if other is not None else "")]
    if other is not None:
        parts.append(_worst_section(other, labels[1]))
    parts.append(f'<p class="note">Written by cola_fast on {time.strftime("%Y-%m-%d %H:%M:%S")}. '
                 "Self-contained: all figures are inline SVG.</p></body></html>")
    return "".join(parts)


def write_report(out_dir, analysis: Analysis, other: Analysis | None = None, labels=("A", "B"),
                 title: str = "cola_fast evaluation report", meta: dict | None = None,
                 sections: list | None = None) -> str:
    """Write out_dir/index.html (atomically); returns its path."""
    return _write_page(out_dir, render_html(analysis, other, labels, title, meta, sections))


def _write_page(out_dir, page: str) -> str:
    """out_dir/index.html, written atomically; returns its path."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "index.html")
    tmp = os.path.join(out_dir, f".tmp_index_{os.getpid()}.html")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def report_for_results(out_dir, results, gt, subset="test", tiou_thresholds=np.linspace(0.1, 0.7, 7),
                       other=None, labels=None, title="cola_fast evaluation report", meta=None,
                       sections=None):
    """Analyse a results file (and optionally a second one, `other`) against `gt` and write
    out_dir/index.html; returns (path, analysis, other analysis or None, analysis seconds)."""
    from .analysis import analyze
    t0 = time.perf_counter()
    a = analyze(gt, results, subset=subset, tiou_thresholds=tiou_thresholds)
    b = analyze(gt, other, subset=subset, tiou_thresholds=tiou_thresholds) if other is not None else None
    seconds = time.perf_counter() - t0
    labels = labels or ("A", "B")
    return write_report(out_dir, a, b, labels, title, meta, sections), a, b, seconds


def _read_json(path):
    """A small JSON file of a run folder (summary.json, env.json); None when absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def report_for_run(run_dir, gt, tiou_thresholds, say=print, summary=None):
    """The trainer's end-of-run report: run_dir/report/index.html for the best evaluation's
    detections (best_results.json, chosen on the test set) beside the last step's
    (last_results.json, when it is another step), the run's environment (env.json) and its
    curves (metrics.jsonl). summary: the run's summary ("best", "last"). A failure is
    reported on stderr and leaves the run's other files as they are; returns the page's
    path or None."""
    import sys
    run_dir = os.fspath(run_dir)
    summary = summary or _read_json(os.path.join(run_dir, "summary.json")) or {}
    best, last = summary.get("best") or {}, summary.get("last")
    last_file = os.path.join(run_dir, "last_results.json")
    other, labels = None, (f"best evaluation (step {best.get('step', '?')}, chosen on the test set)",)
    if last and last.get("step") != best.get("step") and os.path.exists(last_file):
        other = last_file
        labels = (f"best (step {best.get('step', '?')}, chosen on the test set)", f"last step ({last['step']})")
    elif last:
        labels = (f"best = last step ({last['step']})",)
    sections = [_env_section([("run", _read_json(os.path.join(run_dir, "env.json")))]),
                _curves_section([("run", run_dir)])]
    try:
        path, *_ = report_for_results(os.path.join(run_dir, "report"),
                                      os.path.join(run_dir, "best_results.json"), gt,
                                      tiou_thresholds=tiou_thresholds, other=other, labels=labels,
                                      title=f"cola_fast report: {run_dir}", meta={"run": run_dir},
                                      sections=sections)
    except (OSError, ValueError) as e:
        print(f"warning: the report could not be written: {e}", file=sys.stderr)
        return None
    say(f"report: {path}")
    return path


def report_for_seeds(out_dir, runs, table: str, say=print):
    """A --seeds run's page, out_dir/report/index.html: the table of every seed with the
    mean and std (table: the markdown of seeds.md), every seed's curves and environment.
    runs: [(seed, run folder)]. Returns the page's path, or None (a warning on stderr)."""
    import sys
    labels = [(f"seed {seed}", os.fspath(d)) for seed, d in runs]
    title = f"cola_fast seeds report: {os.fspath(out_dir)}"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"
            '<p class="note">"best" is each seed\'s best evaluation, chosen on the test set as the '
            "published code keeps its checkpoint; \"last\" is the evaluation at the last step, with no "
            "selection on the test set. Each seed's own page: seed&lt;N&gt;/report/index.html.</p>"
            "<h2>mAP (%) over the seeds</h2>" + _markdown_table_html(table)
            + _curves_section(labels)
            + _env_section([(label, _read_json(os.path.join(d, "env.json"))) for label, d in labels])
            + f'<p class="note">Written by cola_fast on {time.strftime("%Y-%m-%d %H:%M:%S")}. '
              "Self-contained: all figures are inline SVG.</p></body></html>")
    try:
        path = _write_page(os.path.join(os.fspath(out_dir), "report"), page)
    except OSError as e:
        print(f"warning: the seeds report could not be written: {e}", file=sys.stderr)
        return None
    say(f"report: {path}")
    return path
