"""backend="auto" by measurement: for each shape class of an op, the fastest correct candidate.

Where an op has more than one correct implementation on a device (torch's own composition,
which runs on oneDNN/MKL or cuDNN/cuBLAS; the native C++/CUDA kernels; the Triton kernels), the
first call of a *shape class* times them, as torch.backends.cudnn.benchmark and Triton's
autotuner do:

  1. the candidates run on random inputs of the class's shape (drawn from a private generator;
     torch's own random state is saved and restored around the whole measurement);
  2. a candidate whose result does not match the reference's on those inputs is not eligible
     (where the op has a float64 oracle, a disagreement is settled by it, and torch's own
     composition is not eligible either when it is the one that is off: seen for torch's CPU
     conv backward at (31,50,2048->2048,k9), 5% off the float64 result);
  3. the eligible ones are timed, a few calls each within a time budget; the fastest is chosen.

Every op asks through one function, pick(op, kernel, backend, x, variant, shape_class). What
runs is decided in this order, the first that applies:

  1. a forced backend: backend= of the call, else $COLA_FAST_BACKEND ("reference", "native",
     "triton"; checked to be available by _backend.resolve, never a silent fall-back);
  2. a pinned choice (pin(): a resumed run or infer takes its run folder's recorded choices;
     pinning replaces a different decision already in memory);
  3. this process's decision for the key, in memory;
  4. the only candidate, when there is one;
  5. with COLA_FAST_AUTOTUNE=off, no measurement: the first of native, triton, reference;
  6. the on-disk cache ($COLA_FAST_CACHE or ~/.cache/cola_fast, file autotune.json), unless
     COLA_FAST_AUTOTUNE=refresh;
  7. measurement, whose decision is written to the on-disk cache.

The key (make_key) names the op, the variant, the device (CPU model, ISA, thread count; or the
GPU), the dtype, the shape class, the autocast dtype of the call's device ("none" outside
autocast; every op's key has it), the float32 precision settings (TF32) and the torch, Triton
and cola_fast versions. `decisions()` lists this process's decisions, which a training run
records in its folder. The choice is a constant for torch.compile (`choose` is evaluated once
at trace time). `explain()` (python -m cola_fast.info --explain) says what would be run for a
call and why, without running or measuring anything.

The ops, their variants, shape classes and candidates (each op's module: cola_fast.ops.module(op)):

  temporal_conv_embed  variants forward | train (weight/bias grads) | train_dx (x's grad too);
                       class (B, T, Cin, Cout, K, has_bias), T of a single video (B=1, T>16)
                       rounded up to a power of two with its parity kept;
                       CPU: reference, native:blas, native:onednn (float32 only, where the probe
                       at import ran it: _backend.gemm_libraries); CUDA: reference,
                       native:cublaslt, triton
  mine_snippets        variant indices; class (B, T, k_easy, k_hard, m, M);
                       reference, native; triton on CUDA for T <= 2048
  snico_loss           variants forward | train; class (B, T, D, k_easy, k_hard);
                       reference, native; triton on CUDA
  classifier_1x1       variants forward | train; class (B, T, E, C), T of a single video
                       rounded up to a power of two; conv1d (the reference), linear
  dropout              variants forward | train; class (*x.shape, p); CPU only (elsewhere
                       torch's dropout runs without a choice): reference, native

Each op registers a *tuning factory* with `register(op, factory)`: factory(variant, device,
dtype, shape, autocast) returns a Tuning (candidates, inputs, reference, comparison); building
it runs nothing.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import _backend

CACHE_FORMAT = "cola_fast-autotune"
CACHE_VERSION = 1
ROUNDS = 3             # timed calls per candidate at most (at least one)
BUDGET_S = 0.5         # no further round once the timed calls of one decision have taken this long
TUNE_BATCH = 4         # ops whose cost grows with the batch are timed on at most this many videos


@dataclass
class Tuning:
    """What an op gives the tuner for one shape class."""
    candidates: dict[str, Callable[[tuple], Any]]    # name -> run(inputs) (forward, or forward+backward)
    make_inputs: Callable[[torch.Generator], tuple]  # random inputs of the class's shape
    reference: str                                   # the candidate whose result is the oracle
    mismatch: Callable[[Any, Any], str | None]       # (result, reference result) -> why not equal, or None
    oracle: Callable[[tuple], Any] | None = None     # the reference in float64, to settle a disagreement


@dataclass
class Decision:
    key: str
    choice: str
    source: str                                           # "measured" | "disk cache" | "pinned" | "only candidate" | "off"
    timings_ms: dict[str, float] = field(default_factory=dict)
    ineligible: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0                                  # what making the decision cost (measuring: inputs, all calls)


_FACTORIES: dict[str, Callable[..., Tuning]] = {}
_DECISIONS: dict[str, Decision] = {}   # this process's decisions, by key: the record decisions() lists
_PINNED: dict[str, str] = {}           # key -> choice (from a run folder)
# The one cache on the per-call path: the choice by the call's own tuple. It saves building the
# key (make_key: about 20 us, the precision settings half of it) on every call after the first.
_FAST: dict[tuple, str] = {}


def register(op: str, factory: Callable[..., Tuning]) -> None:
    _FACTORIES[op] = factory


# --------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------
def _cpu_model() -> str:
    info = _backend.cpuinfo()
    return f"{info.get('model name', platform.processor() or platform.machine())} (family {info.get('cpu family', '?')}"


def _cpu_name() -> str:
    """CPU model and family, the instruction set our kernels run with (the cap of
    $COLA_FAST_CPU_ISA applied) and oneDNN's cap when one is set: decisions never cross ISAs."""
    onednn = _backend.onednn_isa()
    return f"{_cpu_model()}, {_backend.cpu_isa()}{f', oneDNN<={onednn}' if onednn else ''})"


