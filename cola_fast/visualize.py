"""Pictures of what a model does on a video: actionness and class activation over time,
detected segments, ground truth."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SNIPPET_SECONDS = 16 / 25  # the default: 16-frame snippets of 25 fps video (TrainConfig.snippet_seconds)


def _normalise(x: np.ndarray) -> np.ndarray:
    """COLA_SPEC 5 step 3 for one curve: clip((x - relu(min)) / d, 0, 1)."""
    lo, hi = max(float(x.min()), 0.0), max(float(x.max()), 0.0)
    d = hi - lo
    return np.clip((x - lo) / (d if d > 0 else 1.0), 0, 1)


def plot_video(path, vid: str, actionness: np.ndarray, cas: np.ndarray, video_scores: np.ndarray,
               class_names: list, detections: list, num_snippets: int, gt: list | None = None,
               top_classes: int = 3, max_dets: int = 5, snippet_seconds: float = SNIPPET_SECONDS) -> Path:
    """Write a PNG: actionness and the top classes' CAS (normalised, as proposals see them)
    against time in seconds; below, the best detections per shown class and the ground
    truth. detections: [{"label","score","segment"}]; gt: [{"label","segment"}];
    snippet_seconds: the duration of one feature snippet (snippet_frames / fps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(actionness)
    seconds_per_pos = snippet_seconds * num_snippets / T
    t = (np.arange(T) + 0.5) * seconds_per_pos
    order = np.argsort(-video_scores)[:top_classes]
    shown = [class_names[c] for c in order]
    gt = gt or []
    gt_labels = sorted({g["label"] for g in gt})
    rows = shown + [g for g in gt_labels if g not in shown]
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(rows)}

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 3.2 + 0.5 * len(rows)), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1 + 0.4 * len(rows)]})
    ax.plot(t, _normalise(actionness), color="black", lw=1.5, label="actionness")
    for c, name in zip(order, shown):
        ax.plot(t, _normalise(cas[:, c]), color=colours[name], lw=1.0, alpha=0.85,
                label=f"CAS {name} (video score {video_scores[c]:.2f})")
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("normalised")
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.set_title(f"{vid}: {num_snippets} snippets, {num_snippets * snippet_seconds:.1f} s")

    for r, name in enumerate(rows):
        y = len(rows) - 1 - r
        for g in gt:
            if g["label"] == name:
                s, e = map(float, g["segment"])
                ax2.add_patch(plt.Rectangle((s, y + 0.05), e - s, 0.4, color="0.35"))
        dets = sorted((d for d in detections if d["label"] == name), key=lambda d: -d["score"])[:max_dets]
        for d in dets:
            s, e = d["segment"]
            ax2.add_patch(plt.Rectangle((s, y + 0.5), e - s, 0.4, color=colours[name],
                                        alpha=0.35 + 0.65 * min(max(d["score"], 0), 1)))
    ax2.set_yticks([len(rows) - 1 - r + 0.5 for r in range(len(rows))])
    ax2.set_yticklabels(rows, fontsize=8)
    ax2.set_ylim(0, max(len(rows), 1))
    ax2.set_xlim(0, num_snippets * snippet_seconds)
    ax2.set_xlabel("seconds   (per class row: upper = top detections, shade = score; lower grey = ground truth)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
