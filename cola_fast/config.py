"""Training presets.

thumos14  the paper's settings (COLA_SPEC 2-5): E=2048, T=750, batch 16, 6000 steps, eval every 100
anet12    ActivityNet 1.2: kernel 9 embedding, depthwise classifier, T=50, batch 256, 100k steps
cpu       the default without a GPU: a small model on small synthetic features, minutes on 2 cores
cpu-large a wider CPU run (E=512, T=750) for a closer look on a CPU, tens of minutes
tiny      seconds, for tests and smoke runs

Any field can be overridden on the command line (`--set field=value`, or the named flags).
TrainConfig.validate() checks every field (type, enumeration, range) so that a bad setting
fails with one line naming it before any work; TrainConfig.from_dict() reads a saved
configuration (config.json, a checkpoint's "config") with the same checks.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

# the allowed values of the enumerated fields
CHOICES = {
    "modality": ("all", "rgb", "flow"),
    "classifier": ("thumos", "anet"),
    "proposals": ("thumos14", "anet12"),
    "eval_backend": ("auto", "reference", "native", "numpy"),  # cola_fast.evaluation.BACKENDS
    "backend": ("auto", "reference", "native", "triton"),
    "amp": ("none", "bf16"),
    "data_on_device": ("auto", "yes", "no"),
}
# integer fields and their smallest allowed value (a new field gets its entry here, and
# an enumerated one its entry in CHOICES: validate() checks every field by its default's type)
MIN_INT = {"num_segments": 1, "synthetic_feature_dim": 1, "synthetic_seed": 0, "embed_dim": 1,
           "embed_kernel": 1, "r_easy": 1, "r_hard": 1, "m": 1, "M": 2, "batch_size": 1, "steps": 1,
           "seed": 0, "eval_every": 1, "plot_videos": 0, "threads": 0}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
# fields under their former names, read from saved configurations and --set:
# former name -> (name, {former value: value})
RENAMED = {"eval_impl": ("eval_backend", {"fast": "auto", "reference": "reference"})}


def renamed_fields(d: dict) -> dict:
    """A saved configuration dict with RENAMED fields under their present names and values
    (a run saved before the rename resumes, and its config.json is read, as before)."""
    out = dict(d)
    for old, (new, values) in RENAMED.items():
        if old in out and new not in out:
            v = out.pop(old)
            out[new] = values.get(v, v) if isinstance(v, str) else v
    return out


BATCH_SCHEDULES = ("stream", "official")
# the settings that change how detections are timed, matched or described, not what is trained:
# a finished run is evaluated again with other values (python -m cola_fast.evaluate --run)
EVALUATION_FIELDS = ("feature_fps", "snippet_frames", "tiou", "proposals", "eval_backend", "check_durations",
                     "external_data_details", "device")
# the fields that describe the built-in synthetic data (unused when data_root names a dataset)
SYNTHETIC_FIELDS = ("synthetic_feature_dim", "synthetic_time_scale", "synthetic_seed")


@dataclass
class TrainConfig:
    preset: str = "cpu"
    # data
    data_root: str | None = None          # None: the built-in synthetic dataset
    modality: str = "all"                 # all | rgb | flow
    num_segments: int = 750
    synthetic_feature_dim: int = 1024     # per modality, synthetic data only
    synthetic_time_scale: float = 1.0     # shrinks synthetic videos (and their segments)
    synthetic_seed: int = 0
    feature_fps: float = 25.0             # frames per second of the videos the features were cut from
    snippet_frames: int = 16              # frames per feature snippet: a snippet lasts snippet_frames / feature_fps s
    check_durations: bool = True          # stop when gt.json's durations contradict T x snippet_frames / feature_fps
    external_data_details: str = ""       # results files' external_data.details ("": a neutral description)
    # model
    embed_dim: int = 2048
    embed_kernel: int = 3
    classifier: str = "thumos"
    dropout: float = 0.7
    r_easy: int = 5
    r_hard: int = 20
    m: int = 3
    M: int = 6
    # loss
    lambda_snico: float = 0.01
    tau: float = 0.07
    # optimisation
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 5e-4
    steps: int = 6000
    seed: int = 0
    # evaluation
    eval_every: int = 100
    proposals: str = "thumos14"           # thumos14 | anet12 (ProposalConfig preset)
    tiou: list = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    eval_backend: str = "auto"            # auto | reference | native | numpy: proposals and mAP
    plot_videos: int = 0                  # at each evaluation, plot this many test videos (out/plots/)
    report: bool = True                   # at the end, out/report/index.html for the best checkpoint
    # execution
    backend: str = "auto"                 # auto | reference | native | triton
    amp: str = "none"                     # none | bf16: forward under torch.autocast(bfloat16)
    device: str = "auto"                  # auto | cpu | cuda | cuda:N
    threads: int = 0                      # torch CPU threads; 0: leave torch's default
    data_on_device: str = "auto"          # auto (on CUDA) | yes | no: training features in one device tensor
    batch_schedule: str = "stream"        # stream: full batches across epoch ends | official: per-epoch shuffled
                                          # batches, the last one short (COLA_SPEC 4)
    compile: bool = False                 # torch.compile the model and loss of the training step
    init: str | None = None               # start from these weights (official CoLA state dict or cola_fast checkpoint)

    def __post_init__(self):
        # checks of the fields above whose bad values would otherwise fail late or silently
        if not (isinstance(self.feature_fps, (int, float)) and self.feature_fps > 0):
            raise ValueError(f"feature_fps must be a number > 0, got {self.feature_fps!r}")
        if isinstance(self.snippet_frames, bool) or not isinstance(self.snippet_frames, int) \
                or self.snippet_frames < 1:
            raise ValueError(f"snippet_frames must be an integer >= 1, got {self.snippet_frames!r}")
        if self.batch_schedule not in BATCH_SCHEDULES:
            raise ValueError(f"batch_schedule must be one of {', '.join(BATCH_SCHEDULES)}, "
                             f"got {self.batch_schedule!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false, got {self.compile!r}")

    @property
    def snippet_seconds(self) -> float:
        return self.snippet_frames / self.feature_fps

    def proposal_config(self):
        """The ProposalConfig preset of `proposals`, converting snippets to seconds with
        this config's feature_fps and snippet_frames."""
        from .evaluation import ProposalConfig
        base = ProposalConfig.anet12() if self.proposals == "anet12" else ProposalConfig.thumos14()
        return dataclasses.replace(base, fps=float(self.feature_fps), snippet_frames=self.snippet_frames)

    def recorded(self) -> dict:
        """The fields a run records in config.json: all of them, less the synthetic data's
        when data_root names a dataset (they do not apply to it)."""
        d = self.to_dict()
        if self.data_root is not None:
            for name in SYNTHETIC_FIELDS:
                d.pop(name)
        return d

    def external_data(self) -> dict:
        """The results files' "external_data": external_data_details when given, else a
        neutral description of the features (the built-in synthetic ones use no external data)."""
        if self.external_data_details:
            return {"used": True, "details": self.external_data_details}
        if self.data_root is None:
            return {"used": False, "details": "cola_fast's built-in synthetic THUMOS'14-shaped features"}
        return {"used": True, "details": f"pre-extracted video features (modality {self.modality}), "
                                         "not described (--set external_data_details=...)"}

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d, source: str = "config") -> "TrainConfig":
        """A validated TrainConfig from a saved dict; ValueError naming source otherwise."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: the configuration is not a dict but {type(d).__name__}")
        d = renamed_fields(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in d if k not in names)
        if unknown:
            raise ValueError(f"{source}: unknown config field(s) {unknown}")
        return cls(**d).validate(source)

    def validate(self, source: str = "config") -> "TrainConfig":
        """Check every field's type, enumeration and range; returns self, raises a
        ValueError naming the field otherwise."""
        def bad(name, why):
            raise ValueError(f"{source}: {name}={getattr(self, name)!r}: {why}")

        defaults = TrainConfig()
        for f in dataclasses.fields(self):
            v, d = getattr(self, f.name), getattr(defaults, f.name)
            if f.name == "data_root":
                if v is not None and (not isinstance(v, str) or not v):
                    bad(f.name, "must be a folder path or None")
            elif isinstance(d, bool):
                if not isinstance(v, bool):
                    bad(f.name, "must be true or false")
            elif isinstance(d, int):
                if isinstance(v, bool) or not isinstance(v, int):
                    bad(f.name, "must be an integer")
                if f.name in MIN_INT and v < MIN_INT[f.name]:
                    bad(f.name, f"must be >= {MIN_INT[f.name]}")
            elif isinstance(d, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    bad(f.name, "must be a finite number")
            elif isinstance(d, str) and not isinstance(v, str):
                bad(f.name, "must be a string")
            if f.name in CHOICES and v not in CHOICES[f.name]:
                bad(f.name, f"choose one of {', '.join(CHOICES[f.name])}")
        for name in ("lr", "tau", "synthetic_time_scale"):
            if getattr(self, name) <= 0:
                bad(name, "must be > 0")
        for name in ("lambda_snico", "weight_decay"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if not 0 <= self.dropout < 1:
            bad("dropout", "must be in [0, 1)")
        if self.embed_kernel % 2 != 1:
            bad("embed_kernel", "must be odd")
        if not self.m < self.M:
            bad("m", f"need m < M={self.M} for the hard-snippet windows")
        if self.M > self.num_segments:
            bad("M", f"the hard-mining window is longer than num_segments={self.num_segments}")
        for name in ("r_easy", "r_hard"):
            if self.num_segments // getattr(self, name) == 0:
                bad(name, f"num_segments={self.num_segments} is too small: it gives no "
                          f"{name[2:]} snippet (need num_segments >= {name}={getattr(self, name)})")
        if (not isinstance(self.tiou, list) or not self.tiou
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 1
                           for t in self.tiou)):
            bad("tiou", "must be a non-empty list of thresholds in (0, 1]")
        from .inputs import MAX_PLOTS, MAX_TIOU_THRESHOLDS  # here: cola_fast.inputs imports cola_fast.data
        if len(self.tiou) > MAX_TIOU_THRESHOLDS:
            bad("tiou", f"{len(self.tiou):,} thresholds, more than the limit of {MAX_TIOU_THRESHOLDS}")
        if self.plot_videos > MAX_PLOTS:
            bad("plot_videos", f"more than the limit of {MAX_PLOTS} plots per evaluation")
        if not _DEVICE.fullmatch(self.device):
            bad("device", "choose auto, cpu, cuda or cuda:N")
        return self


def resolve_device(name: str):
    """The torch.device a device setting names (auto | cpu | cuda | cuda:N) on this machine;
    ValueError when it names one this machine lacks."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r}: choose auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name}: asked for, but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r}: choose auto, cpu, cuda or cuda:N")
    return dev


