"""cola_fast.ops.mine_snippets: every backend returns exactly the reference's indices.

native = the C++ CPU kernel here (and the CUDA kernel when a GPU is present); triton runs under
the Triton interpreter on CPU (small shapes, it is slow) and on CUDA when present."""
import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

from cola_fast import reference as R  # noqa: E402
from cola_fast.ops import BackendUnavailable, mine_snippets  # noqa: E402
from cola_fast.ops._backend import native_has_kernel, triton_available  # noqa: E402

HAS_NATIVE = native_has_kernel("mine_snippets", "cpu")
HAS_CUDA = torch.cuda.is_available()
HAS_NATIVE_CUDA = HAS_CUDA and native_has_kernel("mine_snippets", "cuda")
needs_native = pytest.mark.skipif(not HAS_NATIVE, reason="cola_fast._C not built")
needs_triton_cpu = pytest.mark.skipif(not triton_available("cpu"),
                                      reason="triton interpreter not available")
needs_native_cuda = pytest.mark.skipif(not HAS_NATIVE_CUDA, reason="needs CUDA and the CUDA kernels")
needs_triton_cuda = pytest.mark.skipif(not (HAS_CUDA and triton_available("cuda")), reason="needs CUDA and triton")

NAMES = ("EA", "EB", "HA", "HB")


def _inputs(B, T, kind, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed * 1000 + T)
    if kind == "rand":
        a = torch.rand(B, T, generator=g, dtype=torch.float64)
    elif kind == "quantised":  # heavy ties
        a = torch.randint(0, 4, (B, T), generator=g).to(torch.float64) / 4
    elif kind == "equal":
        a = torch.full((B, T), 0.25, dtype=torch.float64)
    elif kind == "zeros":
        a = torch.zeros(B, T, dtype=torch.float64)
    elif kind == "signed":  # negatives, -0.0, +0.0
        a = torch.randint(-2, 3, (B, T), generator=g).to(torch.float64) / 2
        a[a == 0] = -0.0
        a[:, ::3] = torch.where(a[:, ::3] == 0, 0.0, a[:, ::3])
    elif kind == "bump":  # a single above-median run: bands hold fewer than k snippets
        a = torch.zeros(B, T, dtype=torch.float64)
        s, n = T // 3, min(max(T // 6, 1), T - T // 3)
        a[:, s:s + n] = torch.rand(B, n, generator=g, dtype=torch.float64) + 1
    elif kind == "rising":  # every element beats the ones before it (insertion top-k gives up)
        a = torch.arange(T, dtype=torch.float64).expand(B, T) / T
    elif kind == "clustered":  # two tight value clusters far apart (crowded sort buckets)
        a = torch.rand(B, T, generator=g, dtype=torch.float64)
        a = torch.where(a < 0.5, 1.0 + a * 1e-6, 1e-20 * (1 + a))
    else:
        raise ValueError(kind)
    keep = torch.rand(B, T, generator=g) < 0.4
    return a.to(dtype).to(device), keep.to(device)


def _check(a, keep, k_easy, k_hard, m=3, M=6, backend="native"):
    want = R.mine_snippets(a.cpu(), keep.cpu().to(a.dtype), k_easy, k_hard, m, M)
    got = mine_snippets(a, keep, k_easy, k_hard, m, M, backend=backend)
    for name, x, y in zip(NAMES, got, want):
        assert x.dtype == torch.int64 and x.shape == y.shape, (name, x.shape, y.shape)
        assert torch.equal(x.cpu(), y), (name, tuple(a.shape), a.dtype, k_easy, k_hard, m, M)


