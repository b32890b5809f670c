"""temporal_conv_embed (ReLU(Conv1d + bias), channels-last) against the reference
(torch conv1d + ReLU with the permutes): outputs and all three gradients, every backend.

Triton runs under its interpreter on a machine without a GPU (TRITON_INTERPRET=1 is set
here before triton is imported), at tiny shapes. CUDA tests skip without a GPU.
"""
from __future__ import annotations

import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cola_fast import reference  # noqa: E402
from cola_fast.ops import module, temporal_conv_embed  # noqa: E402
from cola_fast.ops._backend import native_has_kernel, triton_available  # noqa: E402

HAS_NATIVE = native_has_kernel("temporal_conv_embed", "cpu")
HAS_CUDA = torch.cuda.is_available()
needs_native = pytest.mark.skipif(not HAS_NATIVE, reason="cola_fast._C not built")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
needs_triton_cpu = pytest.mark.skipif(not triton_available("cpu"), reason="triton interpreter unavailable")


def make(B, T, Cin, Cout, K, bias=True, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, Cin, generator=g, dtype=torch.float64)
    w = torch.randn(Cout, Cin, K, generator=g, dtype=torch.float64) / (Cin * K) ** 0.5
    b = 0.3 * torch.randn(Cout, generator=g, dtype=torch.float64) if bias else None
    conv = (lambda t: None if t is None else t.to(device=device, dtype=dtype).requires_grad_(True))
    return conv(x), conv(w), conv(b)


def run(fn, x, w, b, go):
    y = fn(x, w, b)
    ins = [t for t in (x, w, b) if t is not None and t.requires_grad]
    grads = torch.autograd.grad(y, ins, go)
    return y, grads


def compare(backend, x, w, b, atol, rtol, seed=1):
    ref = reference.temporal_conv_embed
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(x.shape[0], x.shape[1], w.shape[0], generator=g, dtype=torch.float64).to(x.device, x.dtype)
    y, grads = run(lambda *a: temporal_conv_embed(*a, backend=backend), x, w, b, go)
    yr, grads_r = run(ref, x, w, b, go)
    assert y.shape == yr.shape and y.dtype == yr.dtype
    torch.testing.assert_close(y, yr, atol=atol, rtol=rtol)
    names = [n for n, t in (("dx", x), ("dweight", w), ("dbias", b)) if t is not None and t.requires_grad]
    for n, a, r in zip(names, grads, grads_r):
        torch.testing.assert_close(a, r, atol=atol, rtol=rtol, msg=lambda m, n=n: f"{n}: {m}")


# ------------------------------------------------------------------------------------------
# native CPU
# ------------------------------------------------------------------------------------------
@needs_native
@pytest.mark.parametrize("K", [1, 3, 9])
@pytest.mark.parametrize("T", [1, 2, 3, 37, 750])
@pytest.mark.parametrize("B", [1, 16])
def test_native_cpu_matches_reference_f64(B, T, K):
    x, w, b = make(B, T, 5, 7, K, seed=B * 1000 + T * 10 + K)
    compare("native", x, w, b, atol=1e-12, rtol=1e-10)


@needs_native
@pytest.mark.parametrize("K,T", [(3, 37), (9, 3), (9, 50), (1, 5)])
def test_native_cpu_no_bias_f32(K, T):
    x, w, b = make(4, T, 6, 3, K, bias=False, dtype=torch.float32)
    compare("native", x, w, b, atol=1e-5, rtol=1e-4)


@needs_native
def test_native_cpu_f32_channels():
    x, w, b = make(3, 40, 64, 48, 3, dtype=torch.float32)
    compare("native", x, w, b, atol=1e-5, rtol=1e-4)


@needs_native
def test_native_cpu_noncontiguous_inputs():
    x, w, b = make(2, 11, 6, 4, 3)
    xt = x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)  # (B,T,C) view of (B,C,T)
    wt = w.detach().permute(2, 0, 1).contiguous().permute(1, 2, 0).requires_grad_(True)
    assert not xt.is_contiguous() and not wt.is_contiguous()
    compare("native", xt, wt, b, atol=1e-12, rtol=1e-10)


@needs_native
def test_native_cpu_partial_grads():
    # x without grad (the CoLA input features): only dweight and dbias are computed.
    x, w, b = make(3, 9, 4, 5, 3)
    x.requires_grad_(False)
    compare("native", x, w, b, atol=1e-12, rtol=1e-10)
    x, w, b = make(3, 9, 4, 5, 3)
    w.requires_grad_(False)
    compare("native", x, w, b, atol=1e-12, rtol=1e-10)


def _relu_boundary_inputs(dtype):
    """Pre-activations exactly 0 at many places: output channel 0 has zero weights and zero
    bias (0 everywhere), channel 1 zero bias and a video span of x that is all zero for
    longer than the kernel (0 in the span's interior, whatever the summation order)."""
    B, T, Cin, Cout, K = 2, 12, 4, 5, 3
    x, w, b = make(B, T, Cin, Cout, K, dtype=dtype)
    with torch.no_grad():
        w[0] = 0
        b[0] = 0
        b[1] = 0
        x[0, 3:9] = 0
    return x, w, b


