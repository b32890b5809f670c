"""mine_snippets: easy and hard snippet mining (COLA_SPEC 2.1-2.2) as one op."""
from __future__ import annotations

import torch

from .. import reference
from ._backend import resolve


def mine_snippets(actionness: torch.Tensor, keep: torch.Tensor, k_easy: int, k_hard: int,
                  m: int = 3, M: int = 6, backend: str | None = None):
    """(EA, EB, HA, HB) int64 index tensors of shapes (B,k_easy) x2 and (B,k_hard) x2."""
    b = resolve(backend, actionness.device, "mine_snippets")
    if b == "reference":
        return reference.mine_snippets(actionness, keep, k_easy, k_hard, m, M)
    raise NotImplementedError(f"mine_snippets backend {b!r}: not yet written")
