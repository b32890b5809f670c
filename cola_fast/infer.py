"""python -m cola_fast.infer: run a trained checkpoint on new videos' features.

    python -m cola_fast.infer runs/cpu/best.pt video.npy --out dets.json
    python -m cola_fast.infer runs/cpu/best.pt features_dir/ --out dets.json --plot plots/ --gt gt.json

    python -m cola_fast.infer runs/cpu/best.pt --data-root DATA --split test --out dets.json
    python -m cola_fast.infer runs/cpu/best.pt DATA/features/test/rgb --out dets.json

FEATURES is one video's features as a .npy file of shape (T, D) (D as the model was
trained with, e.g. 2048 = rgb then flow), or a folder of such files (one per video,
named <video id>.npy). In the dataset layout (README "Dataset layout") the modalities
are joined as the trainer joins them, following the run's modality: --data-root ROOT
--split SPLIT reads the videos of ROOT/split_SPLIT.txt (all of features/SPLIT/ when
that file is absent); a file or folder under features/<split>/rgb (or flow) is joined
with its sibling in flow (rgb), and features/<split>/ itself reads both. Writes detections in the ActivityNet results format; with --plot
a PNG per video (actionness and the top classes' activation over time, detections, and
the ground truth when --gt is given). Checkpoints are loaded with weights_only=True.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from .cli import ArgumentParser, fail
from .config import TrainConfig, resolve_device
from .detect import detect_video, plot_detections, uniform_snippets
from .inputs import MODEL_CHECKPOINT_SCHEMA, InputError, check
from .model import CoLA, ModelConfig
from .run import pin_recorded_choices


def load_model(path, device="cpu", gt=None):
    """(model in eval mode, TrainConfig, class_names) from a checkpoint written by the
    trainer or from an official CoLA state dict (.pkl / .pth; cola_fast.official). For
    the latter the model's sizes come from the tensors' shapes, the settings from the
    thumos14 preset, and the class names from gt (a gt.json path or dict) or, with 20
    classes, THUMOS'14's in alphabetical order."""
    from .config import get_preset
    from .official import is_official, official_class_names, from_official, read_weights_file

    path = Path(path)
    state = read_weights_file(path)
    if is_official(state):
        weights, dims = from_official(state, str(path))
        cfg = get_preset("thumos14").replace(embed_dim=dims["embed_dim"], embed_kernel=dims["embed_kernel"])
        class_names = official_class_names(dims["num_classes"], gt)
        feature_dim = dims["feature_dim"]
    else:
        check(state, MODEL_CHECKPOINT_SCHEMA, f"checkpoint {path}")
        cfg = TrainConfig.from_dict(state["config"], f"checkpoint {path} config")
        weights, class_names, feature_dim = state["model"], list(state["class_names"]), state["feature_dim"]
        pin_recorded_choices(state, f"checkpoint {path}")
    mcfg = ModelConfig(feature_dim=feature_dim, num_classes=len(class_names),
                       embed_dim=cfg.embed_dim, embed_kernel=cfg.embed_kernel, classifier=cfg.classifier,
                       dropout=cfg.dropout, r_easy=cfg.r_easy, r_hard=cfg.r_hard, m=cfg.m, M=cfg.M)
    backend = None if cfg.backend == "auto" else cfg.backend
    _check_shapes(path, weights, mcfg, backend)
    model = CoLA(mcfg, backend=backend)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise InputError(f"checkpoint {path}: its weights do not fit the model it describes "
                         f"({' '.join(str(e).split())[:200]})") from None
    return model.to(device).eval(), cfg, class_names


def _check_shapes(path, weights: dict, mcfg: ModelConfig, backend) -> None:
    """The model a checkpoint describes (built on the meta device: no memory) against its
    weights' shapes, before the real one is built: a feature_dim of 10**9 must not allocate."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in CoLA(mcfg, backend=backend).state_dict().items()}
    for k, shape in want.items():
        got = weights.get(k)
        if got is not None and tuple(got.shape) != shape:
            raise InputError(f"checkpoint {path}: its weights do not fit the model it describes "
                             f"({k} has shape {tuple(got.shape)}, the model {shape})")