def device_name(device: torch.device) -> str:
    """The device as the cache keys name it: CPU model, family and ISA with the thread count, or the GPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_name(idx)
    return f"{_cpu_name()}, {torch.get_num_threads()} threads"


def precision() -> str:
    """The float32 settings that change results (TF32 in cuBLAS and cuDNN, reduced precision in
    oneDNN), as the keys name them: the float32 matmul precision and each backend's
    fp32_precision (torch >= 2.9; "none" inherits)."""
    b = torch.backends
    parts = [f"matmul {torch.get_float32_matmul_precision()}"]
    for name, obj in (("cublas", getattr(b.cuda, "matmul", None)), ("cudnn", b.cudnn),
                      ("cudnn.conv", getattr(b.cudnn, "conv", None)), ("mkldnn", b.mkldnn)):
        value = getattr(obj, "fp32_precision", None)
        if value is not None:
            parts.append(f"{name} {value}")
    return ", ".join(parts)


def versions() -> str:
    """The software whose change can change a choice: torch, Triton (its compiler and its
    kernels' code generation) and cola_fast (its kernels)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__
    try:
        triton = version("triton")
    except PackageNotFoundError:
        triton = "none"
    return f"torch {torch.__version__}, triton {triton}, cola_fast {__version__}"


def make_key(op: str, variant: str, device: str, dtype: str, shape: tuple, autocast: str) -> str:
    """The key of a decision, in memory and on disk: what the op is called on (op, variant,
    device, dtype, shape class, autocast) and what decides the result and speed besides
    (float32 precision settings, software versions)."""
    dev = device_name(torch.device(device))
    shape_s = "x".join(str(v) for v in shape)
    return f"{op}/{variant}|{dev}|{dtype}|{shape_s}|autocast={autocast}|{precision()}|{versions()}"


# --------------------------------------------------------------------------------------
# the on-disk cache
# --------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """cola_fast's cache folder: $COLA_FAST_CACHE, else ~/.cache/cola_fast (decisions, synthetic data)."""
    return Path(os.environ.get("COLA_FAST_CACHE", Path.home() / ".cache" / "cola_fast"))


def cache_path() -> Path:
    return cache_dir() / "autotune.json"


def _read_cache(path: Path) -> dict[str, dict]:
    """The decisions in path; a missing, corrupt or foreign file reads as empty (with a warning)."""
    from ..inputs import InputError, read_json  # here: cola_fast.inputs imports cola_fast.data

    if not path.exists():
        return {}
    try:
        data = read_json(path, "autotune cache")
    except InputError as e:  # the cache is ours to rewrite: a warning, not an error
        warnings.warn(f"cola_fast: ignoring the autotune cache: {e}; it will be rewritten", stacklevel=3)
        return {}
    if not (isinstance(data, dict) and data.get("format") == CACHE_FORMAT and data.get("version") == CACHE_VERSION
            and isinstance(data.get("decisions"), dict)):
        warnings.warn(f"cola_fast: ignoring the autotune cache {path}: not a version-{CACHE_VERSION} "
                      f"{CACHE_FORMAT} file; it will be rewritten", stacklevel=3)
        return {}
    return {k: v for k, v in data["decisions"].items()
            if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("choice"), str)}


