"""Proposal-generation settings (COLA_SPEC section 5)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _thumos_cas():
    return np.arange(0, 0.25, 0.025)


def _thumos_act():
    return np.arange(0.1, 0.925, 0.025)


@dataclass
class ProposalConfig:
    """Everything that turns (video_scores, cas, actionness) into detections.

    Defaults are the THUMOS'14 values of the published code; ``anet12()`` gives the
    ActivityNet 1.2 ones. Threshold arrays are built with ``np.arange`` exactly as the
    published code does (the float values matter for which positions pass).
    """

    class_threshold: float = 0.2
    cas_thresholds: np.ndarray = field(default_factory=_thumos_cas)
    act_thresholds: np.ndarray = field(default_factory=_thumos_act)
    upsample: int = 24
    nms_iou: float = 0.6
    video_score_weight: float = 0.2
    snippet_frames: int = 16
    fps: float = 25
    min_run: int = 2
    outer_ratio: float = 0.25

    def __post_init__(self):
        self.cas_thresholds = np.asarray(self.cas_thresholds, dtype=np.float64).reshape(-1)
        self.act_thresholds = np.asarray(self.act_thresholds, dtype=np.float64).reshape(-1)
        if not isinstance(self.upsample, (int, np.integer)) or self.upsample < 1:
            raise ValueError(f"ProposalConfig.upsample must be a positive int, got {self.upsample!r}")
        if not isinstance(self.min_run, (int, np.integer)) or self.min_run < 1:
            raise ValueError(f"ProposalConfig.min_run must be a positive int, got {self.min_run!r}")
        for name in ("class_threshold", "nms_iou", "video_score_weight", "fps",
                     "snippet_frames", "outer_ratio"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
                raise ValueError(f"ProposalConfig.{name} must be a finite number, got {v!r}")
        if self.fps <= 0 or self.snippet_frames <= 0:
            raise ValueError("ProposalConfig.fps and snippet_frames must be > 0")
        if self.outer_ratio < 0:
            raise ValueError("ProposalConfig.outer_ratio must be >= 0")
        if not np.all(np.isfinite(self.cas_thresholds)) or not np.all(np.isfinite(self.act_thresholds)):
            raise ValueError("ProposalConfig thresholds must be finite")

    @classmethod
    def thumos14(cls) -> "ProposalConfig":
        return cls()

    @classmethod
    def anet12(cls) -> "ProposalConfig":
        return cls(class_threshold=0.1, cas_thresholds=np.arange(0, 0.15, 0.015))
