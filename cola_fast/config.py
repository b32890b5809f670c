"""Training presets.

thumos14  the paper's settings (COLA_SPEC 2-5): E=2048, T=750, batch 16, 6000 steps, eval every 100
anet12    ActivityNet 1.2: kernel 9 embedding, depthwise classifier, T=50, batch 256, 100k steps
cpu       the default without a GPU: a small model on small synthetic features, minutes on 2 cores
cpu-large a wider CPU run (E=512, T=750) for a closer look on a CPU, tens of minutes
tiny      seconds, for tests and smoke runs

Any field can be overridden on the command line (`--set field=value`, or the named flags).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


BATCH_SCHEDULES = ("stream", "official")


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
    eval_impl: str = "fast"               # fast | reference evaluation pipeline
    plot_videos: int = 0                  # at each evaluation, plot this many test videos (out/plots/)
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

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if key not in fields:
        raise ValueError(f"unknown config field {key!r}; fields: {', '.join(sorted(fields))}")
    current = getattr(cfg, key)
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
            conv = None if value.lower() in ("none", "") else value
        else:
            conv = value
    except ValueError:
        raise ValueError(f"--set {key}: cannot read {value!r} as {type(current).__name__}") from None
    return dataclasses.replace(cfg, **{key: conv})