def _write_cache(path: Path, key: str, d: Decision) -> None:
    """Add one decision to the cache file (read, merge, atomic replace); an unwritable cache is
    only a lost speed-up, never an error."""
    try:
        entries = _read_cache(path)
        entries[key] = {"choice": d.choice, "timings_ms": d.timings_ms, "ineligible": d.ineligible}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".autotune.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"format": CACHE_FORMAT, "version": CACHE_VERSION, "decisions": entries}, f, indent=1)
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"cola_fast: could not write the autotune cache {path} ({e})", stacklevel=3)


# --------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(key: str, tuning: Tuning, device: torch.device) -> Decision:
    """Run every candidate once (eligibility against the reference, or against the float64
    oracle when some candidate disagrees with the reference), then time the eligible ones."""
    devices = [device] if device.type == "cuda" else []
    t_begin = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        gen = torch.Generator(device="cpu").manual_seed(0)
        inputs = tuning.make_inputs(gen)
        ref = tuning.candidates[tuning.reference](inputs)
        _sync(device)
        outputs, ineligible = {}, {}
        for name, run in tuning.candidates.items():
            if name == tuning.reference:
                continue
            try:
                outputs[name] = run(inputs)
            except Exception as e:  # noqa: BLE001 - a candidate that fails is not eligible, and says why
                ineligible[name] = f"{type(e).__name__}: {e}"[:200]
        judged = {name: tuning.mismatch(out, ref) for name, out in outputs.items()}
        if tuning.oracle is not None and any(why is not None for why in judged.values()):
            truth = tuning.oracle(inputs)  # who is off: the candidate, or the reference itself?
            outputs[tuning.reference] = ref
            judged = {name: tuning.mismatch(out, truth) for name, out in outputs.items()}
        ineligible.update({name: f"{why[:150]} (against the {'float64 oracle' if tuning.reference in judged else 'reference'})"
                           for name, why in judged.items() if why is not None})
        times: dict[str, list[float]] = {name: [] for name in tuning.candidates if name not in ineligible}
        if not times:  # nothing matches: keep the reference, as the op's forced default would
            times = {tuning.reference: []}
        del outputs, judged
        _sync(device)
        t_start = time.perf_counter()
        for _ in range(ROUNDS):
            for name in times:
                t0 = time.perf_counter()
                tuning.candidates[name](inputs)
                _sync(device)
                times[name].append(time.perf_counter() - t0)
            if time.perf_counter() - t_start > BUDGET_S:
                break
    best = {name: min(ts) for name, ts in times.items()}
    choice = min(best, key=best.get)
    return Decision(key, choice, "measured", {n: round(t * 1e3, 3) for n, t in best.items()}, ineligible,
                    round(time.perf_counter() - t_begin, 3))


