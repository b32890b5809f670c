"""python -m cola_fast.info: what this machine runs - backends built, the device, and the choices
of backend="auto" (this machine's on-disk decisions, with the timings they were made from).

    python -m cola_fast.info            # readable
    python -m cola_fast.info --json     # one JSON object
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


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
    from .ops import conv_embed, gemm_libraries, mining, snico

    cpu = torch.device("cpu")
    missing = {f"native:{lib}": why for lib, why in gemm_libraries().items() if why}
    return {"temporal_conv_embed (float32)": conv_embed.candidates(cpu, torch.float32),
            "mine_snippets": mining.candidates(cpu), "snico_loss": snico.candidates(cpu), "missing": missing}


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cola_fast.info", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
