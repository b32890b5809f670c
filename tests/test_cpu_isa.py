"""The ISA cap of our CPU kernels, COLA_FAST_CPU_ISA=sse2|avx2|avx512 (csrc/cpu/cpu_isa.h).

Every ISA-specific build at or below this host's ISA runs the ISA-specific tests (ISA_TESTS) in
a subprocess under its cap, with oneDNN capped the same way (ONEDNN_MAX_CPU_ISA), against the
reference, and the subprocess reports that the build in use is the one the cap asks for. Every
build, also those above the host's ISA, gets a compile and symbol check: its functions are in
the extension and hold the instructions of their ISA and none wider."""
import functools
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cola_fast.ops._backend import native_has_kernel

ROOT = Path(__file__).resolve().parents[1]
CAPS = ("sse2", "avx2", "avx512")  # in increasing order
LEVEL = {"generic": 0, "sse2": 0, "avx2": 1, "avx512": 2}  # "generic": the baseline off x86-64
ONEDNN_CAP = {"sse2": "SSE41", "avx2": "AVX2", "avx512": "ALL"}  # oneDNN's names for the same caps

# The tests that run ISA-specific code, as pytest node ids: run under every cap at or below the
# host's. A kernel that gets ISA-specific builds adds its group here (e.g. the oneDNN conv).
ISA_TESTS = {
    "mining": [f"tests/test_mine_snippets.py::{t}" for t in (
        "test_native_matches_reference",
        "test_native_dtypes",
        "test_native_long_rows_with_specials",
        "test_native_positive_count_around_k",
        "test_native_windows_and_specials",
        "test_native_keep_dtypes_and_noncontiguous",
        "test_windows_longer_than_the_row[1-native-cpu]",
        "test_windows_longer_than_the_row[7-native-cpu]",
        "test_windows_longer_than_the_row[50-native-cpu]",
    )],
    # the conv's GEMMs through oneDNN (capped by ONEDNN_MAX_CPU_ISA) and BLAS: offered by the probe,
    # right against the reference, Winograd's non-finite fallback
    "conv": ["tests/test_autotune.py::test_conv_candidates_match_reference",
             "tests/test_autotune.py::test_gemm_probe_offers_blas_and_says_why_a_library_is_missing",
             "tests/test_temporal_conv_embed.py::test_winograd_nonfinite_falls_back_to_the_direct_sum"],
}

needs_native = pytest.mark.skipif(not native_has_kernel("mine_snippets", "cpu"), reason="cola_fast._C not built")

# Run under a cap: prints what the process reports, then runs the given tests (if any).
_CHILD = """
import sys, torch, cola_fast._C
from cola_fast.ops import _backend
assert _backend.cpu_isa() == torch.ops.cola_fast.cpu_isa(), "auto's keys name the ISA the kernels run with"
print("REPORTED", torch.ops.cola_fast.cpu_isa(), torch.ops.cola_fast.mining_cpu_isa(), flush=True)
if len(sys.argv) > 1:
    import pytest
    sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", *sys.argv[1:]]))
"""


def run_under_cap(cap: str, node_ids: list[str]) -> subprocess.CompletedProcess:
    """A fresh process with COLA_FAST_CPU_ISA=cap and ONEDNN_MAX_CPU_ISA to match (both are read
    once per process) that reports its ISA and runs node_ids."""
    env = dict(os.environ, COLA_FAST_CPU_ISA=cap, ONEDNN_MAX_CPU_ISA=ONEDNN_CAP[cap])
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", _CHILD, *node_ids], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def reported(r: subprocess.CompletedProcess) -> tuple[str, str]:
    """(cpu_isa(), mining_cpu_isa()) as the child printed them."""
    m = re.search(r"^REPORTED (\w+) (\w+)$", r.stdout, re.M)
    assert m, r.stdout[-3000:] + r.stderr[-3000:]
    return m.group(1), m.group(2)