PRESETS: dict[str, TrainConfig] = {
    "thumos14": TrainConfig(preset="thumos14"),
    "anet12": TrainConfig(
        preset="anet12", num_segments=50, embed_kernel=9, classifier="anet", r_easy=10, r_hard=8,
        lambda_snico=0.005, batch_size=256, steps=100_000, eval_every=500, proposals="anet12",
        tiou=[0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]),
    "cpu": TrainConfig(
        preset="cpu", num_segments=256, synthetic_feature_dim=64, synthetic_time_scale=0.5,
        embed_dim=256, steps=1000, eval_every=200, lr=1e-3),
    "cpu-large": TrainConfig(
        preset="cpu-large", num_segments=750, synthetic_feature_dim=256, embed_dim=512,
        steps=3000, eval_every=250, lr=3e-4),
    # shares the synthetic data of `cpu` (generated once); one thread: small ops gain nothing from two
    "tiny": TrainConfig(
        preset="tiny", num_segments=128, synthetic_feature_dim=64, synthetic_time_scale=0.5,
        embed_dim=64, steps=60, eval_every=30, lr=1e-2, batch_size=16, threads=1),
}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])


def parse_override(cfg: TrainConfig, item: str) -> TrainConfig:
    """Apply one `field=value` override, converting value to the field's type."""
    if "=" not in item:
        raise ValueError(f"--set expects field=value, got {item!r}")
    key, value = item.split("=", 1)
    key = key.strip().replace("-", "_")
    if key in RENAMED:
        new, values = RENAMED[key]
        if value not in values:
            raise ValueError(f"--set {key}={value!r}: choose one of {', '.join(values)} "
                             f"({key} is the former name of {new})")
        key, value = new, values[value]
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if key not in fields:
        raise ValueError(f"unknown config field {key!r}; fields: {', '.join(sorted(fields))}")
    current = getattr(cfg, key)
    if key == "data_root" and value.lower() in ("none", ""):
        return dataclasses.replace(cfg, data_root=None)
    try:
        if isinstance(current, bool):
            words = {"1": True, "true": True, "yes": True, "on": True,
                     "0": False, "false": False, "no": False, "off": False}
            if value.lower() not in words:
                raise ValueError
            conv = words[value.lower()]
        elif isinstance(current, int):
            conv = int(value)
        elif isinstance(current, float):
            conv = float(value)
        elif isinstance(current, list):
            conv = [float(v) for v in value.split(",") if v]
        elif current is None:
            conv = value
        else:
            conv = value
    except ValueError:
        raise ValueError(f"--set {key}: cannot read {value!r} as {type(current).__name__}") from None
    return dataclasses.replace(cfg, **{key: conv})
