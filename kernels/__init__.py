"""Triton kernels of cola_fast, installed as cola_fast.kernels.

One module per fused op, named as the op: mine_snippets.py, snico_loss.py,
temporal_conv_embed.py. On a CPU they run only under the Triton interpreter
(TRITON_INTERPRET=1 set before triton is imported)."""

import contextlib

import torch


def on_device(t: torch.Tensor):
    """The device guard of every launch: Triton launches on the current CUDA device, so a
    tensor on cuda:1 (without torch.cuda.set_device) needs cuda:1 made current for the call.
    A no-op for CPU tensors (the interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
