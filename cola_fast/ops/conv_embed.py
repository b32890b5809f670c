"""temporal_conv_embed: channels-last Conv1d + bias + ReLU (the CoLA embedding)."""
from __future__ import annotations

import torch

from .. import reference
from ._backend import resolve


def temporal_conv_embed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        backend: str | None = None) -> torch.Tensor:
    b = resolve(backend, x.device, "temporal_conv_embed")
    if b == "reference":
        return reference.temporal_conv_embed(x, weight, bias)
    raise NotImplementedError(f"temporal_conv_embed backend {b!r}: not yet written")