@pytest.mark.parametrize("backend", [
    pytest.param("native", marks=needs_native),
    pytest.param("triton", marks=needs_triton_cpu),
])
def test_relu_boundary_gradient_convention(backend):
    if backend == "triton" and HAS_CUDA:
        pytest.skip("covered by the CUDA tests")
    x, w, b = _relu_boundary_inputs(torch.float64 if backend == "native" else torch.float32)
    yr = reference.temporal_conv_embed(x, w, b)
    assert (yr[:, :, 0] == 0).all() and (yr[0, 4:8, 1] == 0).all()  # the construction holds
    y = temporal_conv_embed(x, w, b, backend=backend)
    assert (y[:, :, 0] == 0).all() and (y[0, 4:8, 1] == 0).all()
    go = torch.ones_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), go)
    rx, rw, rb = torch.autograd.grad(yr, (x, w, b), go)
    # torch's relu passes no gradient at exactly 0: bias 0 gets nothing at all
    assert rb[0] == 0 and gb[0] == 0
    assert (gw[0] == 0).all()
    tol = dict(atol=1e-12, rtol=1e-10) if backend == "native" else dict(atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gx, rx, **tol)
    torch.testing.assert_close(gw, rw, **tol)
    torch.testing.assert_close(gb, rb, **tol)


@needs_native
@pytest.mark.parametrize("B,T,K,bias", [(2, 5, 3, True), (3, 2, 9, False), (1, 7, 1, True),
                                        (2, 6, 3, True), (1, 2, 3, False),  # K=3, even T: Winograd
                                        (2, 8, 9, True)])  # K=9, even T: grouped Winograd forward
def test_native_gradcheck_f64(B, T, K, bias):
    x, w, b = make(B, T, 3, 4, K, bias=bias)
    # keep pre-activations away from the ReLU kink so finite differences are valid
    with torch.no_grad():
        pre = torch.nn.functional.conv1d(x.transpose(1, 2), w, b, padding=K // 2)
    assert (pre.abs() > 1e-5).all()
    fn = (lambda x, w, b: temporal_conv_embed(x, w, b, backend="native"))
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6, nondet_tol=0.0)


@needs_native
def test_native_opcheck():
    fwd, bwd = module("temporal_conv_embed").native_ops()
    for bias in (True, False):
        x, w, b = make(2, 6, 3, 4, 3, bias=bias, dtype=torch.float32)
        torch.library.opcheck(fwd, (x, w, b))
        y = fwd(x.detach(), w.detach(), None if b is None else b.detach())
        go = torch.randn_like(y)
        for mask in ([True, True, True], [False, True, bias], [True, False, False]):
            torch.library.opcheck(bwd, (go, y, x.detach(), w.detach(), mask))


@needs_native
def test_native_torch_compile():
    # aot_eager traces through the fake kernels and the registered autograd formula.
    x, w, b = make(2, 7, 3, 4, 3, dtype=torch.float32)
    fn = torch.compile(lambda x, w, b: temporal_conv_embed(x, w, b, backend="native").sum(),
                       backend="aot_eager", fullgraph=True)
    out = fn(x, w, b)
    grads = torch.autograd.grad(out, (x, w, b))
    ref = reference.temporal_conv_embed(x, w, b).sum()
    rgrads = torch.autograd.grad(ref, (x, w, b))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, r in zip(grads, rgrads):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)


@needs_native
def test_native_cpu_autocast_and_low_precision():
    x, w, b = make(2, 9, 4, 5, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = temporal_conv_embed(x, w, b, backend="native")
    assert y.dtype == torch.float32  # CPU kernels compute in float32 (documented)
    torch.testing.assert_close(y, reference.temporal_conv_embed(x, w, b), atol=1e-5, rtol=1e-5)
    xb, wb, bb = (t.detach().bfloat16() for t in (x, w, b))
    yb = temporal_conv_embed(xb, wb, bb, backend="native")
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), reference.temporal_conv_embed(xb.float(), wb.float(), bb.float()),
                               atol=2e-2, rtol=2e-2)


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", pytest.param("native", marks=needs_native)])
def test_validation_errors(backend):
    x, w, b = make(2, 5, 3, 4, 3, dtype=torch.float32)
    f = (lambda *a: temporal_conv_embed(*a, backend=backend))
    with pytest.raises(ValueError, match="x must be"):
        f(x[0], w, b)
    with pytest.raises(ValueError, match="weight must be"):
        f(x, w[..., 0], b)
    with pytest.raises(ValueError, match="odd"):
        f(x, torch.randn(4, 3, 2), b)
    with pytest.raises(ValueError, match="Cin"):
        f(x, torch.randn(4, 5, 3), b)
    with pytest.raises(ValueError, match="bias"):
        f(x, w, torch.randn(5))
    with pytest.raises(TypeError, match="dtype"):
        f(x, w.double(), b)
    with pytest.raises(TypeError, match="floating"):
        f(x.long(), w, b)
    with pytest.raises(ValueError, match="device"):
        f(x, w.to("meta"), b)
    with pytest.raises(TypeError):
        f(x.detach().numpy(), w, b)