def _load_features(paths: list, feature_dim: int) -> np.ndarray:
    """One video's features: the trainer's checks of each file (cola_fast.data.load_feature:
    2-D, real numbers, finite), the modalities side by side in the given order (as
    VideoDataset joins rgb and flow), then the model's width."""
    from .data import load_feature
    parts = [load_feature(p) for p in paths]
    if len({x.shape[0] for x in parts}) > 1:
        raise ValueError(f"{paths[0]} has {parts[0].shape[0]} snippets but {paths[1]} has {parts[1].shape[0]}")
    x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    if x.shape[1] != feature_dim:
        where = " + ".join(str(p) for p in paths)
        raise ValueError(f"{where}: features have {x.shape[1]} channels, the model expects {feature_dim}")
    return x


def _modalities(modality: str) -> tuple:
    return ("rgb", "flow") if modality == "all" else (modality,)


def layout_sources(root, split: str, modality: str) -> list:
    """[(video id, [feature file per modality])] of a split in the dataset layout: the
    videos of split_<split>.txt, or every .npy of the first modality's folder when the
    dataset has no such file."""
    from .data import read_split
    root = Path(root)
    folder = root / "features" / split
    mods = _modalities(modality)
    if not (folder / mods[0]).is_dir():
        raise ValueError(f"--data-root {root}: no folder {folder / mods[0]} (the layout is "
                         f"features/<split>/{{rgb,flow}}/<video>.npy)")
    if (root / f"split_{split}.txt").is_file():
        vids = read_split(root, split)
    else:
        vids = [_video_id(f) for f in sorted((folder / mods[0]).glob("*.npy"))]
        if not vids:
            raise ValueError(f"{folder / mods[0]}: no .npy files")
    return [(v, [folder / m / f"{v}.npy" for m in mods]) for v in vids]


def feature_sources(src: Path, modality: str) -> list:
    """[(video id, [files])] of a FEATURES argument: one file or a folder of them; when its
    folder is a modality folder of the layout (features/<split>/rgb or flow) and the run
    reads other modalities, each video's files in the sibling folders join it (a split's
    folder, features/<split>/, stands for its modality folders)."""
    mods = _modalities(modality)
    if src.is_dir() and not any(src.glob("*.npy")) and (src / mods[0]).is_dir():
        src = src / mods[0]  # a split's folder, features/<split>/: its first modality's folder
    if src.is_dir():
        files = sorted(src.glob("*.npy"))
        if not files:
            raise ValueError(f"{src}: no .npy files")
        where = src
    elif src.is_file():
        files, where = [src], src.parent
    else:
        raise ValueError(f"{src}: no such file or folder")
    if where.name not in ("rgb", "flow") or mods == (where.name,):
        return [(_video_id(f), [f]) for f in files]
    missing = [m for m in mods if not (where.parent / m).is_dir()]
    if missing:
        raise ValueError(f"{where} is a modality folder, and the run reads modality {modality}: "
                         f"no sibling folder {where.parent / missing[0]}")
    return [(_video_id(f), [where.parent / m / f.name for m in mods]) for f in files]


def _video_id(path: Path) -> str:
    """The video id of a features file: its name without .npy, which must be UTF-8 text
    (it becomes a JSON key and a plot's file name)."""
    vid = path.stem
    try:
        vid.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{path!r}: the file name is not valid UTF-8: rename the file") from None
    return vid


