"""The compiled extension is present and, where the build was meant to include CUDA,
the CUDA kernels were compiled and linked into it (checked without a GPU: the CUDA
dispatch key has a kernel registered)."""
import os

import pytest
import torch

# the fused ops, each with a C++ CPU and a CUDA kernel
OPS = ["mine_snippets", "snico_loss_fwd", "snico_loss_bwd", "temporal_conv_embed", "temporal_conv_embed_backward"]


def test_extension_loads_and_registers_cpu_kernels():
    import cola_fast._C  # noqa: F401
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"cola_fast::{op}", "CPU"), op


def test_no_private_torch_symbols():
    """The extension calls only public torch API: no symbol of ATen's internal at::native namespace
    (e.g. the oneDNN matmul that refuses float32 work on CPUs without AVX-512) is imported."""
    import shutil
    import subprocess
    import cola_fast._C as ext
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    undefined = subprocess.run(["nm", "-D", "--undefined-only", "-C", ext.__file__], capture_output=True,
                               text=True, check=True).stdout
    private = [line.split(None, 1)[-1] for line in undefined.splitlines() if "at::native::" in line]
    assert not private, f"cola_fast._C imports private ATen symbols: {private}"


def _cuda_build_expected() -> bool:
    """setup.py builds the CUDA kernels whenever nvcc and a CUDA build of torch are present
    and FORCE_ONLY_CPU is not set; a plain `pytest` then checks they were linked.
    COLA_FAST_EXPECT_CUDA_BUILD=1 / 0 overrides the guess (scripts/test.sh sets 1)."""
    import shutil
    flag = os.environ.get("COLA_FAST_EXPECT_CUDA_BUILD")
    if flag in ("0", "1"):
        return flag == "1"
    if os.environ.get("FORCE_ONLY_CPU", "0").lower() in ("1", "true", "yes", "on"):
        return False
    nvcc = shutil.which("nvcc") or any(
        os.path.exists(os.path.join(os.environ.get(v, ""), "bin", "nvcc")) for v in ("CUDA_HOME", "CUDA_PATH"))
    return bool(nvcc) and torch.version.cuda is not None


@pytest.mark.skipif(not _cuda_build_expected(),
                    reason="CUDA build not expected here (no nvcc, a CPU-only torch, FORCE_ONLY_CPU=1 "
                           "or COLA_FAST_EXPECT_CUDA_BUILD=0)")
def test_cuda_kernels_compiled_and_linked():
    import cola_fast._C as C  # noqa: F401
    from cola_fast.ops import describe
    assert describe()["native_cuda"], ("the extension was built without its CUDA kernels although nvcc and a "
                                       "CUDA torch are here: rebuild (pip install -e .), or set FORCE_ONLY_CPU=1 "
                                       "if the CPU-only build is meant")
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"cola_fast::{op}", "CUDA"), op


def test_avx512_code_only_in_its_own_functions():
    """The mining kernel is compiled a second time under "#pragma GCC target(avx512...)" and
    chosen at run time. That is only safe if no function the linker may share between the two
    builds (weak / COMDAT symbols: inline library functions, template instances) holds AVX or
    AVX-512 code (any VEX or EVEX instruction), else a CPU without AVX-512 could run that copy
    from the SSE2 build."""
    import platform
    import re
    import shutil
    import subprocess
    import cola_fast._C as C
    if platform.machine() != "x86_64" or not (shutil.which("nm") and shutil.which("objdump")):
        pytest.skip("needs x86-64 with nm and objdump")
    so = C.__file__
    weak = {ln.split()[-1] for ln in subprocess.check_output(["nm", "--defined-only", so], text=True).splitlines()
            if len(ln.split()) == 3 and ln.split()[1] in "WVu"}
    wide, cur = set(), None
    for ln in subprocess.check_output(["objdump", "-d", "--no-show-raw-insn", so], text=True).splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", ln)
        if m:
            cur = m.group(1)
        elif cur and re.search(r"^\s*[0-9a-f]+:\s+v[a-z0-9]+\s|%[yz]mm\d|\{%k[1-7]\}", ln):
            wide.add(cur)  # a VEX / EVEX instruction (AVX, AVX-512), also on xmm registers
    assert any("isa_avx512" in subprocess.check_output(["c++filt", f], text=True) for f in wide) or \
        "isa_avx512" not in subprocess.check_output(["nm", "-C", so], text=True), "AVX-512 build not found"
    shared = sorted(wide & weak)
    assert not shared, f"weak symbols with AVX code: {shared[:5]}"


def test_triton_kernels_compile_for_nvidia_gpus(tmp_path):
    """Every Triton kernel compiles for sm_80 and sm_90 (the GPU compiler runs here without a GPU;
    the interpreter that runs the kernels in the other tests skips its checks), and the launch
    grids stay within a GPU's limits at extreme shapes. See tests/triton_gpu_compile.py."""
    pytest.importorskip("triton")
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("triton_gpu_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, not from an earlier run's cache
    r = subprocess.run([sys.executable, str(script), "--arch", "80", "90"], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("0 failed"), r.stdout[-6000:] + r.stderr[-3000:]
    assert r.stdout.count(" ok (") >= 2 * 28, r.stdout  # 28 compiles per arch: nothing silently left out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="on a GPU machine the check itself runs")
def test_gpu_check_dry_run(tmp_path):
    """bench/gpu_check.sh with GPU_CHECK_DRY=1 goes through the script's whole logic on the CPU
    (the pip build refused and the fallback taken, both test phases, the end-to-end run, every
    benchmark's --help, the summary), so that a typo cannot waste the one GPU call."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, GPU_CHECK_DRY="1", OUT=str(tmp_path), PYTHON=sys.executable,
               PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh")], env=env, capture_output=True,
                       text=True, timeout=900)
    summary = (tmp_path / "gpu_check_summary.md").read_text()
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "build: setup.py build_ext --inplace (pip refused)" in summary
    assert "tests gpu_tests (rc=0" in summary and "tests other_tests (rc=0" in summary
    assert "end-to-end run rc=0: training steps/s" in summary
    for b in ("mining", "snico", "conv_embed", "train_step"):
        assert f"bench {b} rc=0" in summary, b
    for f in ("gpu_tests.log", "gpu_tests.xml", "other_tests.xml", "e2e.log", "gpu_build.log"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert " PASSED" in (tmp_path / "gpu_tests.log").read_text()  # per-test lines, not dots