def test_unknown_backend():
    x, w, b = make(1, 3, 2, 2, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match="unknown backend"):
        temporal_conv_embed(x, w, b, backend="cudnn")


# ------------------------------------------------------------------------------------------
# Triton under the interpreter (CPU), tiny shapes
# ------------------------------------------------------------------------------------------
@needs_triton_cpu
@pytest.mark.skipif(HAS_CUDA, reason="the interpreter tests are for machines without a GPU")
@pytest.mark.parametrize("B,T,Cin,Cout,K,bias", [
    (1, 1, 3, 5, 3, True), (2, 2, 4, 3, 9, False), (2, 3, 5, 6, 9, True),
    (2, 37, 17, 18, 3, True), (3, 5, 3, 4, 1, True),
])
def test_triton_interpreter_matches_reference(B, T, Cin, Cout, K, bias):
    x, w, b = make(B, T, Cin, Cout, K, bias=bias, dtype=torch.float32)
    compare("triton", x, w, b, atol=1e-5, rtol=1e-4)


@needs_triton_cpu
@pytest.mark.skipif(HAS_CUDA, reason="the interpreter tests are for machines without a GPU")
def test_triton_interpreter_f64_and_partial_grads():
    x, w, b = make(2, 6, 3, 4, 3)
    compare("triton", x, w, b, atol=1e-12, rtol=1e-10)
    x.requires_grad_(False)
    compare("triton", x, w, b, atol=1e-12, rtol=1e-10)
    x, w, b = make(2, 6, 3, 4, 3)
    w.requires_grad_(False)
    compare("triton", x, w, b, atol=1e-12, rtol=1e-10)


@needs_triton_cpu
@pytest.mark.skipif(HAS_CUDA, reason="the interpreter tests are for machines without a GPU")
def test_triton_opcheck():
    _triton_op = module("temporal_conv_embed")._triton_op

    op = _triton_op()
    x, w, b = make(1, 4, 3, 2, 3, dtype=torch.float32)
    torch.library.opcheck(op, (x, w, b), test_utils=("test_schema", "test_autograd_registration",
                                                      "test_faketensor"))


# ------------------------------------------------------------------------------------------
# CUDA (skip without a GPU)
# ------------------------------------------------------------------------------------------
CUDA_BACKENDS = ["native", "triton"]


def _cuda_backend_ok(backend):
    if backend == "native" and not native_has_kernel("temporal_conv_embed", "cuda"):
        pytest.skip("extension built without CUDA kernels")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("B,T,Cin,Cout,K", [(1, 1, 5, 7, 3), (16, 37, 24, 40, 3), (3, 750, 64, 48, 9),
                                            (2, 3, 130, 70, 9), (4, 50, 256, 128, 1)])
def test_cuda_f64_matches_reference(backend, B, T, Cin, Cout, K):
    _cuda_backend_ok(backend)
    x, w, b = make(B, T, Cin, Cout, K, device="cuda")
    compare(backend, x, w, b, atol=1e-10, rtol=1e-8)


def _away_from_the_kink(x, w, b, go, frac=0.05):
    """(go with zeros, mask): the ReLU's mask may differ between correct implementations wherever a
    pre-activation lies within rounding of 0 (one flip moves dW by up to |dy x|), so the gradient
    is not sent back through the outputs whose true (float64) pre-activation lies within `frac` of
    its spread of 0, and the outputs are compared only where it does not. Both sides of the mask
    stay tested (about half the outputs are on)."""
    with torch.no_grad():
        pre = torch.nn.functional.conv1d(x.double().transpose(1, 2), w.double(),
                                         None if b is None else b.double(), padding=w.shape[2] // 2).transpose(1, 2)
        keep = pre.abs() >= frac * pre.std()
    return go * keep.to(go.dtype), keep


def low_precision_errors(impl, dtype, x, w, b, go):
    """Max errors of impl's output and gradients in dtype against the float64 truth, and the
    ReLU mask flips: (errors {y, dx, dw, db}, flips, band). A pre-activation within rounding of
    0 may land on either side of the ReLU in a correct low-precision kernel, and one such flip
    moves dW by |dy x| (more than the rounding of a whole GEMM): so each implementation's
    gradients are compared with the truth under its *own* mask, and the flips are returned
    as a mask, with the truth's pre-activations z: (errors, maxima of the truths, flips, z)."""
    low = [t.detach().to(dtype).requires_grad_(True) for t in (x, w, b)]
    yk, gk = run(impl, *low, go.to(dtype))
    xt, wt, bt = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    z = F.conv1d(xt.transpose(1, 2), wt, bt, padding=w.shape[2] // 2).transpose(1, 2)  # float64 truth
    yt = torch.relu(z)
    mask = (yk.detach() > 0) | torch.isnan(yk.detach())
    gt = torch.autograd.grad(z, (xt, wt, bt), go.double() * mask)  # the truth's gradients, impl's mask
    names, got, truth = ("y", "dx", "dw", "db"), (yk, *gk), (yt, *gt)
    errs = {n: (k.double() - t).abs().max().item() for n, k, t in zip(names, got, truth)}
    top = {n: t.abs().max().item() for n, t in zip(names, truth)}
    return errs, top, mask != (z > 0), z.detach()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,T,Cin,Cout,K", [(16, 37, 64, 96, 3), (4, 50, 256, 128, 9), (2, 750, 128, 256, 3),
                                            (3, 3, 40, 24, 9)])  # T < K/2