def _check_out(path) -> None:
    """--out must name a file that can be written; checked before any work."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--out {p} is a folder: give the path of the detections file")
    if p.parent.exists() and not p.parent.is_dir():
        raise ValueError(f"--out {p}: {p.parent} is not a folder")


def infer_video(model: CoLA, feats: np.ndarray, cfg: TrainConfig, class_names: list, device="cpu"):
    """Detections and the curves behind them for one video's (T, D) features: test-time
    uniform sampling to num_segments (COLA_SPEC 1), then detect_video, as the trainer's
    evaluation does."""
    return detect_video(model, uniform_snippets(feats, cfg.num_segments), feats.shape[0], class_names, cfg, device)


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m cola_fast.infer", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a cola_fast checkpoint (best.pt) or an official CoLA state dict (.pkl/.pth)")
    p.add_argument("features", nargs="?", help="a (T, D) .npy file or a folder of them (or --data-root)")
    p.add_argument("--data-root", default=None, help="instead of FEATURES: a dataset in the layout; with --split")
    p.add_argument("--split", default=None, help="with --data-root: the split to run on (default: test)")
    p.add_argument("--out", default=None, help="detections JSON (default: print to stdout)")
    p.add_argument("--plot", default=None, metavar="DIR", help="write a PNG per video into DIR")
    p.add_argument("--gt", default=None, help="gt.json: draw the ground truth in the plots; for official "
                   "weights also the class names (default: THUMOS'14's 20 classes when the weights have 20)")
    p.add_argument("--fps", type=float, default=None,
                   help="frames per second of the source videos (default: the checkpoint's feature_fps, 25)")
    p.add_argument("--snippet-frames", type=int, default=None,
                   help="frames per feature snippet (default: the checkpoint's snippet_frames, 16)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
        if args.out:
            _check_out(args.out)
        if args.plot and Path(args.plot).exists() and not Path(args.plot).is_dir():
            raise ValueError(f"--plot {args.plot} is not a folder")
        model, cfg, class_names = load_model(args.checkpoint, device, gt=args.gt)
        if cfg.threads > 0:  # the run's thread count, as its evaluations had
            torch.set_num_threads(cfg.threads)
        cfg = cfg.replace(**{k: v for k, v in (("feature_fps", args.fps), ("snippet_frames", args.snippet_frames))
                             if v is not None})
        if (args.features is None) == (args.data_root is None):
            raise ValueError("give FEATURES (a .npy file or folder) or --data-root ROOT [--split SPLIT], one of them")
        if args.split is not None and args.data_root is None:
            raise ValueError("--split goes with --data-root")
        if args.data_root is not None:
            sources = layout_sources(args.data_root, args.split or "test", cfg.modality)
        else:
            sources = feature_sources(Path(args.features), cfg.modality)
        gt = None
        if args.gt:
            from .evaluation import load_gt
            gt = load_gt(args.gt)
        results = {}
        for vid, paths in sources:
            feats = _load_features(paths, model.cfg.feature_dim)
            dets, curves = infer_video(model, feats, cfg, class_names, device)
            results[vid] = dets
            if args.plot:
                png = plot_detections(Path(args.plot) / f"{vid}.png", vid, curves, dets, feats.shape[0],
                                      class_names, _gt_annotations(gt, vid), cfg)
                print(f"plot: {png}", file=sys.stderr)
    except (ValueError, OSError) as e:  # DataError, EvaluationInputError, a folder not writable
        return fail(e)
    from .evaluation import results_json
    try:
        # version, method, results, external_data: both evaluators read it. external_data as the
        # run's results say for a run on a dataset; neutral for synthetic-data runs and official weights
        described = cfg.external_data() if cfg.external_data_details or cfg.data_root else None
        doc = results_json(results, args.out, external_data=described)
    except OSError as e:
        return fail(f"cannot write {args.out}: {e.strerror or e}")
    if args.out:
        print(f"{sum(len(v) for v in results.values())} detections for {len(results)} videos -> {args.out}",
              file=sys.stderr)
    else:
        json.dump(doc, sys.stdout)
        print()
    return 0


def _gt_annotations(gt, vid: str):
    """The annotations of vid in a loaded gt (the evaluation module's load_gt result or
    a raw gt.json dict), as [{"label","segment"}]."""
    if gt is None:
        return None
    db = gt.get("database", gt) if isinstance(gt, dict) else None
    if db is None or vid not in db:
        return []
    return [{"label": a["label"], "segment": [float(a["segment"][0]), float(a["segment"][1])]}
            for a in db[vid].get("annotations", [])]


if __name__ == "__main__":
    sys.exit(main())
