"""python -m cola_fast.info: what this machine runs - backends built, the device, and the choices
of backend="auto" (this machine's on-disk decisions, with the timings they were made from).

    python -m cola_fast.info            # readable
    python -m cola_fast.info --json     # one JSON object
    python -m cola_fast.info --explain temporal_conv_embed 16,750,2048,2048,3
        # what auto would run for such a call and why (the shape class, the key, the candidates
        # and those not offered, the decision if one is known), without running the op

SHAPE as the op's call gives it: temporal_conv_embed B,T,Cin,Cout,K (with a bias, as the model's);
mine_snippets B,T[,k_easy,k_hard[,m,M]]; snico_loss B,T,D[,k_easy,k_hard] (k_easy, k_hard by
default T//5 and T//20, THUMOS'14's r_easy and r_hard; m, M 3 and 6); classifier_1x1 B,T,E,C;
dropout x's shape (the rate from --p).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from .cli import ArgumentParser


def gather() -> dict:
    from .ops import _autotune, describe

    info = describe()
    cpu = _autotune.device_name(torch.device("cpu"))
    devices = [cpu] + [_autotune.device_name(torch.device("cuda", i)) for i in range(torch.cuda.device_count())]
    cached = _autotune._read_cache(_autotune.cache_path())
    mine = {k: v for k, v in cached.items() if any(f"|{d}|" in k for d in devices)}
    info.update({"torch": torch.__version__, "cpu": cpu, "gpus": devices[1:], "cpu_candidates": cpu_candidates(),
                 "blas": "MKL" if torch.backends.mkl.is_available() else "other",
                 "autotune_cache": str(_autotune.cache_path()), "cached_decisions": mine})
    return info


def cpu_candidates() -> dict:
    """What auto may choose from on this CPU, per op, and why a candidate is missing."""
    from .ops import gemm_libraries, module

    cpu = torch.device("cpu")
    missing = {f"native:{lib}": why for lib, why in gemm_libraries().items() if why}
    return {"temporal_conv_embed (float32)": module("temporal_conv_embed").candidates(cpu, torch.float32),
            "mine_snippets": module("mine_snippets").candidates(cpu), "snico_loss": module("snico_loss").candidates(cpu),
            "missing": missing}


def _isa_line(info: dict) -> str:
    cap = "; capped by COLA_FAST_CPU_ISA" if info["cpu_isa"] != info["cpu_isa_host"] else ""
    onednn = info["onednn_max_cpu_isa"]
    return (f"CPU kernels' instruction set: {info['cpu_isa']} (this CPU: {info['cpu_isa_host']}{cap}); "
            f"mining build: {info['mining_cpu_isa']}; oneDNN: {'at most ' + onednn if onednn else 'all the CPU has'}")


def _candidate_lines(cands: dict) -> list[str]:
    lines = ["auto's candidates on this CPU:"]
    lines += [f"  {op}: {', '.join(names)}" for op, names in cands.items() if op != "missing"]
    lines += [f"  not offered: {name}: {why}" for name, why in cands["missing"].items()]
    return lines


# --------------------------------------------------------------------------------------
# --explain: what auto would run for one call, without running it
# --------------------------------------------------------------------------------------
# per op: the fields of SHAPE, the variants (the first is the default: a training step's), and
# the implementations auto may know of on a CPU / on CUDA (candidates() offers those that run here)
_OPS = {
    "temporal_conv_embed": ("B,T,Cin,Cout,K", ("train", "forward", "train_dx"),
                            ("reference", "native:blas", "native:onednn"), ("reference", "native:cublaslt", "triton")),
    "mine_snippets": ("B,T[,k_easy,k_hard[,m,M]]", ("indices",), ("reference", "native", "triton"),
                      ("reference", "native", "triton")),
    "snico_loss": ("B,T,D[,k_easy,k_hard]", ("train", "forward"), ("reference", "native", "triton"),
                   ("reference", "native", "triton")),
    "classifier_1x1": ("B,T,E,C", ("train", "forward"), ("conv1d", "linear"), ("conv1d", "linear")),
    "dropout": ("x's shape", ("train", "forward"), ("reference", "native"), ()),
}


def _parse_shape(op: str, text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"SHAPE {text!r} for {op}: comma-separated integers, {_OPS[op][0]}") from None
    n = {"temporal_conv_embed": (5,), "mine_snippets": (2, 4, 6), "snico_loss": (3, 5), "classifier_1x1": (4,)}
    if (op in n and len(dims) not in n[op]) or not dims or min(dims) < 0:
        raise ValueError(f"SHAPE {text!r} for {op}: expected {_OPS[op][0]}")
    return dims


def shape_class_of(op: str, dims: tuple[int, ...], p: float = 0.7) -> tuple:
    """The shape class that op's call with these SHAPE fields is keyed by (the op's own shape_class)."""
    from .ops import module

    m = module(op)
    if op == "temporal_conv_embed":
        return m.shape_class(*dims, True)
    if op == "mine_snippets":  # the fields left out: k_easy, k_hard, m, M as THUMOS'14's
        T = dims[1]
        return m.shape_class(*dims, *(T // 5, T // 20, 3, 6)[len(dims) - 2:])
    if op == "snico_loss":  # the fields left out: k_easy, k_hard as THUMOS'14's
        T = dims[1]
        return m.shape_class(*dims, *(T // 5, T // 20)[len(dims) - 3:])
    if op == "classifier_1x1":
        return m.shape_class(*dims)
    return m.shape_class(dims, p)


def _why_not(op: str, name: str, device: torch.device, dtype: torch.dtype, shape: tuple) -> str:
    """Why auto does not offer candidate `name` of op for this call."""
    from .ops import _backend, gemm_libraries, module

    if name == "triton":
        _, why = _backend._triton_status()
        if device.type != "cuda":
            return "Triton is a candidate on CUDA only (on a CPU it runs only under its interpreter, for tests)"
        if op == "mine_snippets" and shape[1] > module(op).TRITON_MAX_T:
            return f"T={shape[1]} > {module(op).TRITON_MAX_T}, the Triton kernel's longest row"
        return why or "Triton is not available here"
    kernel = {"snico_loss": "snico_loss_fwd", "dropout": "dropout_fwd"}.get(op, op)
    if not _backend.native_has_kernel(kernel, device.type):
        ok, _, why = _backend._native_status()
        return why if not ok else f"the extension was built without {device.type.upper()} kernels for {op}"
    lib = name.split(":")[1] if ":" in name else ""
    if gemm_libraries().get(lib):
        return gemm_libraries()[lib]
    if lib == "onednn" and dtype == torch.float64:
        return "float64: the native conv's GEMMs are BLAS's only"
    return "not offered for this device and dtype"


def explain(op: str, dims: tuple[int, ...], dtype: str = "float32", device: str = "cpu", variant: str | None = None,
            autocast: str = "none", p: float = 0.7) -> dict:
    """What backend="auto" would run for a call of op with these SHAPE fields, and why; runs nothing."""
    import os

    from .ops import _autotune

    fields, variants, cpu_names, cuda_names = _OPS[op]
    variant = variant or variants[0]
    if variant not in variants:
        raise ValueError(f"{op} has the variants {', '.join(variants)}, not {variant!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device here (the key names the GPU)")
    if op == "dropout" and dev.type != "cpu":
        return {"op": op, "note": f"dropout on {dev.type} is torch's own dropout: auto has no choice to make"}
    shape = shape_class_of(op, dims, p)
    out = {"op": op, "variant": variant, "device": str(dev), "dtype": dtype, "autocast": autocast,
           "call": f"{fields} = {','.join(map(str, dims))}", "shape_class": shape,
           **_autotune.explain(op, variant, str(dev), dtype, shape, autocast)}
    universe = cuda_names if dev.type == "cuda" else cpu_names
    out["not_offered"] = {n: _why_not(op, n, dev, getattr(torch, dtype), shape)
                          for n in universe if n not in out["candidates"]}
    forced = os.environ.get("COLA_FAST_BACKEND", "auto")
    out["forced_backend"] = None if forced == "auto" else forced
    out["cache"] = str(_autotune.cache_path())
    return out


def format_explanation(e: dict) -> str:
    if "note" in e:
        return f"{e['op']}: {e['note']}"
    lines = [f"{e['op']} ({e['call']}), variant {e['variant']}, {e['dtype']} on {e['device']}, autocast {e['autocast']}",
             f"  shape class: {e['shape_class']}", f"  key: {e['key']}",
             f"  candidates: {', '.join(e['candidates'])}"]
    lines += [f"  not offered: {n}: {why}" for n, why in e["not_offered"].items()]
    if e["forced_backend"]:
        lines.append(f"  COLA_FAST_BACKEND={e['forced_backend']} forces that backend: auto is not asked")
    d = e["decision"]
    if d is None:
        lines.append(f"  decision: none pinned, in memory or in the disk cache ({e['cache']}): "
                     "would measure on first call")
    else:
        t = ", ".join(f"{n} {ms:.2f} ms" for n, ms in sorted(d["timings_ms"].items(), key=lambda kv: kv[1]))
        bad = "".join(f"; {n} not eligible ({why})" for n, why in d["ineligible"].items())
        lines.append(f"  decision: {d['choice']} ({d['source']}{': ' + t if t else ''}{bad})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m cola_fast.info", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--explain", nargs=2, metavar=("OP", "SHAPE"),
                   help=f"what auto would run for a call of OP ({', '.join(_OPS)}) of SHAPE, and why")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16", "float16"))
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--variant", help="forward | train | train_dx (temporal_conv_embed) | indices (mine_snippets); "
                   "default: a training step's")
    p.add_argument("--autocast", default="none", choices=("none", "bfloat16", "float16"),
                   help="the autocast dtype of the call (default none)")
    p.add_argument("--p", type=float, default=0.7, help="dropout's rate (default 0.7, the model's)")
    p.add_argument("--threads", type=int, help="torch CPU threads of the call, part of a CPU key "
                   "(default: torch's own choice; the tiny preset trains with 1)")
    args = p.parse_args(argv)
    if args.explain:
        return _explain_command(p, args)
    info = gather()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"torch {info['torch']}; CPU: {info['cpu']}; GPUs: {', '.join(info['gpus']) or 'none'}")
    print(f"native kernels: {'CPU' if info['native'] else 'not built: ' + info['native_error']}"
          f"{' + CUDA' if info['native_cuda'] else ''}; triton: {info['triton'] or info['triton_error']}; "
          f"oneDNN: {info['onednn']}; BLAS: {info['blas']}")
    print(_isa_line(info))
    print("\n".join(_candidate_lines(info["cpu_candidates"])))
    print(f"\nbackend=\"auto\" decisions for this machine in {info['autotune_cache']}:")
    items = [{"key": k, "source": "disk cache", **v} for k, v in info["cached_decisions"].items()]
    from .ops._autotune import format_decisions
    print(format_decisions(items) if items else "(none yet: the ops choose on first use, e.g. the first training step)")
    return 0


def _explain_command(parser, args) -> int:
    from .cli import fail

    op, shape = args.explain
    if args.threads:
        torch.set_num_threads(args.threads)
    if op not in _OPS:
        parser.error(f"--explain: unknown op {op!r}; the ops are {', '.join(_OPS)}")
    try:
        e = explain(op, _parse_shape(op, shape), args.dtype, args.device, args.variant, args.autocast, args.p)
    except ValueError as err:
        return fail(err)
    print(json.dumps(e, indent=1, default=list) if args.json else format_explanation(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