def test_cuda_low_precision_rule(backend, dtype, B, T, Cin, Cout, K):
    """flash-attention rule: error vs the float64 truth at most 2x PyTorch's own error in that
    dtype (plus a small floor), each compared under its own ReLU mask (low_precision_errors);
    the masks differ from the truth's only within rounding of 0. fp32 uses TF32 like cuDNN
    when allowed, so its floor is TF32's."""
    _cuda_backend_ok(backend)
    x, w, b = make(B, T, Cin, Cout, K, device="cuda")  # float64
    g = torch.Generator().manual_seed(7)
    go = torch.randn(B, T, Cout, generator=g, dtype=torch.float64).cuda()
    e_torch, _, _, _ = low_precision_errors(reference.temporal_conv_embed, dtype, x, w, b, go)
    e_kern, top, flips, z = low_precision_errors(lambda *a: temporal_conv_embed(*a, backend=backend),
                                                 dtype, x, w, b, go)
    rel = 1e-3 if dtype == torch.float32 else 1e-6  # fp32: TF32; Triton's conversion truncates where cuDNN rounds
    for name in e_kern:
        assert e_kern[name] <= 2 * e_torch[name] + rel * top[name], (name, e_kern[name], e_torch[name])
    band = 4 * (e_torch["y"] + rel * top["y"])
    assert (z[flips].abs() <= band).all(), (z[flips].abs().max().item(), band)  # mask flips only near 0


class _ieee_fp32_convs:
    """TF32 off for torch's cuDNN convolutions (and so for the kernels that follow that setting)."""

    def __enter__(self):
        self.get = getattr(torch._C, "_get_fp32_precision_getter", None)
        if self.get is not None:
            self.saved = self.get("cuda", "conv")
            torch._C._set_fp32_precision_setter("cuda", "conv", "ieee")
        else:
            self.saved = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        if self.get is not None:
            torch._C._set_fp32_precision_setter("cuda", "conv", self.saved)
        else:
            torch.backends.cudnn.allow_tf32 = self.saved


