"""snico_loss: the whole SniCo term (COLA_SPEC 3) as one op."""
from __future__ import annotations

import torch

from .. import reference
from ._backend import resolve


def snico_loss(emb: torch.Tensor, ea: torch.Tensor, eb: torch.Tensor, ha: torch.Tensor,
               hb: torch.Tensor, tau: float = 0.07, backend: str | None = None) -> torch.Tensor:
    b = resolve(backend, emb.device, "snico_loss")
    if b == "reference":
        return reference.snico_loss(emb, ea, eb, ha, hb, tau)
    raise NotImplementedError(f"snico_loss backend {b!r}: not yet written")