def mismatch_tolerance(dtype: torch.dtype, device: torch.device, autocast: str = "none"):
    """A comparison of result tuples: every tensor within tol * max|reference| of the reference's
    (tol 1e-9 in float64, 1e-4 in float32, 3e-2 in 16-bit formats, autocast or TF32 on CUDA)."""
    low = autocast != "none" or dtype in (torch.float16, torch.bfloat16) or (
        device.type == "cuda" and dtype == torch.float32)
    tol = 3e-2 if low else (1e-9 if dtype == torch.float64 else 1e-4)

    def mismatch(out, ref) -> str | None:
        for i, (a, r) in enumerate(zip(out, ref)):
            if a.shape != r.shape:
                return f"result {i}: shape {tuple(a.shape)}, reference {tuple(r.shape)}"
            if r.numel() == 0:
                continue
            a, r = a.detach().double(), r.detach().double()
            scale = r.abs().max().item()
            err = (a - r).abs().max().item()
            if not err <= tol * max(scale, 1e-6):
                return f"result {i}: max error {err:.3g} > {tol:g} x max |reference| {scale:.3g}"
        return None
    return mismatch


def _static_choice(candidates: list[str]) -> str:
    for pref in ("native", "triton"):
        for name in candidates:
            if name.split(":")[0] == pref:
                return name
    return candidates[0]


# --------------------------------------------------------------------------------------
# the choice
# --------------------------------------------------------------------------------------
def _decide(op: str, variant: str, device: str, dtype: str, shape: tuple, autocast: str) -> Decision:
    key = make_key(op, variant, device, dtype, shape, autocast)
    if key in _DECISIONS:
        return _DECISIONS[key]
    dev = torch.device(device)
    tuning = _FACTORIES[op](variant, dev, getattr(torch, dtype), shape, autocast)
    d = _without_measuring(key, list(tuning.candidates))
    if d is None:
        d = measure(key, tuning, dev)
        _write_cache(cache_path(), key, d)
    _DECISIONS[key] = d
    return d


def _without_measuring(key: str, names: list[str]) -> Decision | None:
    """The decision for key from steps 2 and 4-6 of the module docstring's order (pinned, the
    only candidate, COLA_FAST_AUTOTUNE=off, the disk cache); None when it must be measured."""
    mode = os.environ.get("COLA_FAST_AUTOTUNE", "on")
    if key in _PINNED and _PINNED[key] in names:
        return Decision(key, _PINNED[key], "pinned")
    if len(names) == 1:
        return Decision(key, names[0], "only candidate")
    if mode == "off":
        return Decision(key, _static_choice(names), "off")
    cached = None if mode == "refresh" else _read_cache(cache_path()).get(key)
    if cached is not None and cached["choice"] in names:
        return Decision(key, cached["choice"], "disk cache", cached.get("timings_ms", {}), cached.get("ineligible", {}))
    return None


@torch.compiler.assume_constant_result  # evaluated once while torch.compile traces: a constant in the graph
def choose(op: str, variant: str, device: str, dtype: str, shape: tuple, autocast: str = "none") -> str:
    """The candidate to run for this call (see the module docstring). All arguments are plain
    constants: the op's name, a variant ("forward", "train", ...), the device ("cpu", "cuda:0"),
    the dtype's name, the shape class and the autocast dtype ("none" outside autocast)."""
    # the per-call lookup reads only the cheap settings (0.1 us; precision() takes about 10 us):
    # a per-backend fp32_precision changed in mid-process is keyed from the next reset()
    fast = (op, variant, device, dtype, shape, autocast, torch.get_num_threads(),
            torch.get_float32_matmul_precision())
    got = _FAST.get(fast)
    if got is None:
        got = _decide(op, variant, device, dtype, shape, autocast).choice
        _FAST[fast] = got
    return got


def autocast_of(device_type: str) -> str:
    """The autocast dtype's name on this device type, "none" outside autocast."""
    if torch.is_autocast_enabled(device_type):
        return str(torch.get_autocast_dtype(device_type)).replace("torch.", "")
    return "none"


