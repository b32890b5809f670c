"""The environment a run ran in: env.json in every run folder, and what changed on --resume.

    record = environment(cfg, device)          # a flat dict of strings, numbers, booleans
    for line in environment_changes(old, record): print(line)

env.json is written when a run starts and rewritten when it resumes; before it is
rewritten, the recorded one is compared with the present one field by field and every
difference is one line ("resume: environment: threads changed from 4 to 2"). A changed
environment is a note, never a refusal: a run may move to another device or thread count.

The fields: the package version and its git commit (when the package is a git checkout),
Python, torch, CUDA, cuDNN, Triton and NumPy versions, the CPU model (name, family/model
numbers), the host's ISA and
the ISA our kernels run with (after the COLA_FAST_CPU_ISA cap), the GPU, the thread
count, the deterministic flag and the backend choices (the settings and what is built).
"""
from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

ENV_FILE = "env.json"


def _git_commit() -> str | None:
    """The commit of the checkout the package is imported from, "+dirty" when it has
    uncommitted changes; None when it is not a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(cfg, device: torch.device) -> dict:
    """The record of env.json for a run with settings cfg on device (call it after the
    run's thread count and determinism are set)."""
    import cola_fast
    from .ops import _backend, describe

    device = torch.device(device)
    cpu = _backend.cpuinfo()
    built = describe()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "cola_fast": cola_fast.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "triton": _version("triton"),
        "numpy": np.__version__,
        "cpu": cpu.get("model name", platform.processor() or platform.machine()),
        "cpu_family_model": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",  # 25/17: Zen 4
        "cpu_isa_host": _backend.host_cpu_isa(),
        "cpu_isa": _backend.cpu_isa(),  # after $COLA_FAST_CPU_ISA's cap
        "onednn_max_cpu_isa": _backend.onednn_isa() or None,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "backend": cfg.backend,
        "eval_backend": cfg.eval_backend,
        "native_built": bool(built.get("native")),
        "native_cuda_built": bool(built.get("native_cuda")),
    }


def read_environment(folder: Path) -> dict | None:
    """A run folder's env.json; None when it has none (a run started before it was
    written) or it cannot be read (the note then says so instead of a comparison)."""
    try:
        data = json.loads((Path(folder) / ENV_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def environment_changes(old: dict, new: dict) -> list[str]:
    """One line per field whose value differs between the recorded and the present environment."""
    return [f"resume: environment: {k} changed from {old.get(k)!r} to {new.get(k)!r}"
            for k in new if old.get(k) != new.get(k)]