def _assert_float32_close(yk, yt, keep, grads_k, grads_t):
    """The kernel's float32 output (where keep: away from the ReLU kink) and gradients against the
    float64 reference's, to float32 rounding relative to each tensor's largest value."""
    torch.testing.assert_close(yk.double()[keep], yt[keep], atol=1e-5 * yt.abs().max().item(), rtol=1e-5)
    for name, t, k in zip(("dx", "dw", "db"), grads_t, grads_k):
        torch.testing.assert_close(k.double(), t, atol=1e-5 * t.abs().max().item(), rtol=1e-5,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("B,T,Cin,Cout,K,bias", [(1, 1, 5, 7, 3, True), (16, 37, 64, 96, 3, True),
                                                 (4, 50, 256, 128, 9, False), (2, 3, 33, 20, 9, True)])
def test_cuda_f32_ieee_matches_reference(backend, B, T, Cin, Cout, K, bias):
    """float32 without TF32: the float64 reference's values to float32 rounding (away from the kink)."""
    _cuda_backend_ok(backend)
    x, w, b = make(B, T, Cin, Cout, K, bias=bias, device="cuda")
    g = torch.Generator().manual_seed(9)
    go, keep = _away_from_the_kink(x, w, b, torch.randn(B, T, Cout, generator=g, dtype=torch.float64).cuda())
    yt, gt = run(reference.temporal_conv_embed, x, w, b, go)
    low = [None if t is None else t.detach().float().requires_grad_(True) for t in (x, w, b)]
    with _ieee_fp32_convs():
        yk, gk = run(lambda *a: temporal_conv_embed(*a, backend=backend), *low, go.float())
    _assert_float32_close(yk, yt, keep, gk, gt)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_cuda_nonfinite_at_video_boundaries(backend, dtype):
    """NaN and inf in the first and last rows of videos, where the per-tap dW GEMMs of the native
    kernel pair the zeroed gradient rows of one video with the next video's x (0 * NaN): the NaN /
    inf patterns of the output and of every gradient are the reference's (the guard recomputes)."""
    _cuda_backend_ok(backend)
    B, T, Cin, Cout, K = 3, 9, 6, 5, 5
    g = torch.Generator().manual_seed(13)
    x = torch.randn(B, T, Cin, generator=g, dtype=torch.float64)
    x[1, 0, 1] = float("nan")   # first row of a middle video
    x[1, T - 1, 3] = float("inf")  # last row of the same video
    x[0, T - 2, 4] = float("nan")  # inside the last K/2 rows of the first video
    w = torch.randn(Cout, Cin, K, generator=g, dtype=torch.float64) / (Cin * K) ** 0.5
    b = 0.3 * torch.randn(Cout, generator=g, dtype=torch.float64)
    dy = torch.randn(B, T, Cout, generator=g, dtype=torch.float64)
    ref_dt = torch.float64 if dtype == torch.float64 else torch.float32  # the CPU reference's dtype
    got_in = [t.to(dtype).cuda().requires_grad_() for t in (x, w, b)]
    ref_in = [t.to(dtype).to(ref_dt).requires_grad_() for t in (x, w, b)]
    got = temporal_conv_embed(*got_in, backend=backend)
    want = reference.temporal_conv_embed(*ref_in)
    got.backward(dy.to(dtype).cuda())
    want.backward(dy.to(dtype).to(ref_dt))
    assert torch.isnan(want[1, 0]).all() and torch.isfinite(want[2]).all()  # the case is what it says
    assert torch.isfinite(ref_in[1].grad[:, 1, K // 2 + 1:]).all()  # taps that never reach x[1, 0]
    for name, a, r in (("y", got, want), ("dx", got_in[0].grad, ref_in[0].grad),
                       ("dw", got_in[1].grad, ref_in[1].grad), ("db", got_in[2].grad, ref_in[2].grad)):
        a = a.detach().cpu()
        assert torch.equal(torch.isnan(a), torch.isnan(r)), (name, torch.isnan(a) ^ torch.isnan(r))
        assert torch.equal(torch.isinf(a), torch.isinf(r)), name


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_cuda_large_finite_inputs(backend):
    """|x| ~ 1e19 with w ~ 1e-19 (float32): finite products whose size makes the native kernel's
    guard recompute the fused forward by the direct sum; the values must still be the reference's."""
    _cuda_backend_ok(backend)
    x, w, b = make(4, 20, 16, 12, 3, device="cuda")
    scaled = [(x * 1e19), (w * 1e-19), b]
    go = torch.randn(4, 20, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64).cuda()
    go, keep = _away_from_the_kink(*scaled, go)
    yt, gt = run(reference.temporal_conv_embed, *[t.detach().requires_grad_(True) for t in scaled], go)
    low = [t.detach().float().requires_grad_(True) for t in scaled]
    with _ieee_fp32_convs():
        yk, gk = run(lambda *a: temporal_conv_embed(*a, backend=backend), *low, go.float())
    _assert_float32_close(yk, yt, keep, gk, gt)


def test_cuda_candidates_include_the_cublaslt_kernel():
    """auto's CUDA candidates hold the native cuBLASLt kernel whenever the extension has its CUDA
    kernels (checked without a GPU: the dispatch key has a kernel), under its own name."""
    conv_embed = module("temporal_conv_embed")

    names = conv_embed.candidates(torch.device("cuda"), torch.float32)
    assert names[0] == "reference"
    assert ("native:cublaslt" in names) == native_has_kernel("temporal_conv_embed", "cuda")
    assert "native" not in names


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_cuda_autocast_bf16(backend):
    _cuda_backend_ok(backend)
    x, w, b = make(4, 30, 32, 48, 3, dtype=torch.float32, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = temporal_conv_embed(x, w, b, backend=backend)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    torch.testing.assert_close(y.float(), reference.temporal_conv_embed(x, w, b), atol=5e-2, rtol=5e-2)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_cuda_relu_boundary(backend):
    _cuda_backend_ok(backend)
    x, w, b = _relu_boundary_inputs(torch.float64)
    x, w, b = (t.detach().cuda().requires_grad_(True) for t in (x, w, b))
    y = temporal_conv_embed(x, w, b, backend=backend)
    assert (y[:, :, 0] == 0).all() and (y[0, 4:8, 1] == 0).all()
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
    rx, rw, rb = torch.autograd.grad(reference.temporal_conv_embed(x, w, b), (x, w, b), torch.ones_like(y))
    assert gb[0] == 0
    for a, r in ((gx, rx), (gw, rw), (gb, rb)):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-8)


@pytest.mark.gpu
@needs_cuda
def test_cuda_native_opcheck():
    if not native_has_kernel("temporal_conv_embed", "cuda"):
        pytest.skip("extension built without CUDA kernels")
    fwd, bwd = module("temporal_conv_embed").native_ops()
    x, w, b = make(2, 6, 3, 4, 3, dtype=torch.float32, device="cuda")
    torch.library.opcheck(fwd, (x, w, b))
    y = fwd(x.detach(), w.detach(), b.detach())
    torch.library.opcheck(bwd, (torch.randn_like(y), y, x.detach(), w.detach(), [True, True, True]))


@needs_native
def test_native_winograd_and_shifted_gemm_paths_agree():
    """K=3 (forward and backward) and K=9 (forward) with even T take the Winograd F(2,3) path;
    COLA_FAST_CONV_WINOGRAD=0 (read once per process) forces the shifted-GEMM path. Both must
    give the same output and gradients."""
    import subprocess
    import sys
    code = (
        "import sys, torch, cola_fast.ops as o\n"
        "res = []\n"
        "for K in (3, 9):\n"
        "    g = torch.Generator().manual_seed(K)\n"
        "    x = torch.randn(3, 10, 6, generator=g, dtype=torch.float64, requires_grad=True)\n"
        "    w = torch.randn(5, 6, K, generator=g, dtype=torch.float64, requires_grad=True)\n"
        "    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)\n"
        "    y = o.temporal_conv_embed(x, w, b, backend='native')\n"
        "    y.backward(torch.randn(y.shape, generator=g, dtype=torch.float64))\n"
        "    res += [t.detach() for t in (y, x.grad, w.grad, b.grad)]\n"
        "torch.save(res, sys.argv[1])\n"
    )
    outs = {}
    for flag in ("1", "0"):
        path = os.path.join(tempfile.mkdtemp(), f"w{flag}.pt")
        env = dict(os.environ, COLA_FAST_CONV_WINOGRAD=flag)
        subprocess.run([sys.executable, "-c", code, path], check=True, env=env)
        outs[flag] = torch.load(path)
    for a, r in zip(outs["1"], outs["0"]):
        torch.testing.assert_close(a, r, atol=1e-12, rtol=1e-10)
    # and the Winograd path is not bit-identical to the other: it really is a different algorithm
    assert not torch.equal(outs["1"][0], outs["0"][0])  # K=3 output
    assert not torch.equal(outs["1"][4], outs["0"][4])  # K=9 output


def test_conv_tf32_choice_follows_torch_conv_precision():
    """fp32 convolutions use TF32 (CUDA and Triton-GPU kernels) exactly when torch lets its cuDNN
    convolutions do so. torch >= 2.9 sets this per operation; reading the legacy
    cudnn.allow_tf32 raises once the conv and RNN settings differ, which must not break us."""
    conv_allows_tf32 = module("temporal_conv_embed").conv_allows_tf32

    get = getattr(torch._C, "_get_fp32_precision_getter", None)
    if get is None:
        pytest.skip("torch < 2.9 has only the legacy flag")
    put = torch._C._set_fp32_precision_setter
    saved = {op: get("cuda", op) for op in ("all", "conv", "rnn")}
    try:
        put("cuda", "conv", "ieee")
        put("cuda", "rnn", "tf32")
        assert conv_allows_tf32() is False
        put("cuda", "conv", "tf32")
        put("cuda", "rnn", "ieee")
        assert conv_allows_tf32() is True
        put("cuda", "conv", "none")  # inherits from the cuDNN-wide setting
        put("cuda", "all", "ieee")
        assert conv_allows_tf32() is False
    finally:
        for op, v in saved.items():
            put("cuda", op, v)


@pytest.mark.parametrize("backend,device", [
    pytest.param("native", "cpu", marks=needs_native),
    pytest.param("triton", "cpu", marks=needs_triton_cpu),
    pytest.param("native", "cuda", marks=[needs_cuda, pytest.mark.gpu]),
    pytest.param("triton", "cuda", marks=[needs_cuda, pytest.mark.gpu]),
])
@pytest.mark.parametrize("T,K", [(8, 3), (7, 5)])  # CPU: the Winograd path (K=3, even T) and the direct one
def test_nan_input_stays_nan_like_torch(backend, device, T, K):
    """A NaN in the features must come out as NaN where torch's conv + relu gives NaN (not as a
    ReLU'd 0 that hides it), and the gradients must have the reference's NaN pattern."""
    dt = torch.float64 if device == "cpu" and backend == "native" else torch.float32
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, T, 6, generator=g, dtype=dt)
    x[0, 2, 1] = float("nan")
    w = torch.randn(5, 6, K, generator=g, dtype=dt)
    b = torch.randn(5, generator=g, dtype=dt)
    xs = [x.clone().to(device).requires_grad_(), x.clone().requires_grad_()]
    ws = [w.clone().to(device).requires_grad_(), w.clone().requires_grad_()]
    bs = [b.clone().to(device).requires_grad_(), b.clone().requires_grad_()]
    got = temporal_conv_embed(xs[0], ws[0], bs[0], backend=backend)
    want = reference.temporal_conv_embed(xs[1], ws[1], bs[1])
    assert torch.isnan(want).any()
    assert torch.equal(torch.isnan(got).cpu(), torch.isnan(want))
    dy = torch.randn(want.shape, generator=g, dtype=dt)
    got.backward(dy.to(device))
    want.backward(dy)
    for a, r in ((xs[0].grad, xs[1].grad), (ws[0].grad, ws[1].grad), (bs[0].grad, bs[1].grad)):
        assert torch.equal(torch.isnan(a).cpu(), torch.isnan(r))


def _cpu_native_candidates() -> list[str]:
    """The native CPU candidates this CPU runs (the GEMM libraries its probe found working)."""
    conv_embed = module("temporal_conv_embed")
    return [n for n in conv_embed.candidates(torch.device("cpu"), torch.float32) if n.startswith("native")]


@needs_native
@pytest.mark.parametrize("impl", _cpu_native_candidates())
@pytest.mark.parametrize("case", ["inf", "-inf", "overflow"])
def test_winograd_nonfinite_falls_back_to_the_direct_sum(impl, case):
    """Winograd adds inputs before multiplying: one +inf, or values whose products overflow, would
    give NaN where the direct sum (torch's semantics) gives +-inf. The native op then takes the
    direct path: the outputs and gradients have the reference's inf/NaN pattern and values."""
    conv_embed = module("temporal_conv_embed")

    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 8, 6, generator=g)
    w = torch.randn(5, 6, 3, generator=g)
    b = torch.randn(5, generator=g)
    if case == "overflow":
        x, w = x * 1e20, w * 1e20
    else:
        x[1, 4, 2] = float(case)
    xs, ws = [x.clone().requires_grad_() for _ in range(2)], [w.clone().requires_grad_() for _ in range(2)]
    got = conv_embed.run(xs[0], ws[0], b, impl)  # T=8, K=3: the Winograd path applies
    want = reference.temporal_conv_embed(xs[1], ws[1], b)
    assert not torch.isfinite(want).all()
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=0)
    dy = torch.ones_like(want)
    got.backward(dy)
    want.backward(dy)
    for a, r in ((xs[0].grad, xs[1].grad), (ws[0].grad, ws[1].grad)):
        assert torch.equal(torch.isnan(a), torch.isnan(r)) and torch.equal(torch.isinf(a), torch.isinf(r))


