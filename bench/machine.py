"""Where a benchmark ran, for the head of every table in bench/results: the commit, the CPU
(model, family, ISA, threads), torch with its BLAS and oneDNN versions, the GPU when there is one,
and what backend="auto" chose in this process.

    from machine import machine_lines, auto_lines
"""
from __future__ import annotations

import os
import re
import subprocess

import torch

from cola_fast.ops import _autotune


def commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        h = subprocess.check_output(["git", "-C", root, "rev-parse", "--short", "HEAD"], text=True).strip()
        dirty = subprocess.call(["git", "-C", root, "diff", "--quiet", "HEAD", "--", ":!bench/results"]) != 0
        return h + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _library_versions() -> str:
    cfg = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", cfg)
    dnnl = re.search(r"(?:MKL-DNN|oneDNN) v([\w.]+)", cfg)
    blas = f"MKL {mkl.group(1)}" if mkl else ("BLAS " + (re.search(r"BLAS_INFO=(\w+)", cfg) or ["", "?"])[1])
    return f"{blas}, oneDNN {dnnl.group(1) if dnnl else 'none'}"


def machine_lines(device: torch.device | str = "cpu") -> list[str]:
    """Markdown lines naming the machine and the software."""
    dev = torch.device(device)
    lines = [f"- commit {commit()}; torch {torch.__version__}; {_library_versions()}",
             f"- CPU: {_autotune.device_name(torch.device('cpu'))}"]
    if dev.type == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda})")
    return lines


def auto_lines() -> list[str]:
    """What backend="auto" chose in this process so far, one line per decision."""
    out = []
    for d in _autotune.decisions():
        op, dev, dtype, shape = d["key"].split("|")[:4]
        times = ", ".join(f"{n} {ms:.1f} ms" for n, ms in sorted(d["timings_ms"].items(), key=lambda kv: kv[1]))
        out.append(f"- auto: {op} {dtype} {shape} -> **{d['choice']}** ({d['source']}{': ' + times if times else ''})")
    return out or ["- auto: no decision in this run"]
