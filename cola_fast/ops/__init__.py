"""The public functional API of the fused ops.

Each op takes backend= "auto" | "reference" | "native" | "triton" (default: the
environment variable COLA_FAST_BACKEND, else "auto"); see cola_fast.ops._backend.
"""
from ._backend import BACKENDS, BackendUnavailable, describe, resolve
from .conv_embed import temporal_conv_embed
from .dropout import dropout
from .mining import mine_snippets, mining_cpu_isa
from .snico import snico_loss

__all__ = ["BACKENDS", "BackendUnavailable", "describe", "resolve",
           "dropout", "mine_snippets", "mining_cpu_isa", "snico_loss", "temporal_conv_embed"]
