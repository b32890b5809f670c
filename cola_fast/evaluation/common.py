"""Pieces shared by the reference and the fast evaluation paths: input checks,
normalisation (COLA_SPEC 5.3) and the 24x linear upsampling (5.4).

Both are elementwise, so the two paths share them; the upsampling reproduces the
arithmetic of ``scipy.interpolate.interp1d(kind="linear", fill_value="extrapolate")``
exactly (the published code uses that), tested against scipy.
"""
from __future__ import annotations

import numpy as np

from .config import ProposalConfig


def to_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if a.dtype.kind != "f" or a.dtype.itemsize < 4:
        a = a.astype(np.float32)
    return a


def check_inputs(video_scores, cas, actionness, num_snippets_orig, class_names, cfg):
    if not isinstance(cfg, ProposalConfig):
        raise TypeError(f"cfg must be a ProposalConfig, got {type(cfg).__name__}")
    vs = to_numpy(video_scores, "video_scores")
    cas = to_numpy(cas, "cas")
    act = to_numpy(actionness, "actionness")
    if vs.ndim != 1:
        raise ValueError(f"video_scores must have shape (C,), got {vs.shape}")
    if cas.ndim != 2:
        raise ValueError(f"cas must have shape (T, C), got {cas.shape}")
    T, C = cas.shape
    if T < 1:
        raise ValueError("cas has no snippets (T = 0)")
    if C != vs.shape[0]:
        raise ValueError(f"cas has {C} classes but video_scores has {vs.shape[0]}")
    if act.shape != (T,):
        raise ValueError(f"actionness must have shape ({T},) to match cas {cas.shape}, got {act.shape}")
    if len(class_names) != C:
        raise ValueError(f"class_names has {len(class_names)} names for {C} classes")
    for nm, a in (("video_scores", vs), ("cas", cas), ("actionness", act)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{nm} contains NaN or inf")
    if isinstance(num_snippets_orig, bool) or not isinstance(num_snippets_orig, (int, np.integer)):
        try:
            n = int(num_snippets_orig)
            if n != num_snippets_orig:
                raise ValueError
        except (TypeError, ValueError):
            raise TypeError(f"num_snippets_orig must be an int, got {num_snippets_orig!r}") from None
        num_snippets_orig = n
    if num_snippets_orig < 1:
        raise ValueError(f"num_snippets_orig must be >= 1, got {num_snippets_orig}")
    return vs, cas, act, int(num_snippets_orig)


def predicted_classes(vs: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    """COLA_SPEC 5.2: classes with score >= threshold (numpy comparison semantics, as the
    published code), else the argmax class."""
    pred = np.where(vs >= cfg.class_threshold)[0]
    if len(pred) == 0:
        pred = np.array([np.argmax(vs)])
    return pred


def minmax_norm(x: np.ndarray) -> np.ndarray:
    """COLA_SPEC 5.3 along axis 0, in x's dtype (the published code does it in float32
    torch; the same IEEE operations)."""
    zero = x.dtype.type(0)
    hi = np.maximum(x.max(axis=0), zero)
    lo = np.maximum(x.min(axis=0), zero)
    d = np.asarray(hi - lo)
    d = np.where(d <= 0, x.dtype.type(1), d)
    r = (x - lo) / d
    r = np.where(r > 1, x.dtype.type(1), r)
    r = np.where(r < 0, zero, r)
    return r.astype(x.dtype, copy=False)


def upsample(y: np.ndarray, scale: int) -> np.ndarray:
    """Linear interpolation of y (T, ...) along axis 0 at np.arange(0, T, 1/scale),
    extrapolating past T-1: the arithmetic of scipy's interp1d(kind='linear',
    fill_value='extrapolate') (y_hi - y_lo in y's dtype, slope and position in float64).
    T == 1 (where interp1d raises) gives the constant curve."""
    T = y.shape[0]
    x_new = np.arange(0, T, 1 / scale)
    if T == 1:
        return np.repeat(y.astype(np.float64), len(x_new), axis=0)
    x = np.arange(0, T)
    # == np.searchsorted(x, x_new) (side 'left') for x = 0..T-1 and x_new in [0, T)
    idx = np.ceil(x_new).astype(np.int64).clip(1, T - 1)
    lo = idx - 1
    hi = idx
    x_lo = x[lo]
    x_hi = x[hi]
    y_lo = y[lo]
    y_hi = y[hi]
    shape = (-1,) + (1,) * (y.ndim - 1)
    slope = (y_hi - y_lo) / (x_hi - x_lo).reshape(shape)
    return slope * (x_new - x_lo).reshape(shape) + y_lo


def prepare_curves(vs, cas, act, cfg):
    """Steps 2-4: predicted classes, normalised and upsampled curves.
    Returns pred (K,), cas_up (L, K) float64, act_up (L,) float64."""
    pred = predicted_classes(vs, cfg)
    cas_n = minmax_norm(cas)[:, pred]
    act_n = minmax_norm(act[:, None])[:, 0]
    return pred, upsample(cas_n, cfg.upsample), upsample(act_n, cfg.upsample)
