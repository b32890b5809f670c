"""From a trained model to detections: one video's forward pass, its proposals, and its plot.

    dets, curves = detect_video(model, x, num_snippets, class_names, cfg, device)

Training's evaluation (evaluate, below) and python -m cola_fast.infer both call
detect_video, so that the detections of a checkpoint are computed one way only: the
model in eval mode (set by the caller) on the video's test-time snippets x (N, D),
then the proposals of COLA_SPEC 5 with the run's ProposalConfig and eval_backend.
plot_detections draws one video's PNG for both; VideoPlotter is training's
never-fatal wrapper around it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig

CURVES = ("video_scores", "cas", "actionness")


def uniform_snippets(feats: np.ndarray, num_segments: int) -> np.ndarray:
    """A whole video's (T, D) features cut to the model's test-time input: uniform
    sampling to num_segments when T is larger (COLA_SPEC 1), as the test split's
    VideoDataset does."""
    from .data import sample_uniform

    T = feats.shape[0]
    return np.ascontiguousarray(feats if T <= num_segments else feats[sample_uniform(T, num_segments)])


@torch.no_grad()
def detect_video(model, x, num_snippets: int, class_names: list, cfg: TrainConfig, device):
    """(detections, curves) of one video: x is its (N, D) test-time snippets (a tensor or
    an array), num_snippets its length T before sampling; curves maps video_scores, cas
    and actionness to numpy arrays."""
    from .evaluation import generate_proposals

    x = torch.as_tensor(x).to(device)[None]
    out = model(x, mine=False)
    curves = {k: out[k][0].float().cpu().numpy() for k in CURVES}
    dets = generate_proposals(*(curves[k] for k in CURVES), num_snippets, class_names,
                              cfg.proposal_config(), backend=cfg.eval_backend)
    return dets, curves


@torch.no_grad()
def evaluate(model, test_ds, cfg: TrainConfig, device: torch.device, plot_dir: Path | None = None,
             gt=None):
    """Run the model over the test split, build proposals, compute detection mAP.
    Returns (metrics dict, results dict in the ActivityNet results format). With
    plot_dir, the first cfg.plot_videos test videos get a PNG there; a plot that fails
    is reported and skipped, never fatal to the run."""
    from .evaluation import evaluate_detection, results_document

    was_training = model.training
    model.eval()
    results = {}
    plotter = VideoPlotter(plot_dir, cfg) if plot_dir is not None else None
    for i in range(len(test_ds)):
        item = test_ds[i]
        dets, curves = detect_video(model, item["features"], item["num_snippets"], test_ds.class_names,
                                    cfg, device)
        results[item["vid"]] = dets
        if plotter is not None and i < cfg.plot_videos:
            plotter.plot(item, curves, dets, test_ds)
    model.train(was_training)
    res = evaluate_detection(test_ds.gt_path if gt is None else gt, {"results": results}, subset="test",
                             tiou_thresholds=np.asarray(cfg.tiou), backend=cfg.eval_backend)
    return res, results_document(results, external_data=cfg.external_data())


def plot_detections(path: Path, vid: str, curves: dict, dets, num_snippets: int, class_names: list,
                    annotations, cfg: TrainConfig) -> Path:
    """One video's PNG (cola_fast.visualize.plot_video): its curves, detections and, when
    given, ground-truth annotations [{"label", "segment"}]."""
    from .visualize import plot_video

    return plot_video(path, vid, curves["actionness"], curves["cas"], curves["video_scores"], class_names,
                      dets, num_snippets, annotations, snippet_seconds=cfg.snippet_seconds)


class VideoPlotter:
    """One PNG per test video at an evaluation (--set plot_videos=N). Any failure while
    plotting (matplotlib missing or broken, a full disk) is printed once and plotting is
    switched off for the rest of the run: a picture is never worth a training run."""

    failed = False  # class-wide: once plotting has failed, later evaluations skip it

    def __init__(self, plot_dir: Path, cfg: TrainConfig):
        self.dir, self.cfg = Path(plot_dir), cfg

    def plot(self, item, curves: dict, dets, test_ds) -> None:
        if VideoPlotter.failed:
            return
        vid = item["vid"]
        anns = [{"label": lab, "segment": [s, e]} for lab, s, e in test_ds.annotations[vid]]
        try:
            plot_detections(self.dir / f"{vid}.png", vid, curves, dets, item["num_snippets"],
                            test_ds.class_names, anns, self.cfg)
        except Exception as e:  # noqa: BLE001 - see the class docstring
            VideoPlotter.failed = True
            print(f"warning: plotting {vid} failed ({type(e).__name__}: {e}); no more plots in this run",
                  file=sys.stderr)


def check_plotting(cfg: TrainConfig) -> bool:
    """Before the first step: plot_videos > 0 needs matplotlib. Without it, say so once
    (with the install command) and train without plots. True when plots will be made."""
    VideoPlotter.failed = False
    if cfg.plot_videos <= 0:
        return False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        VideoPlotter.failed = True
        print(f"warning: plot_videos={cfg.plot_videos} needs matplotlib, which is not installed "
              f"(pip install cola_fast[plot]); training without plots", file=sys.stderr)
        return False
    return True