@needs_native
def test_native_gemm_argument_is_checked():
    x, w = torch.randn(1, 4, 3), torch.randn(2, 3, 3)
    with pytest.raises(RuntimeError, match="gemm must be 0"):
        torch.ops.cola_fast.temporal_conv_embed(x, w, None, 7)


# ------------------------------------------------------------------------------------------
# non-finite values and empty dimensions: one semantics, the reference's (torch's)
# ------------------------------------------------------------------------------------------
ALL_BACKENDS_HERE = [
    pytest.param("reference", "cpu"),
    pytest.param("native", "cpu", marks=needs_native),
    pytest.param("triton", "cpu", marks=needs_triton_cpu),
    pytest.param("native", "cuda", marks=[needs_cuda, pytest.mark.gpu]),
    pytest.param("triton", "cuda", marks=[needs_cuda, pytest.mark.gpu]),
]


def test_torch_relu_backward_passes_the_gradient_where_the_output_is_nan():
    """The measurement the backends follow: torch's relu backward (threshold_backward) zeroes
    the gradient where out <= 0 and passes it everywhere else, a NaN output included."""
    x = torch.tensor([float("nan"), 0.0, -1.0, 2.0, float("inf"), -float("inf")], requires_grad=True)
    torch.nn.functional.relu(x).backward(torch.full((6,), 3.0))
    assert x.grad.tolist() == [3.0, 0.0, 0.0, 3.0, 3.0, 0.0]