@functools.lru_cache(maxsize=None)
def host_isa() -> str:
    """The host's ISA: this process's cpu_isa() unless a cap is set here, else a child's
    without the cap."""
    if not os.environ.get("COLA_FAST_CPU_ISA"):
        return torch.ops.cola_fast.cpu_isa()
    env = {k: v for k, v in os.environ.items() if k != "COLA_FAST_CPU_ISA"}
    r = subprocess.run([sys.executable, "-c", "import torch, cola_fast._C; print(torch.ops.cola_fast.cpu_isa())"],
                       env=env, capture_output=True, text=True, check=True, timeout=300)
    return r.stdout.strip()


@needs_native
@pytest.mark.parametrize("cap", CAPS)
def test_isa_specific_tests_pass_under_each_cap(cap):
    """Under each cap at or below the host's, the process uses the build the cap asks for and the
    ISA-specific tests pass. The cap this process itself runs under is only asked what it uses:
    the same tests ran on its build in this suite already."""
    host = host_isa()
    if LEVEL[cap] > LEVEL[host]:
        pytest.skip(f"{cap} is above this host's ISA ({host}): test_build_has_each_isa_and_no_wider checks it")
    want = "generic" if host == "generic" else cap
    same_as_here = torch.ops.cola_fast.cpu_isa() == want
    node_ids = [] if same_as_here else [n for group in ISA_TESTS.values() for n in group]
    r = run_under_cap(cap, node_ids)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert reported(r) == (want, want)
    if node_ids:
        summary = r.stdout.strip().splitlines()[-1]
        # every listed test ran and passed: none failed, errored or was skipped
        assert re.search(r"\d+ passed", summary) and not re.search(r"failed|error|skipped", summary), summary


@needs_native
def test_cap_is_read_once_and_an_unknown_value_is_an_error():
    env = dict(os.environ, COLA_FAST_CPU_ISA="avx3")
    code = ("import torch, cola_fast._C\n"
            "for f in (torch.ops.cola_fast.cpu_isa, torch.ops.cola_fast.mining_cpu_isa,\n"
            "          lambda: torch.ops.cola_fast.mine_snippets(torch.rand(2, 9), torch.ones(2, 9), 2, 1, 1, 2)):\n"
            "    try:\n"
            "        f()\n"
            "    except RuntimeError as e:\n"
            "        print('ERROR', str(e).splitlines()[0])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 3, r.stdout + r.stderr  # every entry point refuses, not only the first call
    for e in errors:
        assert "COLA_FAST_CPU_ISA='avx3'" in e and "sse2, avx2, avx512" in e, e


@functools.lru_cache(maxsize=None)
def _disassembly() -> dict[str, list[str]]:
    """Demangled function name -> its instruction lines, for the functions of the extension."""
    import cola_fast._C as C
    funcs, cur = {}, None
    out = subprocess.check_output(["objdump", "-d", "-C", "--no-show-raw-insn", C.__file__], text=True)
    for ln in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", ln)
        if m:
            cur = funcs.setdefault(m.group(1), [])
        elif cur is not None and ln.strip():
            cur.append(ln)
    return funcs


VEX = re.compile(r"^\s*[0-9a-f]+:\s+v[a-z0-9]+\s|%[yz]mm\d")  # an AVX (VEX) or AVX-512 (EVEX) instruction
YMM = re.compile(r"%ymm\d")
EVEX = re.compile(r"%zmm\d|\{%k[0-7]\}|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b")  # AVX-512 only


@needs_native
@pytest.mark.skipif(platform.machine() != "x86_64" or not shutil.which("objdump"), reason="needs x86-64 and objdump")
@pytest.mark.parametrize("cap", CAPS)
def test_build_has_each_isa_and_no_wider(cap):
    """Each ISA build is compiled and linked (its functions are in the extension, also on a host
    that cannot run it) and uses its own instructions and none wider: SSE2 no AVX at all, AVX2
    256-bit AVX but no AVX-512, AVX-512 its 512-bit registers."""
    funcs = {name: lines for name, lines in _disassembly().items() if f"::isa_{cap}::" in name}
    assert any("minmax_keys" in name for name in funcs), f"no isa_{cap} functions in the extension"
    code = [ln for lines in funcs.values() for ln in lines]
    if cap == "sse2":
        assert not any(VEX.search(ln) for ln in code)
    elif cap == "avx2":
        assert any(YMM.search(ln) for ln in code) and not any(EVEX.search(ln) for ln in code)
    else:
        assert any("%zmm" in ln for ln in code)
