"""The CoLA model (COLA_SPEC 2), built from cola_fast.ops.

    x (B,T,D) -> temporal_conv_embed (Conv1d D->E, kernel K, + bias + ReLU) = emb (B,T,E)
    emb -> Dropout(0.7) -> classifier -> ReLU = cas (B,T,C);  actionness = cas.sum(classes)

THUMOS'14 classifier: Conv1d(E->C, kernel 1, no bias). ActivityNet 1.2: Conv1d(E->C,
kernel 9, padding 4, no bias) then a depthwise Conv1d(C->C, kernel 7, dilation 2,
padding 6, groups C, no bias). The embedding weights are stored as nn.Conv1d's
((E, D, K) and (E,)), so checkpoints map one to one onto the published layout.

With backend="reference" every piece is the pure-PyTorch oracle; with any other backend
the three fused ops (conv embedding, mining, SniCo loss) run through cola_fast.ops.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops, reference


@dataclass
class ModelConfig:
    feature_dim: int = 2048        # D: input channels (rgb+flow)
    num_classes: int = 20          # C
    embed_dim: int = 2048          # E
    embed_kernel: int = 3          # 3 (THUMOS'14) or 9 (ActivityNet 1.2)
    classifier: str = "thumos"     # "thumos" (1x1 conv) or "anet" (k9 conv + depthwise k7 d2)
    dropout: float = 0.7
    keep_prob: float = 0.4         # easy-mining keep mask: Bernoulli(0.4) (published dropout p=0.6)
    r_easy: int = 5
    r_hard: int = 20
    m: int = 3
    M: int = 6

    def __post_init__(self):
        if self.embed_kernel % 2 != 1 or self.embed_kernel < 1:
            raise ValueError(f"embed_kernel must be a positive odd number, got {self.embed_kernel}")
        if self.classifier not in ("thumos", "anet"):
            raise ValueError(f"classifier must be 'thumos' or 'anet', got {self.classifier!r}")
        if not 0 < self.m < self.M:
            raise ValueError(f"need 0 < m < M for the hard-snippet windows, got m={self.m}, M={self.M}")
        for name in ("r_easy", "r_hard", "feature_dim", "num_classes", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def mining_counts(num_segments: int, r_easy: int, r_hard: int) -> tuple[int, int]:
    """k_easy, k_hard of COLA_SPEC 2; zero counts are an error in training."""
    k_easy, k_hard = num_segments // r_easy, num_segments // r_hard
    if k_easy == 0 or k_hard == 0:
        raise ValueError(
            f"num_segments={num_segments} is too small for r_easy={r_easy} / r_hard={r_hard}: "
            f"k_easy={k_easy}, k_hard={k_hard}; need num_segments >= {max(r_easy, r_hard)}")
    return k_easy, k_hard


class CoLA(nn.Module):
    def __init__(self, cfg: ModelConfig, backend: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.backend = backend
        E, C = cfg.embed_dim, cfg.num_classes
        K = cfg.embed_kernel
        # embedding parameters in nn.Conv1d layout, initialised as nn.Conv1d does
        conv = nn.Conv1d(cfg.feature_dim, E, K, padding=K // 2)
        self.embed_weight = nn.Parameter(conv.weight.detach().clone())
        self.embed_bias = nn.Parameter(conv.bias.detach().clone())
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.classifier == "thumos":
            self.classifier = nn.Conv1d(E, C, 1, bias=False)
            self.depthwise = None
        else:
            self.classifier = nn.Conv1d(E, C, 9, padding=4, bias=False)
            self.depthwise = nn.Conv1d(C, C, 7, dilation=2, padding=6, groups=C, bias=False)

    # ------------------------------------------------------------------------------
    def _is_reference(self) -> bool:
        return self.backend == "reference"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self._is_reference():
            return reference.temporal_conv_embed(x, self.embed_weight, self.embed_bias)
        return ops.temporal_conv_embed(x, self.embed_weight, self.embed_bias, backend=self.backend)

    def forward(self, x: torch.Tensor, mine: bool | None = None):
        """x (B,T,D). Returns a dict with video_scores (B,C), cas (B,T,C),
        actionness (B,T), embeddings (B,T,E) and, when mining (training by default),
        the index sets ea, eb (B,k_easy), ha, hb (B,k_hard)."""
        if x.dim() != 3 or x.shape[2] != self.cfg.feature_dim:
            raise ValueError(f"expected features (B,T,{self.cfg.feature_dim}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        emb = self.embed(x)                                   # (B,T,E)
        if self._is_reference():
            h = self.dropout(emb)
        else:  # fused one-pass dropout on the CPU (torch's own elsewhere)
            h = ops.dropout(emb, self.cfg.dropout, self.training, backend=self.backend)
        if self.depthwise is None and not self._is_reference():
            # THUMOS'14 classifier, a 1x1 conv: as a linear map on (B,T,E) or as the conv, by measurement
            cas = F.relu(ops.classifier_1x1(h, self.classifier.weight, backend=self.backend))  # (B,T,C)
        else:
            h = self.classifier(h.transpose(1, 2))            # (B,C,T)
            if self.depthwise is not None:
                h = self.depthwise(h)
            cas = F.relu(h).transpose(1, 2)                   # (B,T,C)
        actionness = cas.sum(dim=2)                           # (B,T)

        mine = self.training if mine is None else mine
        if mine:
            k_easy, k_hard = mining_counts(T, self.cfg.r_easy, self.cfg.r_hard)
        else:
            k_easy = max(1, T // self.cfg.r_easy)  # short test videos: at least one snippet
        out = {"embeddings": emb, "cas": cas, "actionness": actionness,
               "video_scores": reference.video_scores(cas, k_easy)}
        if mine:
            with torch.no_grad():
                if self.training:
                    keep = torch.empty_like(actionness).bernoulli_(self.cfg.keep_prob)
                else:
                    keep = torch.ones_like(actionness)
                a = actionness.detach()
                if self._is_reference():
                    idx = reference.mine_snippets(a, keep, k_easy, k_hard, self.cfg.m, self.cfg.M)
                else:
                    idx = ops.mine_snippets(a, keep, k_easy, k_hard, self.cfg.m, self.cfg.M,
                                            backend=self.backend)
            out.update(zip(("ea", "eb", "ha", "hb"), idx))
        return out


class CoLALoss(nn.Module):
    """Total = action loss + lambda * SniCo (COLA_SPEC 3)."""

    def __init__(self, lambda_snico: float = 0.01, tau: float = 0.07, backend: str | None = None):
        super().__init__()
        self.lambda_snico = lambda_snico
        self.tau = tau
        self.backend = backend

    def forward(self, out: dict, label: torch.Tensor):
        scores = out["video_scores"].float()
        # A diverged model gives NaN scores, which BCE refuses (an error on CPU, a
        # device-side assert on CUDA) before the trainer's non-finite check could save
        # crash.pt. NaN is given to BCE as 0.5 and carried into the loss by 0 * sum:
        # for finite scores both are exact no-ops (value and gradient, bit for bit).
        safe = torch.where(torch.isnan(scores), 0.5, scores)
        l_act = reference.action_loss(safe, label) + 0.0 * scores.sum()
        args = (out["embeddings"], out["ea"], out["eb"], out["ha"], out["hb"], self.tau)
        if self.backend == "reference":
            l_snico = reference.snico_loss(*args)
        else:
            l_snico = ops.snico_loss(*args, backend=self.backend)
        total = l_act + self.lambda_snico * l_snico
        return total, {"loss": total.detach(), "loss_action": l_act.detach(), "loss_snico": l_snico.detach()}
