"""The official CoLA weights: reading them, starting from them, writing them back.

The official code (github.com/zhang-can/CoLA) saves `net.state_dict()` of its model,
a .pkl or .pth file holding three tensors:

    actionness_module.f_embed.0.weight   (E, D, K)  Conv1d D->E, kernel K (3 on THUMOS'14)
    actionness_module.f_embed.0.bias     (E,)
    actionness_module.f_cls.0.weight     (C, E, 1)  Conv1d E->C, kernel 1, no bias

cola_fast's CoLA (THUMOS'14 classifier) holds the same tensors as embed_weight,
embed_bias and classifier.weight, so the conversion is a renaming. Files are read with
torch.load(weights_only=True): tensors and plain containers only, never arbitrary
pickled objects (this reads both the zip format and the legacy pickle format).

    python -m cola_fast.official export runs/t14/best.pt cola_official.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .inputs import InputError, Obj, Tensor, check, read_torch

# the weights of a cola_fast checkpoint that --init and export read (their shapes give the dims)
CHECKPOINT_WEIGHTS = Obj({"model": Obj({"embed_weight": Tensor(ndim=3), "classifier.weight": Tensor(min_ndim=1)})})

OFFICIAL_KEYS = {
    "actionness_module.f_embed.0.weight": "embed_weight",
    "actionness_module.f_embed.0.bias": "embed_bias",
    "actionness_module.f_cls.0.weight": "classifier.weight",
}

# THUMOS'14's 20 action classes in alphabetical order: the order of the official
# code's class index (and of cola_fast's class_names_from_gt on THUMOS'14).
THUMOS14_CLASSES = [
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving",
    "CricketBowling", "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing",
    "HammerThrow", "HighJump", "JavelinThrow", "LongJump", "PoleVault",
    "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus", "VolleyballSpiking",
]


def read_weights_file(path) -> dict:
    """The object saved in path, read at the reading boundary with weights_only=True
    (InputError naming the file otherwise)."""
    return read_torch(path, "weights file")


def is_official(state) -> bool:
    """Whether state looks like an official CoLA state dict (possibly saved from DataParallel)."""
    return isinstance(state, dict) and any(
        k in state for k in ("actionness_module.f_embed.0.weight", "module.actionness_module.f_embed.0.weight"))


def _strip_module_prefix(state: dict) -> dict:
    """A state dict saved from nn.DataParallel has every key prefixed with 'module.'."""
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def from_official(state: dict, source: str = "state dict") -> tuple[dict, dict]:
    """(cola_fast CoLA state dict, dims {feature_dim, embed_dim, embed_kernel, num_classes})
    of an official CoLA state dict; ValueError naming the problem when it is not one."""
    state = _strip_module_prefix(dict(state))
    missing = [k for k in OFFICIAL_KEYS if k not in state]
    extra = [k for k in state if k not in OFFICIAL_KEYS]
    if missing or extra:
        raise InputError(f"{source} is not an official CoLA state dict: "
                         + (f"missing {missing}" if missing else "")
                         + ("; " if missing and extra else "")
                         + (f"unexpected keys {extra[:5]}" if extra else ""))
    w, b, c = (state[k] for k in OFFICIAL_KEYS)
    for k, t in zip(OFFICIAL_KEYS, (w, b, c)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise InputError(f"{source}: {k} must be a float tensor, got {type(t).__name__}")
    if w.dim() != 3 or w.shape[2] % 2 != 1:
        raise InputError(f"{source}: actionness_module.f_embed.0.weight must be (E, D, K) with K odd, "
                         f"got {tuple(w.shape)}")
    E, D, K = w.shape
    if tuple(b.shape) != (E,):
        raise InputError(f"{source}: actionness_module.f_embed.0.bias must be ({E},), got {tuple(b.shape)}")
    if c.dim() != 3 or c.shape[1] != E or c.shape[2] != 1:
        raise InputError(f"{source}: actionness_module.f_cls.0.weight must be (C, {E}, 1), got {tuple(c.shape)}")
    ours = {OFFICIAL_KEYS[k]: state[k].detach().float().contiguous() for k in OFFICIAL_KEYS}
    dims = {"feature_dim": int(D), "embed_dim": int(E), "embed_kernel": int(K), "num_classes": int(c.shape[0])}
    return ours, dims


def to_official(model_state: dict) -> dict:
    """The official CoLA layout of a cola_fast CoLA state dict (THUMOS'14 classifier)."""
    if "depthwise.weight" in model_state:
        raise ValueError("the official CoLA layout has no depthwise classifier (classifier='anet' models "
                         "cannot be exported)")
    back = {ours: theirs for theirs, ours in OFFICIAL_KEYS.items()}
    missing = [k for k in back if k not in model_state]
    if missing:
        raise ValueError(f"not a cola_fast CoLA state dict: missing {missing}")
    return {back[k]: model_state[k].detach().cpu().clone() for k in back}


def load_any_weights(path) -> tuple[dict, dict, dict | None]:
    """(cola_fast model state dict, dims, training checkpoint or None) of either an
    official CoLA state dict or a cola_fast training checkpoint."""
    obj = read_weights_file(path)
    if is_official(obj):
        state, dims = from_official(obj, str(path))
        return state, dims, None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "embed_weight" in obj["model"]:
        check(obj, CHECKPOINT_WEIGHTS, f"checkpoint {path}")
        w, c = obj["model"]["embed_weight"], obj["model"]["classifier.weight"]
        dims = {"feature_dim": int(w.shape[1]), "embed_dim": int(w.shape[0]),
                "embed_kernel": int(w.shape[2]), "num_classes": int(c.shape[0])}
        return obj["model"], dims, obj
    raise InputError(f"{path} is neither an official CoLA state dict (keys actionness_module.f_embed.0.weight, "
                     f"...f_embed.0.bias, ...f_cls.0.weight) nor a cola_fast training checkpoint")


def official_class_names(num_classes: int, gt=None) -> list[str]:
    """Class names for an official model: those of gt (a gt.json path or dict) when
    given, else THUMOS'14's 20 in alphabetical order when num_classes is 20."""
    if gt is not None:
        from .data import class_names_from_gt
        names = class_names_from_gt(gt)  # InputError naming the file
        if len(names) != num_classes:
            raise ValueError(f"the weights have {num_classes} classes but the ground truth has {len(names)}")
        return names
    if num_classes == len(THUMOS14_CLASSES):
        return list(THUMOS14_CLASSES)
    raise ValueError(f"the weights have {num_classes} classes (not THUMOS'14's 20): give --gt gt.json "
                     f"to name them")


def init_model(model, path, say=print) -> None:
    """Load the weights of path (official CoLA state dict or cola_fast checkpoint) into
    model, after checking that the shapes agree with model's configuration."""
    state, dims, ckpt = load_any_weights(path)
    cfg = model.cfg
    if ckpt is None and cfg.classifier != "thumos":
        raise ValueError(f"--init {path}: official CoLA weights have the THUMOS'14 classifier (a 1x1 conv); "
                         f"this model's classifier is {cfg.classifier!r} (use --set classifier=thumos)")
    for name in ("feature_dim", "embed_dim", "embed_kernel", "num_classes"):
        if dims[name] != getattr(cfg, name):
            hint = (f" (add --set {name}={dims[name]})" if name in ("embed_dim", "embed_kernel") else
                    " (the features or classes of this dataset differ from those the weights were trained on)")
            raise ValueError(f"--init {path}: the weights have {name}={dims[name]}, the model {getattr(cfg, name)}"
                             + hint)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # e.g. a cola_fast checkpoint of another classifier
        raise ValueError(f"--init {path}: the weights do not fit the model: {e}") from None
    say(f"init: weights from {path} (D={dims['feature_dim']}, E={dims['embed_dim']}, "
        f"K={dims['embed_kernel']}, C={dims['num_classes']})")


def export(checkpoint, out) -> Path:
    """Write the model of a cola_fast checkpoint (or an official file) in the official layout."""
    state, _, _ = load_any_weights(checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(to_official(state), tmp)
    tmp.replace(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cola_fast.official", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write a checkpoint's model as an official CoLA state dict")
    e.add_argument("checkpoint", help="cola_fast checkpoint (best.pt, last.pt)")
    e.add_argument("out", help="output .pth / .pkl (loads in the official code with net.load_state_dict)")
    i = sub.add_parser("info", help="the dimensions of a weights file")
    i.add_argument("weights")
    args = p.parse_args(argv)
    try:
        if args.cmd == "export":
            print(f"official CoLA state dict -> {export(args.checkpoint, args.out)}")
        else:
            _, dims, ck = load_any_weights(args.weights)
            kind = "cola_fast checkpoint" if ck is not None else "official CoLA state dict"
            print(f"{args.weights}: {kind}, " + ", ".join(f"{k}={v}" for k, v in dims.items()))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
