"""Snippet sampling of COLA_SPEC section 1.

- ``sample_random_perturb(T, N, rng)``: training, "random perturb".
- ``sample_uniform(T, N)``: test, "uniform".
- ``sample_random_perturb_batch(T, N, generator, device)``: the random-perturb rule for a
  whole batch of lengths at once, on a torch device (same distribution as the scalar one).

The bin edges floor(i*T/N) are computed with integer arithmetic ``(i*T)//N``. This is
what the published code's float expression ``floor(arange(N+1) * T / N)`` gives too:
``i*T`` is an exact integer in float64 and IEEE division is correctly rounded, so the
quotient is exact when ``i*T`` is a multiple of N and at least 1/N away from an integer
otherwise.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from .errors import DataError

__all__ = ["sample_random_perturb", "sample_uniform", "sample_random_perturb_batch"]


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise DataError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        if name == "N":
            raise DataError(f"num_segments (N) must be >= {minimum}, got {value}")
        raise DataError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _bounds(T: int, N: int):
    """lo[i] = floor(i*T/N); hi[i] = floor((i+1)*T/N) for i < N-1 and T-1 for the last.
    Position i is drawn uniformly from the integers in [lo[i], max(lo[i], hi[i])]."""
    i = np.arange(N + 1, dtype=np.int64)
    edges = (i * T) // N
    lo = edges[:N].copy()
    hi = edges[1:].copy()
    hi[-1] = T - 1
    hi = np.maximum(hi, lo)
    return lo, hi


def sample_random_perturb(T: int, N: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Training sampling (COLA_SPEC 1, "random perturb").

    If T == N: 0..N-1. Otherwise, with s_i = i*T/N: for i < N-1 an integer drawn
    uniformly from [floor(s_i), floor(s_{i+1})] when those floors differ, else
    floor(s_i); for the last, uniformly from [floor(s_{N-1}), T-1] when
    floor(s_{N-1}) < T-1, else floor(s_{N-1}). When T < N indices repeat.

    ``rng``: a numpy Generator (or a seed for one; None: fresh entropy).
    Returns int64 array of shape (N,).
    """
    T = _check_int("T", T)
    N = _check_int("N", N)
    if T == N:
        return np.arange(N, dtype=np.int64)
    if rng is None or isinstance(rng, (numbers.Integral, np.integer)):
        rng = np.random.default_rng(rng)
    elif not isinstance(rng, np.random.Generator):
        raise DataError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")
    lo, hi = _bounds(T, N)
    return rng.integers(lo, hi + 1, dtype=np.int64)  # high is exclusive


def sample_uniform(T: int, N: int) -> np.ndarray:
    """Test sampling (COLA_SPEC 1, "uniform"): all T snippets when T <= N (length T),
    else floor(i*T/N) for i = 0..N-1 (length N). int64."""
    T = _check_int("T", T)
    N = _check_int("N", N)
    if T <= N:
        return np.arange(T, dtype=np.int64)
    return (np.arange(N, dtype=np.int64) * T) // N


def sample_random_perturb_batch(T, N: int, generator: torch.Generator | None = None,
                                device=None) -> torch.Tensor:
    """Random-perturb indices for a batch of videos at once, drawn on ``device``.

    ``T``: lengths, int tensor / sequence of shape (B,), each >= 1. Returns an int64
    tensor (B, N) on ``device`` (default: T's device) whose row b has the distribution
    of ``sample_random_perturb(T[b], N)``; rows with T == N are exactly 0..N-1.
    ``generator``: a torch.Generator on that device (None: the default one).

    Uniform integers in [lo, hi] are drawn as lo + floor(u * (hi - lo + 1)) with u a
    float64 uniform in [0, 1) (clamped to hi against rounding), so the bias is below
    2**-50 per position.
    """
    N = _check_int("N", N)
    if not isinstance(T, torch.Tensor):
        T = torch.as_tensor(np.asarray(T, dtype=np.int64))
    if T.dim() != 1:
        raise DataError(f"T must be 1-D (one length per video), got shape {tuple(T.shape)}")
    if T.dtype.is_floating_point or T.dtype == torch.bool or T.is_complex():
        raise DataError(f"T must be an integer tensor, got {T.dtype}")
    if device is None:
        device = generator.device if generator is not None else T.device
    device = torch.device(device)
    T = T.to(device=device, dtype=torch.int64)
    if T.numel() and T.device.type == "cpu" and int(T.min()) < 1:  # checked on host only
        raise DataError(f"every length in T must be >= 1, got min {int(T.min())}")
    B = T.shape[0]
    i = torch.arange(N + 1, device=device, dtype=torch.int64)
    edges = (i[None, :] * T[:, None]) // N  # (B, N+1)
    lo = edges[:, :N]
    hi = edges[:, 1:].clone()
    hi[:, -1] = T - 1
    hi = torch.maximum(hi, lo)
    u = torch.rand((B, N), generator=generator, device=device, dtype=torch.float64)
    width = (hi - lo + 1).to(torch.float64)
    idx = lo + torch.floor(u * width).to(torch.int64)
    idx = torch.minimum(idx, hi)
    # T == N: exactly 0..N-1 (no host sync: a select, not a branch)
    return torch.where((T == N)[:, None], i[None, :N], idx)