# ---------------------------------------------------------------------------------- native
@needs_native
@pytest.mark.parametrize("T", [1, 2, 5, 6, 7, 50, 750, 2613])
@pytest.mark.parametrize("kind", ["rand", "quantised", "equal", "zeros", "signed", "bump", "rising", "clustered"])
def test_native_matches_reference(T, kind):
    a, keep = _inputs(3, T, kind)
    for k_easy, k_hard in {(T // 5, T // 20), (1, 1), (T, T), (0, 0), (T // 2, T // 2)}:
        _check(a, keep, k_easy, k_hard)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("T", [7, 50, 750])
def test_native_dtypes(dtype, T):
    for kind in ("rand", "quantised", "signed"):
        a, keep = _inputs(4, T, kind, dtype=dtype, seed=1)
        _check(a, keep, T // 5, max(T // 20, 1))
        _check(a, keep, T, T)


@needs_native
@pytest.mark.parametrize("T", [50, 750])
def test_native_batch_512(T):
    a, keep = _inputs(512, T, "rand", seed=2)
    a[::7] = torch.round(a[::7] * 4) / 4  # some rows with ties
    _check(a, keep, T // 5, T // 20)
    _check(a, keep, 5, 6, m=3, M=6)


@needs_native
def test_native_windows_and_specials():
    a, keep = _inputs(4, 40, "rand", dtype=torch.float64, seed=3)
    for m, M in [(1, 2), (2, 3), (3, 6), (4, 9), (5, 40), (39, 41)]:
        _check(a, keep, 8, 8, m, M)
    # infinities, NaN, denormals, -0.0
    x = torch.tensor([[0.0, -0.0, float("inf"), 1e-45, -1e-45, 2.0, float("nan"), 3.0, -float("inf"), 0.5,
                       1e-40, 1e-45, 1.0, 1.0, 0.0, 2.0]])
    k = torch.tensor([[1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1]], dtype=torch.bool)
    for dtype in (torch.float32, torch.float64):
        for xx in (x, torch.nan_to_num(x, nan=5.0), torch.nan_to_num(x, nan=0.0, posinf=7.0, neginf=-7.0)):
            for kk in (k, torch.ones_like(k)):
                _check(xx.to(dtype), kk, 4, 3, 1, 3)
                _check(xx.to(dtype), kk, 16, 16)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T", [65, 750, 2613])
def test_native_long_rows_with_specials(dtype, T):
    """Long rows (the selection paths for T > 64: adaptive-range digits, candidate lists) with
    NaN, +-inf, +-0, denormals, huge and negative values mixed in, and many values of k."""
    g = torch.Generator().manual_seed(T)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-45, -1e-45, 1e30, -1e30,
                             1.0, 0.5], dtype=torch.float64)
    for trial in range(4):
        a = torch.rand(3, T, generator=g, dtype=torch.float64) * (2 if trial % 2 else 1) - (0.5 if trial > 1 else 0)
        pick = torch.rand(3, T, generator=g) < (0.02, 0.2, 0.5, 0.05)[trial]
        a[pick] = specials[torch.randint(0, len(specials), (int(pick.sum()),), generator=g)]
        keep = torch.rand(3, T, generator=g) < 0.4
        for k in (2, 9, 10, T // 20, T // 5, T // 2, T - 1):
            _check(a.to(dtype), keep, k, max(k // 3, 1))


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T", [65, 300, 750])
def test_native_positive_count_around_k(dtype, T):
    """The top-k first lists the keys above zero: rows with k-1, k and k+1 of them, rows where the
    zeros must fill the rest in index order, and rows where even the zeros are too few and
    negative values must be ranked; also rows whose values are distinct but crowded into one
    bucket, and rows spanning the whole float range (bucket widths would overflow)."""
    g = torch.Generator().manual_seed(7 * T)
    ones = torch.ones(1, T, dtype=torch.bool)
    for k in (9, 10, T // 5, T // 2):
        for p in (k - 1, k, k + 1, k // 2, 0):
            for n_zero in (T, k - p + 1, max(k - p - 3, 0)):  # zeros enough, just enough, too few
                a = -torch.rand(1, T, generator=g, dtype=torch.float64) - 0.25  # negatives
                perm = torch.randperm(T, generator=g)
                a[0, perm[:p]] = torch.rand(p, generator=g, dtype=torch.float64) + 0.1
                nz = min(n_zero, T - p)
                a[0, perm[p:p + nz]] = 0.0
                if k % 2:
                    a[0, perm[p:p + nz:2]] = -0.0
                _check(a.to(dtype), ones, k, max(k // 3, 1))
    base = 1.0 + torch.arange(T, dtype=torch.float64)[torch.randperm(T, generator=g)]
    eps = float(torch.finfo(dtype).eps)
    rows = [
        1.0 + eps * base,  # distinct values, a few ulps apart: crowded buckets
        torch.where(base % 2 == 0, 1.0 + eps * base, 1e-3 * base / T),  # one crowded cluster on top
        torch.where(base % 3 == 0, torch.full_like(base, 3e38 if dtype == torch.float32 else 1e308),
                    torch.where(base % 3 == 1, -(base / T), torch.full_like(base, -3e38 if dtype == torch.float32 else -1e308))),
        torch.where(base % 2 == 0, base / T, torch.full_like(base, 1e-45 if dtype == torch.float32 else 5e-324)),
        base * (1e-45 if dtype == torch.float32 else 5e-324),  # denormals only: bucket widths underflow
        -base * (1e-45 if dtype == torch.float32 else 5e-324),
    ]
    for row in rows:
        for keep in (ones, torch.rand(1, T, generator=g) < 0.4):
            for k in (9, 10, T // 5, T // 2, T):
                _check(row[None].to(dtype), keep, k, max(k // 3, 1))


@pytest.mark.parametrize("backend,device", [
    pytest.param("native", "cpu", marks=needs_native),
    pytest.param("native", "cuda", marks=[needs_native_cuda, pytest.mark.gpu]),
    pytest.param("triton", "cpu", marks=needs_triton_cpu),
    pytest.param("triton", "cuda", marks=[needs_triton_cuda, pytest.mark.gpu]),
])
@pytest.mark.parametrize("T", [1, 7, 50])
def test_windows_longer_than_the_row(T, backend, device):
    """Windows longer than 2T+2 behave as 2T+2 (the kernels clamp them: the CPU one so that its
    padding stays small for any m, M, the CUDA and Triton ones so that m, M fit in int32):
    checked against the reference around and past that length, and a huge M runs (the
    reference would allocate its padding) and equals the reference at 2T+2."""
    edge = -torch.rand(2, T) - 1  # above the median only at the very end (row 0) or start (row 1)
    edge[0, -2:] = torch.tensor([1.0, 2.0])[-T:]
    edge[1, :2] = torch.tensor([2.0, 1.0])[:T]
    interpreted = backend == "triton" and device == "cpu"  # slow (about 1 s a call at T=50): fewer cases
    kinds = ("rand", "bump", "quantised", "edge")
    for kind in (kinds[::3] if T < 50 else kinds[3:]) if interpreted else kinds:
        a, keep = _inputs(3, T, kind, seed=5) if kind != "edge" else (edge, torch.ones(2, T, dtype=torch.bool))
        a, keep = a.to(device), keep.to(device)
        windows = [(1, 2 * T + 1), (1, 2 * T + 2), (2, 2 * T + 3), (T + 1, 4 * T + 5), (2 * T + 3, 2 * T + 9)]
        for m, M in (windows[1::2] if T < 50 else windows[3:4]) if interpreted else windows:
            _check(a, keep, max(T // 5, 1), max(T // 4, 1), m, M, backend=backend)
        for m in (1, 2 * T + 1):
            want = R.mine_snippets(a.cpu(), keep.cpu().to(a.dtype), 1, max(T // 4, 1), m, 2 * T + 2)
            for M in (10 ** 12,) if interpreted else (10 ** 12, 2 ** 31 - 1, 2 ** 31):  # past int casts
                got = mine_snippets(a, keep, 1, max(T // 4, 1), m, M, backend=backend)
                for x, y in zip(got, want):
                    assert torch.equal(x.cpu(), y)


@needs_native
def test_native_keep_dtypes_and_noncontiguous():
    a, keep = _inputs(6, 50, "quantised", seed=4)
    for kp in (keep, keep.float(), keep.double(), keep.half(), keep.to(torch.uint8)):
        _check(a, kp, 10, 3)
    # non-contiguous actionness and keep (transposed views, strided slices)
    at_ = a.t().contiguous().t()
    kt = keep.t().contiguous().t()
    assert not at_.is_contiguous() and not kt.is_contiguous()
    _check(at_, kt, 10, 3)
    wide = torch.rand(6, 100)
    _check(wide[:, ::2], keep, 10, 3)
    # keep may be any 0/1 scaling (the published code multiplies by 2.5)
    _check(a, keep.float() * 2.5, 10, 3)


@needs_native
def test_native_opcheck():
    a, keep = _inputs(3, 37, "quantised", seed=5)
    torch.library.opcheck(torch.ops.cola_fast.mine_snippets.default, (a, keep.float(), 7, 2, 3, 6))
    a64, keep64 = _inputs(2, 9, "rand", dtype=torch.float64, seed=5)
    torch.library.opcheck(torch.ops.cola_fast.mine_snippets.default, (a64, keep64.double(), 9, 0, 1, 2))


@needs_native
def test_native_compile_and_auto():
    a, keep = _inputs(4, 60, "rand", seed=6)
    want = R.mine_snippets(a, keep.float(), 12, 3)

    def f(x, k):
        return mine_snippets(x * 1.0, k, 12, 3, backend="native")

    got = torch.compile(f, backend="eager", fullgraph=True)(a, keep.float())
    for x, y in zip(got, want):
        assert torch.equal(x, y)
    got = mine_snippets(a, keep, 12, 3)  # auto -> native on CPU
    for x, y in zip(got, want):
        assert torch.equal(x, y)


def test_requires_grad_input_and_reference_backend():
    a, keep = _inputs(2, 20, "rand", seed=7)
    a.requires_grad_(True)
    got = mine_snippets(a, keep, 4, 2, backend="reference")
    want = R.mine_snippets(a.detach(), keep.float(), 4, 2)
    for x, y in zip(got, want):
        assert torch.equal(x, y) and not x.requires_grad
    if HAS_NATIVE:
        for x, y in zip(mine_snippets(a, keep, 4, 2, backend="native"), want):
            assert torch.equal(x, y)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_bad_arguments(backend):
    if backend == "native" and not HAS_NATIVE:
        pytest.skip("cola_fast._C not built")
    a, keep = _inputs(2, 10, "rand")
    call = lambda *args, **kw: mine_snippets(*args, backend=backend, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="k_easy=11"):
        call(a, keep, 11, 1)
    with pytest.raises(ValueError, match="k_hard=-1"):
        call(a, keep, 1, -1)
    with pytest.raises(ValueError, match="m < M"):
        call(a, keep, 1, 1, 6, 6)
    with pytest.raises(ValueError, match="m < M"):
        call(a, keep, 1, 1, 0, 3)
    with pytest.raises(ValueError, match="2-D"):
        call(a[0], keep[0], 1, 1)
    with pytest.raises(TypeError, match="float tensor"):
        call(torch.ones(2, 10, dtype=torch.int64), keep, 1, 1)
    with pytest.raises(ValueError, match="shape"):
        call(a, keep[:, :5], 1, 1)
    with pytest.raises(ValueError, match="device"):
        call(a, keep.to("meta"), 1, 1)
    with pytest.raises(TypeError, match="k_easy must be an int"):
        call(a, keep, 1.5, 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        call(a.numpy(), keep, 1, 1)
    with pytest.raises(ValueError, match="T=0"):
        call(torch.ones(2, 0), torch.ones(2, 0), 0, 0)
    with pytest.raises(ValueError, match="unknown backend"):
        mine_snippets(a, keep, 1, 1, backend="nope")
    # keep in actionness's (non-float) dtype: on the native backend this reaches the C++ op
    # (the wrapper's fast path), whose error must come back as the same TypeError
    with pytest.raises(TypeError, match="float tensor"):
        call(torch.ones(2, 10, dtype=torch.int64), torch.ones(2, 10, dtype=torch.int64), 1, 1)


@needs_native
def test_native_fast_path_skips_python_checks_but_not_their_errors(monkeypatch):
    """A valid call on the native backend goes straight to the C++ op; _validate runs only
    after the op has refused its input, so that the user still gets _validate's clear error."""
    from cola_fast.ops import module
    mining = module("mine_snippets")

    a, keep = _inputs(3, 20, "rand")
    keep = keep.float()  # _inputs gives a bool mask
    want = R.mine_snippets(a, keep, 4, 2)
    calls = []
    real = mining._validate
    monkeypatch.setattr(mining, "_validate", lambda *args: calls.append(args) or real(*args))
    for x, y in zip(mine_snippets(a, keep, 4, 2, backend="native"), want):
        assert torch.equal(x, y)
    assert calls == []
    with pytest.raises(ValueError, match="k_easy=21"):
        mine_snippets(a, keep, 21, 2, backend="native")
    assert len(calls) == 1
    # what the fast path leaves to the full path: keep in another dtype, a grad-requiring input
    for a2, k2 in [(a, keep.bool()), (a.clone().requires_grad_(), keep)]:
        for x, y in zip(mine_snippets(a2, k2, 4, 2, backend="native"), want):
            assert torch.equal(x, y)
    assert len(calls) == 3


def test_default_backend_follows_the_environment(monkeypatch):
    """backend=None reads $COLA_FAST_BACKEND at every call, changes at run time included."""
    a, keep = _inputs(2, 10, "rand")
    monkeypatch.setenv("COLA_FAST_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        mine_snippets(a, keep, 1, 1)
    monkeypatch.setenv("COLA_FAST_BACKEND", "reference")
    for x, y in zip(mine_snippets(a, keep, 1, 1), R.mine_snippets(a, keep, 1, 1)):
        assert torch.equal(x, y)
    monkeypatch.delenv("COLA_FAST_BACKEND")
    from cola_fast.ops._backend import default_backend
    assert default_backend() == "auto"


@needs_native
def test_native_op_checks_directly():
    a, keep = _inputs(2, 10, "rand")
    with pytest.raises(RuntimeError, match="k_easy"):
        torch.ops.cola_fast.mine_snippets(a, keep.float(), 11, 1, 3, 6)
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.cola_fast.mine_snippets(a, keep.double(), 1, 1, 3, 6)
    with pytest.raises(RuntimeError, match="m < M"):
        torch.ops.cola_fast.mine_snippets(a, keep.float(), 1, 1, 3, 3)


def test_empty_batch():
    a = torch.rand(0, 12)
    for backend in ["reference"] + (["native"] if HAS_NATIVE else []):
        out = mine_snippets(a, torch.ones(0, 12), 3, 2, backend=backend)
        assert [tuple(o.shape) for o in out] == [(0, 3), (0, 3), (0, 2), (0, 2)]


# ---------------------------------------------------------------------------------- triton (interpreter)
@needs_triton_cpu
@pytest.mark.parametrize("T,kind,dtype", [
    (1, "rand", torch.float32),
    (6, "quantised", torch.float32),
    (7, "signed", torch.float32),
    (23, "quantised", torch.float16),
    (50, "rand", torch.float32),
    (50, "bump", torch.float32),
])
def test_triton_interpreter_matches_reference(T, kind, dtype):
    a, keep = _inputs(2, T, kind, dtype=dtype, seed=8)
    _check(a, keep, max(T // 5, 1), max(T // 20, 1), backend="triton")
    if T <= 7:
        _check(a, keep, T, T, backend="triton")


@needs_triton_cpu
def test_triton_refuses_clearly():
    with pytest.raises(TypeError, match="float64"):
        mine_snippets(torch.rand(1, 5, dtype=torch.float64), torch.ones(1, 5), 1, 1, backend="triton")
    with pytest.raises(ValueError, match="MAX_T"):
        mine_snippets(torch.rand(1, 2049), torch.ones(1, 2049), 1, 1, backend="triton")
    from cola_fast.ops import module
    mining = module("mine_snippets")
    from cola_fast.ops._triton import kernels_module

    assert mining.TRITON_MAX_T == kernels_module("mine_snippets").MAX_T == 2048


def test_auto_offers_triton_only_up_to_its_max_t(monkeypatch):
    """Long rows go to the native kernel: at T > TRITON_MAX_T auto does not time Triton."""
    from cola_fast.ops import module
    mining = module("mine_snippets")

    monkeypatch.setattr(mining, "candidates", lambda device: ["reference", "native", "triton"])
    short = mining._tuning("indices", torch.device("cuda"), torch.float32, (16, 750, 150, 37, 3, 6), "none")
    long = mining._tuning("indices", torch.device("cuda"), torch.float32, (4, 2613, 522, 130, 3, 6), "none")
    assert "triton" in short.candidates and "triton" not in long.candidates


@needs_triton_cpu
def test_triton_opcheck():
    a, keep = _inputs(1, 5, "quantised", seed=9)
    torch.library.opcheck(torch.ops.cola_fast_triton.mine_snippets.default, (a, keep.float(), 2, 1, 3, 6),
                          test_utils=("test_schema", "test_faketensor"))


def test_triton_backend_unavailable_message():
    if triton_available("cpu"):
        pytest.skip("triton interpreter is available here")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET"):
        mine_snippets(torch.rand(1, 5), torch.ones(1, 5), 1, 1, backend="triton")


# ---------------------------------------------------------------------------------- CUDA
CUDA_CASES = [(1, 1), (3, 2), (5, 6), (7, 50), (512, 50), (16, 750), (4, 2613), (512, 5000), (2, 9000)]


@pytest.mark.gpu
@needs_native_cuda
@pytest.mark.parametrize("B,T", CUDA_CASES)
@pytest.mark.parametrize("kind", ["rand", "quantised", "zeros", "signed", "bump"])
def test_native_cuda_matches_reference(B, T, kind):
    a, keep = _inputs(B, T, kind, device="cuda")
    for k_easy, k_hard in {(T // 5, T // 20), (1, 1), (T, T)}:
        _check(a, keep, k_easy, k_hard)


@pytest.mark.gpu
@needs_native_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,T", [(3, 7), (16, 750), (8, 5000)])
def test_native_cuda_dtypes(dtype, B, T):
    for kind in ("rand", "quantised", "signed"):
        a, keep = _inputs(B, T, kind, dtype=dtype, seed=10, device="cuda")
        _check(a, keep, T // 5, max(T // 20, 1))


@pytest.mark.gpu
@needs_native_cuda
def test_native_cuda_specials_and_opcheck():
    x = torch.tensor([[0.0, -0.0, float("inf"), 1e-45, -1e-45, 2.0, float("nan"), 3.0, -float("inf"), 0.5,
                       1e-40, 1e-45, 1.0, 1.0, 0.0, 2.0]])
    k = torch.tensor([[1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1]], dtype=torch.bool)
    for dtype in (torch.float32, torch.float64):
        for xx in (x, torch.nan_to_num(x, nan=5.0)):
            _check(xx.to(dtype).cuda(), k.cuda(), 4, 3, 1, 3)
            _check(xx.to(dtype).cuda(), k.cuda(), 16, 16)
    a, keep = _inputs(3, 37, "quantised", device="cuda")
    torch.library.opcheck(torch.ops.cola_fast.mine_snippets.default, (a, keep.float(), 7, 2, 3, 6))
    with pytest.raises(ValueError, match="device"):
        mine_snippets(a, keep.cpu(), 1, 1)


@pytest.mark.gpu
@needs_triton_cuda
@pytest.mark.parametrize("B,T", [(1, 1), (3, 2), (5, 6), (7, 50), (512, 50), (16, 750), (4, 2048)])
@pytest.mark.parametrize("kind", ["rand", "quantised", "signed", "bump"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_cuda_matches_reference(B, T, kind, dtype):
    a, keep = _inputs(B, T, kind, dtype=dtype, device="cuda")
    for k_easy, k_hard in {(T // 5, T // 20), (1, 1), (T, T)}:
        _check(a, keep, k_easy, k_hard, backend="triton")