@pytest.mark.parametrize("backend,device", ALL_BACKENDS_HERE[1:])
def test_relu_backward_at_nan_outputs_matches_torch(backend, device):
    """A NaN bias makes a whole output channel NaN: torch passes dy through it, so db, dx and
    dW get finite contributions from that channel. Every backend must give the same values."""
    if device == "cpu" and backend == "triton" and HAS_CUDA:
        pytest.skip("Triton runs on the GPU here")
    dt = torch.float64 if not (backend == "triton" and device == "cpu") else torch.float32
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 4, generator=g, dtype=dt)
    w = torch.randn(3, 4, 3, generator=g, dtype=dt)
    b = torch.randn(3, generator=g, dtype=dt)
    b[1] = float("nan")
    dy = torch.randn(2, 6, 3, generator=g, dtype=dt)
    ins = [t.clone().to(device).requires_grad_() for t in (x, w, b)]
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    got = temporal_conv_embed(*ins, backend=backend)
    want = reference.temporal_conv_embed(*ref)
    assert torch.isnan(want[:, :, 1]).all()
    got.backward(dy.to(device))
    want.backward(dy)
    assert torch.isfinite(ref[2].grad).all()  # passed through the NaN channel:
    torch.testing.assert_close(ref[2].grad[1], dy[:, :, 1].sum())
    tol = dict(atol=1e-10, rtol=1e-8) if dt == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    for name, a, r in zip(("dx", "dweight", "dbias"), ins, ref):
        torch.testing.assert_close(a.grad.cpu(), r.grad, equal_nan=True, **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backend,device", ALL_BACKENDS_HERE)
@pytest.mark.parametrize("B,T,Cin,Cout,K,bias", [
    (2, 5, 0, 3, 3, True),    # Cin = 0: ReLU(bias) everywhere, db = the masked sum of dy
    (2, 5, 0, 3, 3, False),   # ... zeros without bias
    (2, 0, 4, 3, 3, True),    # T = 0 (torch's conv1d refuses it)
    (2, 5, 4, 0, 3, True),    # Cout = 0 (torch's conv1d refuses it)
    (0, 5, 4, 3, 5, True),    # B = 0
])
def test_empty_dimensions_behave_the_same_everywhere(backend, device, B, T, Cin, Cout, K, bias):
    if device == "cpu" and backend == "triton" and HAS_CUDA:
        pytest.skip("Triton runs on the GPU here")
    dt = torch.float32 if backend == "triton" else torch.float64
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, T, Cin, generator=g, dtype=dt)
    w = torch.randn(Cout, Cin, K, generator=g, dtype=dt)
    b = torch.linspace(-0.5, 1.0, Cout, dtype=dt) if bias else None  # channel 0 closed by the ReLU
    dy = torch.randn(B, T, Cout, generator=g, dtype=dt)
    ins = [t.clone().to(device).requires_grad_() for t in (x, w, b) if t is not None]
    y = temporal_conv_embed(ins[0], ins[1], ins[2] if bias else None, backend=backend)
    assert y.shape == (B, T, Cout) and y.dtype == dt
    want = torch.relu(b).expand(B, T, Cout) if bias else torch.zeros(B, T, Cout, dtype=dt)
    torch.testing.assert_close(y.cpu(), want)
    y.backward(dy.to(device))
    assert ins[0].grad.shape == x.shape and (ins[0].grad == 0).all()
    assert ins[1].grad.shape == w.shape and (ins[1].grad == 0).all()
    if bias:
        want_db = torch.where(want <= 0, 0.0, dy).sum(dim=(0, 1))
        assert B * T == 0 or Cout == 0 or (want_db != 0).any()  # the case checks something
        torch.testing.assert_close(ins[2].grad.cpu(), want_db)