def dtype_name(dtype: torch.dtype) -> str:
    """"float32" for torch.float32: the dtype as keys and factories name it."""
    return str(dtype).replace("torch.", "")


def pick(op: str, kernel: str | None, backend: str | None, x: torch.Tensor, variant: str, shape_class: tuple) -> str:
    """What one call of op runs: the forced backend (backend=, else $COLA_FAST_BACKEND), checked
    to be available; or, with "auto", the candidate chosen for the call's key from x's device and
    dtype, the autocast state of that device, the op's variant and its shape class. kernel: the
    compiled op whose kernel backend "native" needs (None for an op with no kernel of its own,
    which takes any backend name)."""
    b = _backend.resolve(backend, x.device, kernel)
    if b != "auto":
        return b
    dev = x.device
    return choose(op, variant, str(dev), dtype_name(x.dtype), shape_class, autocast_of(dev.type))


def explain(op: str, variant: str, device: str, dtype: str, shape: tuple, autocast: str = "none") -> dict:
    """What "auto" would run for a call with this key, and why, without running the op or
    measuring: the key, the candidates, and the decision when one is pinned, in memory, the only
    candidate, off, or in the disk cache (decision None: it would be measured on first call)."""
    key = make_key(op, variant, device, dtype, shape, autocast)
    tuning = _FACTORIES[op](variant, torch.device(device), getattr(torch, dtype), shape, autocast)
    names = list(tuning.candidates)
    d = _DECISIONS.get(key)  # as _decide: memory first (pin() has removed a different decision)
    if d is not None:
        d = Decision(d.key, d.choice, f"in memory, {d.source}", d.timings_ms, d.ineligible, d.seconds)
    else:
        d = _without_measuring(key, names)
    return {"key": key, "candidates": names, "decision": None if d is None else asdict(d)}


# --------------------------------------------------------------------------------------
# what a run records, and what a resumed run pins
# --------------------------------------------------------------------------------------
def decisions() -> list[dict]:
    """This process's decisions so far, oldest first (for a run folder, describe(), logs)."""
    return [asdict(d) for d in _DECISIONS.values()]


def pin(recorded: list[dict] | dict) -> int:
    """Take these choices (a run folder's record: decisions() or {key: choice}) for their keys,
    ahead of the disk cache and of measurement. Returns how many were pinned."""
    items = recorded.items() if isinstance(recorded, dict) else ((d["key"], d["choice"]) for d in recorded)
    n = 0
    for key, choice in items:
        if isinstance(key, str) and isinstance(choice, str):
            _PINNED[key] = choice
            if key in _DECISIONS and _DECISIONS[key].choice != choice:
                del _DECISIONS[key]
            n += 1
    _FAST.clear()
    return n


def reset() -> None:
    """Forget every decision and pin of this process (tests; a changed thread count is keyed anyway)."""
    _DECISIONS.clear()
    _PINNED.clear()
    _FAST.clear()


def format_decisions(items: list[dict] | None = None) -> str:
    """One line per decision: key, choice, how it was made, the timings."""
    lines = []
    for d in decisions() if items is None else items:
        t = ", ".join(f"{n} {ms:.2f} ms" for n, ms in sorted(d["timings_ms"].items(), key=lambda kv: kv[1]))
        bad = "".join(f"; {n} not eligible ({why})" for n, why in d["ineligible"].items())
        lines.append(f"{d['key']}\n    -> {d['choice']} ({d['source']}{': ' + t if t else ''}{bad})")
    return "\n".join(lines) if lines else "(no decision yet: the ops choose on first use)"


RUN_RECORD = "autotune.json"  # in a training run's folder, beside the checkpoints that hold the same list


def run_record() -> dict:
    """This process's decisions as a run folder records them (autotune.json)."""
    return {"format": CACHE_FORMAT + "-run", "version": CACHE_VERSION, "decisions": decisions()}
