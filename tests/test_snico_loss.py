"""cola_fast.ops.snico_loss (native C++/CUDA and Triton) against cola_fast.reference.snico_loss:
loss and d(emb), awkward shapes, gradcheck, opcheck, zero / NaN rows, argument errors."""
import os

import torch

if not torch.cuda.is_available():  # Triton runs CPU tensors only under its interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from cola_fast import reference  # noqa: E402
from cola_fast.ops import snico_loss  # noqa: E402
from cola_fast.ops._backend import native_has_kernel, triton_available  # noqa: E402

HAS_NATIVE_CPU = native_has_kernel("snico_loss_fwd", "cpu")
HAS_CUDA = torch.cuda.is_available()
needs_native = pytest.mark.skipif(not HAS_NATIVE_CPU, reason="cola_fast._C not built")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


def make(B, T, D, kE, kH, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(B, T, D, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    idx = [torch.randint(0, T, (B, k), generator=g).to(device) for k in (kE, kE, kH, kH)]
    return emb, idx


def loss_and_grad(fn, emb, idx, upstream=1.3, **kw):
    e = emb.detach().clone().requires_grad_(True)
    loss = fn(e, *idx, **kw)
    (g,) = torch.autograd.grad(loss * upstream, e)
    return loss.detach(), g


def ref(e, ea, eb, ha, hb, tau=0.07):
    return reference.snico_loss(e, ea, eb, ha, hb, tau)


def fast(backend):
    def f(e, ea, eb, ha, hb, tau=0.07):
        return snico_loss(e, ea, eb, ha, hb, tau=tau, backend=backend)
    return f


SHAPES = [
    # B, T, D, k_easy, k_hard
    (1, 12, 16, 4, 2),      # B = 1
    (3, 20, 37, 5, 1),      # k_hard = 1, D not a multiple of 16 lanes
    (2, 9, 300, 1, 1),      # k = 1 everywhere; D not a multiple of the 256-channel block
    (2, 4, 33, 7, 6),       # T < k: indices repeat
    (4, 60, 600, 12, 3),
]


@needs_native
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_cpu_matches_reference(shape, dtype):
    emb, idx = make(*shape, dtype=dtype, seed=sum(shape))
    l_ref, g_ref = loss_and_grad(ref, emb, idx)
    l_nat, g_nat = loss_and_grad(fast("native"), emb, idx)
    assert l_nat.dtype == dtype and g_nat.dtype == dtype and g_nat.shape == emb.shape
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(l_nat, l_ref, **tol)
    torch.testing.assert_close(g_nat, g_ref, **tol)


@needs_native
@pytest.mark.parametrize("tau", [0.07, 1.0])
def test_native_overlapping_and_repeated_sets(tau):
    B, T, D = 2, 6, 24
    emb, _ = make(B, T, D, 1, 1, seed=5)
    ea = torch.tensor([[0, 0, 1, 2], [5, 5, 5, 5]])
    eb = torch.tensor([[2, 3, 3, 0], [5, 4, 4, 1]])   # overlaps ea
    ha = torch.tensor([[0, 0], [5, 5]])               # same rows as ea
    hb = torch.tensor([[3, 3], [1, 4]])
    idx = [ea, eb, ha, hb]
    l_ref, g_ref = loss_and_grad(lambda *a: ref(*a, tau=tau), emb, idx)
    l_nat, g_nat = loss_and_grad(lambda *a: fast("native")(*a, tau=tau), emb, idx)
    torch.testing.assert_close(l_nat, l_ref, rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(g_nat, g_ref, rtol=1e-11, atol=1e-13)
    # rows in no index set get exactly zero gradient
    assert g_nat[0, 4:].abs().max() == 0 and g_nat[1, :1].abs().max() == 0


@needs_native
def test_native_non_contiguous_emb():
    emb, idx = make(3, 10, 40, 4, 2, seed=11)
    emb_t = emb.transpose(0, 1).contiguous().transpose(0, 1)   # same values, strided
    assert not emb_t.is_contiguous()
    l_ref, g_ref = loss_and_grad(ref, emb, idx)
    l_nat, g_nat = loss_and_grad(fast("native"), emb_t, idx)
    torch.testing.assert_close(l_nat, l_ref, rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(g_nat, g_ref, rtol=1e-11, atol=1e-13)


@needs_native
def test_native_gradcheck_float64():
    emb, idx = make(2, 7, 9, 3, 2, seed=2)
    idx[0][0, 1] = idx[0][0, 0]  # a repeat inside a set
    e = emb.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: snico_loss(x, *idx, tau=0.3, backend="native"), (e,),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_native
def test_opcheck_native():
    emb, idx = make(2, 8, 20, 3, 2, seed=4)
    samples = [
        (emb.clone().requires_grad_(True), *idx, 0.07),
        (emb.float().clone().requires_grad_(True), *idx, 0.5),
        (emb.float(), *idx, 0.07),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.cola_fast.snico_loss_fwd.default, args)
    fwd = torch.ops.cola_fast.snico_loss_fwd(emb, *idx, 0.07)
    grad = torch.tensor(1.5, dtype=emb.dtype)
    torch.library.opcheck(torch.ops.cola_fast.snico_loss_bwd.default, (grad, emb, *idx, *fwd[1:], 0.07))


@needs_native
def test_native_compiles_with_torch_compile_fullgraph():
    emb, idx = make(2, 8, 20, 3, 2, seed=6)
    # the op itself (fake kernel + autograd) under fullgraph compile; backend resolution
    # (cola_fast.ops._backend.resolve) happens outside the graph
    f = torch.compile(lambda e: torch.ops.cola_fast.snico_loss_fwd(e, *idx, 0.07)[0], backend="aot_eager",
                      fullgraph=True)
    l_c, g_c = loss_and_grad(lambda e, *a: f(e), emb, idx)
    l_r, g_r = loss_and_grad(ref, emb, idx)
    torch.testing.assert_close(l_c, l_r, rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(g_c, g_r, rtol=1e-11, atol=1e-13)


@needs_native
def test_native_zero_row_and_zero_mean_follow_eps_rule():
    B, T, D = 2, 6, 10
    emb, _ = make(B, T, D, 1, 1, seed=8)
    emb[0, 2] = 0          # a zero negative row (term 1 negatives are EB)
    emb[1, 3] = 0          # HA of video 1 only holds row 3: the query mean is zero
    ea = torch.tensor([[0, 1], [0, 1]])
    eb = torch.tensor([[2, 4], [2, 4]])
    ha = torch.tensor([[5], [3]])
    hb = torch.tensor([[1], [5]])
    idx = [ea, eb, ha, hb]
    l_ref, g_ref = loss_and_grad(ref, emb, idx)
    l_nat, g_nat = loss_and_grad(fast("native"), emb, idx)
    assert torch.isfinite(l_nat)
    torch.testing.assert_close(l_nat, l_ref, rtol=1e-11, atol=1e-13)
    # the gradient at a zero vector is dy / eps (huge), as in F.normalize
    assert g_ref.abs().max() > 1e9
    torch.testing.assert_close(g_nat, g_ref, rtol=1e-9, atol=1e-6)


@needs_native
def test_native_nan_propagates_like_reference():
    B, T, D = 2, 6, 10
    emb, idx = make(B, T, D, 2, 1, seed=9)
    idx[0][0, 0] = 1
    emb[0, 1, 3] = float("nan")   # used by video 0 only
    l_ref, g_ref = loss_and_grad(ref, emb, idx)
    l_nat, g_nat = loss_and_grad(fast("native"), emb, idx)
    assert torch.isnan(l_ref) and torch.isnan(l_nat)
    assert torch.equal(torch.isnan(g_nat), torch.isnan(g_ref))
    # video 1 is untouched by the NaN
    torch.testing.assert_close(g_nat[1], g_ref[1], rtol=1e-11, atol=1e-13)


def _lowp_check(backend, dtype, device, shape=(3, 40, 96, 8, 3), seed=21):
    """Flash-attention rule: the error of the low-precision op against the fp32 reference is
    at most twice PyTorch's own error in that dtype (plus a small absolute floor)."""
    emb, idx = make(*shape, dtype=torch.float32, device=device, seed=seed)
    l32, g32 = loss_and_grad(ref, emb, idx)
    l_pt, g_pt = loss_and_grad(ref, emb.to(dtype), idx)
    l_k, g_k = loss_and_grad(fast(backend), emb.to(dtype), idx)
    assert l_k.dtype == dtype and g_k.dtype == dtype
    err_pt = (l_pt.float() - l32).abs().item()
    err_k = (l_k.float() - l32).abs().item()
    assert err_k <= 2 * err_pt + 1e-3 * abs(l32.item()) + 1e-3, (err_k, err_pt)
    gerr_pt = (g_pt.float() - g32).abs().max().item()
    gerr_k = (g_k.float() - g32).abs().max().item()
    assert gerr_k <= 2 * gerr_pt + 1e-3 * g32.abs().max().item(), (gerr_k, gerr_pt)


@needs_native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_native_cpu_low_precision(dtype):
    _lowp_check("native", dtype, "cpu")


BAD = [
    (lambda e, i: (e[0], *i), ValueError, "must be \\(B,T,D\\)"),
    (lambda e, i: (e.long(), *i), TypeError, "floating point"),
    (lambda e, i: (e, i[0].int(), *i[1:]), TypeError, "int64"),
    (lambda e, i: (e, i[0][:1], *i[1:]), ValueError, "ea must be \\(B=2"),
    (lambda e, i: (e, i[0], i[1][:, :2], *i[2:]), ValueError, "ea and eb must have the same shape"),
    (lambda e, i: (e, *i[:3], i[3][:, :1]), ValueError, "ha and hb must have the same shape"),
    (lambda e, i: (e, i[0][:, :0], i[1][:, :0], *i[2:]), ValueError, "k>0"),
    (lambda e, i: (e, i[0] + 100, *i[1:]), ValueError, "outside \\[0, T=8\\)"),
    (lambda e, i: (e, *i[:3], i[3] - 100), ValueError, "hb holds indices"),
]


@pytest.mark.parametrize("backend", ["reference", pytest.param("native", marks=needs_native)])
@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_arguments(backend, case):
    emb, idx = make(2, 8, 6, 3, 2)
    build, exc, msg = BAD[case]
    with pytest.raises(exc, match=msg):
        snico_loss(*build(emb, idx), backend=backend)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau(tau):
    emb, idx = make(2, 8, 6, 3, 2)
    with pytest.raises(ValueError, match="tau"):
        snico_loss(emb, *idx, tau=tau)


def test_bad_backend_and_device_mismatch():
    emb, idx = make(2, 8, 6, 3, 2)
    with pytest.raises(ValueError, match="unknown backend"):
        snico_loss(emb, *idx, backend="fortran")
    with pytest.raises(ValueError, match="device|on meta"):
        snico_loss(emb, idx[0].to("meta"), *idx[1:])


@needs_native
def test_native_op_checks_itself():
    # the C++ op validates too when called directly, bypassing the Python wrapper
    emb, idx = make(2, 8, 6, 3, 2)
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.cola_fast.snico_loss_fwd(emb, idx[0] + 8, *idx[1:], 0.07)
    with pytest.raises(RuntimeError, match="tau"):
        torch.ops.cola_fast.snico_loss_fwd(emb, *idx, -0.1)


@needs_native
def test_auto_has_native_among_its_cpu_candidates():
    """auto chooses by measurement (tests/test_autotune.py); the native kernel is one of its choices."""
    from cola_fast.ops import module, resolve
    snico = module("snico_loss")
    assert resolve("auto", torch.device("cpu"), "snico_loss_fwd") == "auto"
    assert snico.candidates(torch.device("cpu")) == ["reference", "native"]


# ---- Triton: CPU under the interpreter, or CUDA ------------------------------------------
TRITON_DEV = "cuda" if HAS_CUDA else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(TRITON_DEV),
                                  reason="triton missing (or not interpreting on CPU)")


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("shape", [(1, 6, 16, 3, 1), (2, 4, 37, 5, 2), (2, 9, 70, 1, 1), (2, 5, 200, 3, 2),
                                   (2, 40, 50, 35, 17)])  # index sets of several K_TILE tiles
def test_triton_matches_reference(shape):
    emb, idx = make(*shape, dtype=torch.float32, device=TRITON_DEV, seed=sum(shape))
    l_ref, g_ref = loss_and_grad(ref, emb, idx)
    l_tr, g_tr = loss_and_grad(fast("triton"), emb, idx)
    torch.testing.assert_close(l_tr, l_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_tr, g_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@needs_triton
def test_triton_repeated_indices_and_opcheck():
    emb, _ = make(2, 6, 24, 1, 1, dtype=torch.float32, device=TRITON_DEV, seed=5)
    idx = [torch.tensor(x, device=TRITON_DEV) for x in
           ([[0, 0, 1, 2], [5, 5, 5, 5]], [[2, 3, 3, 0], [5, 4, 4, 1]], [[0, 0], [5, 5]], [[3, 3], [1, 4]])]
    l_ref, g_ref = loss_and_grad(ref, emb, idx)
    l_tr, g_tr = loss_and_grad(fast("triton"), emb, idx)
    torch.testing.assert_close(l_tr, l_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_tr, g_ref, rtol=1e-5, atol=1e-6)
    from cola_fast.ops import module
    _triton = module("snico_loss")._triton
    fwd, _ = _triton()
    torch.library.opcheck(fwd, (emb.clone().requires_grad_(True), *idx, 0.07),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.gpu
@needs_triton
def test_triton_zero_row():
    emb, _ = make(1, 5, 8, 1, 1, dtype=torch.float32, device=TRITON_DEV, seed=1)
    emb[0, 2] = 0
    idx = [torch.tensor([[0, 1]]), torch.tensor([[2, 3]]), torch.tensor([[4]]), torch.tensor([[1]])]
    idx = [i.to(TRITON_DEV) for i in idx]
    l_ref, g_ref = loss_and_grad(ref, emb, idx)
    l_tr, g_tr = loss_and_grad(fast("triton"), emb, idx)
    torch.testing.assert_close(l_tr, l_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_tr, g_ref, rtol=1e-5, atol=1e-6)


# ---- CUDA ----------------------------------------------------------------------------------
needs_native_cuda = pytest.mark.skipif(not (HAS_CUDA and native_has_kernel("snico_loss_fwd", "cuda")),
                                       reason="needs a CUDA device and the CUDA kernels")


@pytest.mark.gpu
@needs_native_cuda
@pytest.mark.parametrize("shape", SHAPES + [(16, 750, 2048, 150, 37), (64, 50, 2048, 5, 6)])
def test_native_cuda_matches_reference(shape):
    emb, idx = make(*shape, dtype=torch.float32, device="cuda", seed=sum(shape))
    l_ref, g_ref = loss_and_grad(ref, emb.double(), idx)
    l_nat, g_nat = loss_and_grad(fast("native"), emb, idx)
    torch.testing.assert_close(l_nat.double(), l_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_nat.double(), g_ref, rtol=1e-4, atol=1e-5 * g_ref.abs().max().item())


@pytest.mark.gpu
@needs_native_cuda
def test_native_cuda_saved_tensors_and_backward_match_cpu_op():
    # stage by stage against the tested CPU op: forward outputs, then the backward fed the same
    # saved tensors (localises a CUDA bug to a kernel)
    emb, idx = make(3, 30, 300, 7, 3, dtype=torch.float64, seed=13)
    cpu = torch.ops.cola_fast.snico_loss_fwd(emb, *idx, 0.07)
    gpu = torch.ops.cola_fast.snico_loss_fwd(emb.cuda(), *[i.cuda() for i in idx], 0.07)
    for name, c, g in zip(("loss", "means", "mean_norms", "neg_norms", "logits", "lse"), cpu, gpu):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-9, atol=1e-12, msg=name)
    grad = torch.tensor(0.7, dtype=torch.float64)
    d_cpu = torch.ops.cola_fast.snico_loss_bwd(grad, emb, *idx, *cpu[1:], 0.07)
    d_gpu = torch.ops.cola_fast.snico_loss_bwd(grad.cuda(), emb.cuda(), *[i.cuda() for i in idx],
                                               *[c.cuda() for c in cpu[1:]], 0.07)
    torch.testing.assert_close(d_gpu.cpu(), d_cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
@needs_native_cuda
def test_native_cuda_zero_row_and_repeats():
    emb, _ = make(2, 6, 40, 1, 1, dtype=torch.float32, device="cuda", seed=8)
    emb[0, 2] = 0
    idx = [torch.tensor(x, device="cuda") for x in
           ([[0, 0, 1], [5, 5, 5]], [[2, 3, 3], [4, 4, 1]], [[0, 0], [5, 5]], [[3, 3], [1, 4]])]
    l_ref, g_ref = loss_and_grad(ref, emb, idx)
    l_nat, g_nat = loss_and_grad(fast("native"), emb, idx)
    torch.testing.assert_close(l_nat, l_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_nat, g_ref, rtol=1e-4, atol=1e-5 * g_ref.abs().max().item())


@pytest.mark.gpu
@needs_native_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_native_cuda_low_precision(dtype):
    _lowp_check("native", dtype, "cuda", shape=(8, 200, 512, 40, 10))


@pytest.mark.gpu
@needs_native_cuda
def test_opcheck_native_cuda():
    emb, idx = make(2, 8, 20, 3, 2, dtype=torch.float32, device="cuda", seed=4)
    torch.library.opcheck(torch.ops.cola_fast.snico_loss_fwd.default,
                          (emb.clone().requires_grad_(True), *idx, 0.07))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_cuda_low_precision(dtype):
    _lowp_check("triton", dtype, "cuda", shape=(8, 200, 512, 40, 10))


# ---- non-finite values, overflow and empty batches: one semantics, the reference's ----------
ALL_BACKENDS = [
    pytest.param("reference", "cpu"),
    pytest.param("native", "cpu", marks=needs_native),
    pytest.param("triton", TRITON_DEV, marks=[needs_triton, pytest.mark.gpu]),
    pytest.param("native", "cuda", marks=[needs_native_cuda, pytest.mark.gpu]),
]


@pytest.mark.parametrize("backend,device", ALL_BACKENDS)
@pytest.mark.parametrize("scale", [1e20, 1e30])
def test_large_embeddings_normalise_without_overflow(backend, device, scale):
    """float32 embeddings of scale 1e20 and beyond: their squares overflow, but the loss is
    scale-free (every vector is normalised) and the gradient scales by 1/scale. Every backend,
    the reference included, must give the float64 result of the unscaled embeddings."""
    emb, idx = make(2, 30, 40, 20, 5, dtype=torch.float64, seed=11)
    want_l, want_g = loss_and_grad(ref, emb, idx)
    big = (emb * scale).to(torch.float32).to(device)
    l, g = loss_and_grad(fast(backend), big, [i.to(device) for i in idx])
    assert torch.isfinite(l) and torch.isfinite(g).all()
    torch.testing.assert_close(l.double().cpu(), want_l, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(g.double().cpu() * scale, want_g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend,device", ALL_BACKENDS)
def test_empty_batch_is_refused_the_same_everywhere(backend, device):
    emb = torch.zeros(0, 5, 8, device=device)
    idx = [torch.zeros(0, k, dtype=torch.int64, device=device) for k in (2, 2, 1, 1)]
    with pytest.raises(ValueError, match="emb is empty"):
        snico_loss(emb, *idx, backend=backend)


@pytest.mark.gpu
@needs_triton
def test_triton_wrapper_checks_indices_and_empty_batches_itself():
    """On CUDA the op's own range check is skipped (a host sync), so the Triton kernels check,
    without one: they count bad indices into a device flag (read by raise_index_errors, at
    once on a CPU tensor) and clamp them, so that the scatter's atomics stay inside the video."""
    from cola_fast.ops._triton import kernels_module

    km = kernels_module("snico_loss")
    emb, idx = make(2, 6, 8, 3, 2, dtype=torch.float32, device=TRITON_DEV)
    for bad in (6, -1):
        for i in range(4):
            wrong = [t.clone() for t in idx]
            wrong[i][1, 0] = bad
            with pytest.raises(ValueError, match=r"1 indices outside \[0, T=6\)"):
                km.snico_fwd(emb, *wrong, 0.07)  # raises here on a CPU tensor
                km.raise_index_errors(emb.device)  # on CUDA: at the caller's sync
    km.snico_fwd(emb, *idx, 0.07)
    km.raise_index_errors(emb.device)  # the count was cleared: nothing to report
    with pytest.raises(ValueError, match="emb is empty"):
        km.snico_fwd(emb[:0], *[t[:0] for t in idx], 0.07)


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_CUDA and triton_available("cuda")), reason="needs CUDA and triton")
def test_triton_cuda_bad_indices_no_sync_clamped_then_reported():
    """On CUDA the Triton op neither syncs nor raises at the call: a bad index is clamped (the
    forward and backward run and stay finite), and check_index_errors() reports it."""
    from cola_fast.ops import module
    check_index_errors = module("snico_loss").check_index_errors

    emb, idx = make(2, 6, 8, 3, 2, dtype=torch.float32, device="cuda")
    emb.requires_grad_(True)
    snico_loss(emb, *idx, backend="triton").backward()
    check_index_errors()
    wrong = [t.clone() for t in idx]
    wrong[1][0, 1] = 1000
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = snico_loss(emb, *wrong, backend="triton")
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()
    with pytest.raises(ValueError, match=r"1 indices outside \[0, T=6\)"):
        check_index_errors()
    check_index_errors()  # cleared