@needs_triton_cpu
def test_triton_autotune_key_buckets_the_video_length(monkeypatch):
    """The Triton conv's autotuning is keyed on the channels, K and the power-of-2 bucket of
    B*T, not on T: test videos of every length (B=1, T from a few hundred to thousands) must
    not each start a new autotuning (compiling and timing every config) on the GPU."""
    from triton.runtime.autotuner import Autotuner

    from cola_fast.ops._triton import kernels_module

    kc = kernels_module("temporal_conv_embed")
    keys = []

    def record(self, *args, **kwargs):
        values = dict(zip(self.arg_names, args)) | kwargs
        keys.append((self.fn.__name__, tuple(values[k] for k in self.keys if k in values)))

    monkeypatch.setattr(Autotuner, "run", record)
    w = torch.zeros(8, 4, 3)
    for T in (600, 700, 1000):  # one bucket (1024)
        x = torch.zeros(1, T, 4)
        kc.forward(x, w, None)
        y = torch.ones(1, T, 8)
        kc.backward(y, y, x, w, (True, True, True))
    by_kernel = {}
    for name, key in keys:
        by_kernel.setdefault(name, set()).add(key)
    assert set(by_kernel) == {"_fwd_kernel", "_dx_kernel", "_dw_kernel"}
    assert all(len(k) == 1 for k in by_kernel.values()), by_kernel
    assert kc.rows_bucket(1025) == 2048 and kc.rows_bucket(1) == 1
    assert "PREC" in kc._KEY  # a config tuned for TF32 is not reused for IEEE fp32


@needs_triton_cpu
def test_triton_configs_that_need_too_much_shared_memory_are_pruned_before_compiling():
    import triton

    from cola_fast.ops._triton import kernels_module

    kc = kernels_module("temporal_conv_embed")
    cfg = (lambda bm, bn, bk, s: triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_stages=s))
    big, small = cfg(128, 256, 32, 3), cfg(64, 64, 32, 2)   # fp64: 288 KiB and 64 KiB
    h100 = 227 * 1024
    assert kc.prune_to_fit([big, small], 8, h100) == [small]
    assert kc.prune_to_fit([big, small], 4, h100) == [big, small]  # fp32: 144 KiB fits
    assert kc.prune_to_fit([big], 8, 1024) == [big]  # none fits: the smallest is kept
    for fn in (kc._fwd_kernel, kc._dx_kernel, kc._dw_kernel):
        assert fn.early_config_prune is kc._fits_shared_memory
