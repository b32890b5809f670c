"""Compile every Triton kernel of cola_fast for an NVIDIA GPU (sm_90 by default), on a machine
without one: the Triton interpreter that runs the kernels on the CPU in the tests skips the GPU
compiler's checks (e.g. a non-constexpr global read inside a kernel compiles under the
interpreter and fails on every GPU).

The real wrappers (kernels/*.py) are called on small CPU tensors with the launches intercepted;
each launch's arguments give the signature that triton.compile gets, with one autotune config
per kernel (the autotuner skips configs that do not fit, so those are not errors) and, for
float32 convolutions, both the "ieee" and the "tf32" dot precision.

It also checks, without compiling, that the launch grids stay within a GPU's limits (x < 2**31,
y and z <= 65535) at extreme shapes, which the interpreter does not enforce either.

    python tests/triton_gpu_compile.py [--arch 80 90]   # one line per kernel and arch; exit 1 on failure

Run by tests/test_build.py in a subprocess: TRITON_INTERPRET must be unset when triton is imported.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from functools import partial

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float64: "*fp64",
        torch.int64: "*i64", torch.int32: "*i32", torch.uint8: "*u8", torch.bool: "*i1"}


def _scalar_type(v) -> str:
    if isinstance(v, bool):
        return "i1"
    if isinstance(v, int):
        return "i32" if -(2 ** 31) <= v < 2 ** 31 else "i64"
    if isinstance(v, float):
        return "fp32"
    raise TypeError(f"unsupported kernel argument {v!r}")


def capture(call) -> list:
    """The launches (JITFunction, {arg: value}, launch options, grid) that call() makes."""
    launches = []

    def grid_of(grid, values):
        g = tuple(grid(values) if callable(grid) else grid)
        return g + (1,) * (3 - len(g))

    def jit_run(self, *args, grid, warmup=False, **kwargs):
        values = dict(zip(self.arg_names, args)) | kwargs
        opts = {k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs}  # as the launch asks
        launches.append((self, values, opts, grid_of(grid, values)))

    def tuned_run(self, *args, grid, **kwargs):
        cfg = self.configs[0]
        opts = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
        values = dict(zip(self.fn.arg_names, args)) | kwargs | cfg.kwargs
        launches.append((self.fn, values, opts, grid_of(grid, values)))

    saved = JITFunction.run, Autotuner.run
    JITFunction.run, Autotuner.run = jit_run, tuned_run
    try:
        call()
    finally:
        JITFunction.run, Autotuner.run = saved
    return launches


def compile_launch(fn, values: dict, opts: dict, target) -> None:
    constexpr = {p.name for p in fn.params if p.is_constexpr}
    signature, constants = {}, {}
    for name in fn.arg_names:
        v = values[name]
        if name in constexpr:
            signature[name] = "constexpr"
            constants[name] = v
        elif isinstance(v, torch.Tensor):
            signature[name] = _PTR[v.dtype]
        else:
            signature[name] = _scalar_type(v)
    triton.compile(ASTSource(fn, signature=signature, constexprs=constants), target=target, options=opts)


def grid_cases():
    """(label, call) pairs at the largest shapes the wrappers accept along some axis: their
    launch grids must stay within a GPU's limits (x < 2**31, y and z <= 65535); nothing is
    compiled for them."""
    from kernels import mine_snippets as km
    from kernels import snico_loss as ks

    a = torch.zeros(70000, 16)  # many videos: one program each
    yield "mine_snippets B=70000", partial(km.mine_snippets, a, a, 3, 3, 3, 6)
    T, kE = 140000, 34000  # 2 + 2 k_easy programs per video for the dots
    emb = torch.zeros(1, T, 1)
    ea, ha = torch.zeros(1, kE, dtype=torch.int64), torch.zeros(1, 8, dtype=torch.int64)
    yield f"snico_loss fwd k_easy={kE}", partial(ks.snico_fwd, emb, ea, ea, ha, ha, 0.07)
    B = 70000  # more videos than a grid's y axis holds: B must stay on the x axis
    emb = torch.zeros(B, 4, 1)
    ea, ha = torch.zeros(B, 2, dtype=torch.int64), torch.zeros(B, 1, dtype=torch.int64)
    yield f"snico_loss fwd B={B}", partial(ks.snico_fwd, emb, ea, ea, ha, ha, 0.07)
    saved = (torch.empty(B, 4, 1), torch.empty(B, 4), torch.empty(B, 2, 2), torch.empty(B, 2, 3), torch.empty(B, 2))
    yield f"snico_loss bwd B={B}", partial(ks.snico_bwd, torch.ones(()), emb, ea, ea, ha, ha, *saved, 0.07)


def cases():
    """(label, call) pairs: every wrapper on small inputs of every supported dtype."""
    from kernels import mine_snippets as km
    from kernels import snico_loss as ks
    from kernels import temporal_conv_embed as kc

    g = torch.Generator().manual_seed(0)
    for dt in km.DTYPES:
        a = torch.rand(2, 50, generator=g).to(dt)
        yield f"mine_snippets {dt}", partial(km.mine_snippets, a, torch.ones_like(a), 10, 3, 3, 6)
    for dt in (torch.float32, torch.bfloat16):
        emb = torch.randn(2, 20, 64, generator=g).to(dt)
        ea, eb = torch.randint(0, 20, (2, 4), generator=g), torch.randint(0, 20, (2, 4), generator=g)
        ha, hb = torch.randint(0, 20, (2, 3), generator=g), torch.randint(0, 20, (2, 3), generator=g)
        yield f"snico_loss fwd {dt}", partial(ks.snico_fwd, emb, ea, eb, ha, hb, 0.07)
        # saved tensors of the forward's shapes (contents do not matter: nothing runs)
        B, T, D, kE = *emb.shape, ea.shape[1]
        saved = (torch.empty(B, 4, D), torch.empty(B, 4), torch.empty(B, 2, kE), torch.empty(B, 2, 1 + kE),
                 torch.empty(B, 2))
        yield f"snico_loss bwd {dt}", partial(ks.snico_bwd, torch.ones(()), emb, ea, eb, ha, hb, *saved, 0.07)
    for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        x = torch.randn(2, 10, 32, generator=g).to(dt)
        w = torch.randn(48, 32, 3, generator=g).to(dt)
        b = torch.randn(48, generator=g).to(dt)
        yield f"temporal_conv_embed fwd {dt}", partial(kc.forward, x, w, b)
        y = torch.randn(2, 10, 48, generator=g).to(dt)
        yield f"temporal_conv_embed bwd {dt}", partial(kc.backward, y, y, x, w, (True, True, True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, nargs="+", default=[90], help="compute capabilities, e.g. 80 90")
    args = ap.parse_args()
    failed = 0
    for label, call in grid_cases():
        for fn, _, _, grid in capture(call):
            ok = grid[0] < 2 ** 31 and grid[1] <= 65535 and grid[2] <= 65535
            failed += not ok
            print(f"[grid] {label}: {fn.__name__} grid {grid} {'ok' if ok else 'FAILED: beyond the GPU grid limits'}")
    for arch, (label, call) in ((a, c) for a in args.arch for c in cases()):
        target = GPUTarget("cuda", arch, 32)
        for fn, values, opts, _ in capture(call):
            precs = [values.get("PREC")]
            if precs[0] == "ieee" and any(isinstance(v, torch.Tensor) and v.dtype == torch.float32
                                          for v in values.values()) and values.get("ACC_F64") is False:
                precs.append("tf32")  # what a GPU with TF32 allowed compiles for float32
            for prec in precs:
                vals = values if prec is None else values | {"PREC": prec}
                t0 = time.perf_counter()
                try:
                    compile_launch(fn, vals, opts, target)
                    status = "ok"
                except Exception as e:  # noqa: BLE001
                    failed += 1
                    status = "FAILED: " + "".join(traceback.format_exception_only(type(e), e)).strip()[:2000]
                extra = f" PREC={prec}" if prec else ""
                print(f"[sm_{arch}] {label}: {fn.__name__}{extra} {status} ({time.perf_counter() - t0:.1f}s)",
                      flush=True)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
