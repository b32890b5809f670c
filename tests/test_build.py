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


@pytest.mark.gpu
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


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_build_expected(),
                    reason="CUDA build not expected here (no nvcc, a CPU-only torch, FORCE_ONLY_CPU=1 "
                           "or COLA_FAST_EXPECT_CUDA_BUILD=0)")
def test_cuda_build_links_cublaslt():
    """The CUDA conv embedding's GEMMs are cuBLASLt's: the extension names libcublasLt, and in a
    fresh process every symbol resolves when it is loaded (LD_BIND_NOW=1, so not only at the first
    call on a GPU), with one copy of the library mapped: the one torch's CUDA build loads."""
    import json
    import re
    import shutil
    import subprocess
    import sys
    import cola_fast._C as C
    if shutil.which("readelf") is None:
        pytest.skip("needs readelf")
    dynamic = subprocess.check_output(["readelf", "-d", "--wide", C.__file__], text=True)
    needed = re.findall(r"\(NEEDED\).*\[(.+?)\]", dynamic)
    assert any(n.startswith("libcublasLt.so") for n in needed), needed
    code = ("import json, torch, cola_fast._C\n"
            "maps = open('/proc/self/maps').read().splitlines()\n"
            "print(json.dumps(sorted({ln.split()[-1] for ln in maps if 'libcublasLt.so' in ln})))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(C.__file__)))
    env = dict(os.environ, LD_BIND_NOW="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    mapped = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(mapped) == 1, mapped


def test_avx512_code_only_in_its_own_functions():
    """The mining kernel is compiled once per ISA level under "#pragma GCC target(...)" and
    chosen at run time. That is only safe if no function the linker may share between the
    builds (weak / COMDAT symbols: inline library functions, template instances) holds AVX or
    AVX-512 code (any VEX or EVEX instruction), else a CPU without AVX-512 could run that copy
    from the SSE2 build (tests/test_cpu_isa.py checks each build's own functions)."""
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


@pytest.mark.skipif(__import__("torch").cuda.is_available(),
                    reason="on a GPU the kernels compile and run in the GPU tests themselves")
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
    (the pip build refused and the fallback taken, the test phase through xdist and the live-log
    reader, the end-to-end run with its data made in the background, every benchmark's
    arguments, the summary), so that a typo cannot waste the one GPU call. It holds the
    contract of what comes back from a GPU machine: at most 8 files, at most 2 folders down,
    the summary's table with a row per phase, a default budget of at most 300 s."""
    import re
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "PYTEST_"))}
    env.update(GPU_CHECK_DRY="1", OUT=str(out), PYTHON=sys.executable,
               PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    files = [f for f in out.rglob("*") if f.is_file()]
    assert sorted(f.name for f in files) == ["gpu_check_logs.tgz", "gpu_check_summary.md"], files
    assert len(files) <= 8 and all(len(f.relative_to(out).parts) <= 3 for f in files)  # $OUT/a/b/file at most
    summary = (out / "gpu_check_summary.md").read_text()
    budget = int(re.search(r"budget (\d+) s", summary).group(1))
    assert budget <= 300, summary
    table = dict(re.findall(r"^\| (build|tests|e2e|bench) \| (\w+) \|", summary, re.M))
    assert table == {"build": "ok", "tests": "ok", "e2e": "ok", "bench": "ok"}, summary
    assert "setup.py build_ext --inplace (pip refused)" in summary
    assert re.search(r"\| tests \| ok \| .*passed [1-9]\d*, failed 0", summary), summary
    assert re.search(r"\| e2e \| ok \| .*steps/s", summary), summary
    assert "ok: conv_embed mining snico_fp32 snico_bf16 train_step_fp32 train_step_bf16; failed: none" in summary
    with tarfile.open(out / "gpu_check_logs.tgz") as tgz:
        names = {Path(n).name for n in tgz.getnames()}
    for f in ("gpu_tests.log", "gpu_tests.xml", "e2e.log", "e2e_data.log", "build.log", "gpu_check_summary.md"):
        assert f in names, (f, names)


def test_gpu_check_names_failures_from_a_live_log(tmp_path):
    """A test phase stopped by its cap has no JUnit XML yet: bench/pytest_log.py reads the -v log
    as it stands, xdist's [gwN] prefixes included, and names every failure and the test cut off."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("pytest_log", Path(__file__).resolve().parents[1] / "bench" / "pytest_log.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    log = """created: 8/8 workers
[gw1] [  3%] PASSED tests/test_a.py::test_one
[gw0] [  6%] FAILED tests/test_b.py::test_two[cuda-float32]
[gw0] [  9%] SKIPPED tests/test_b.py::test_three
[gw1] [ 12%] PASSED tests/test_a.py::test_four
[gw1] [ 12%] ERROR tests/test_a.py::test_four
tests/test_c.py::test_five PASSED                                   [ 50%]
tests/test_c.py::test_six """
    head, failing = mod.summary(log)
    assert head == "passed 2, failed 2, skipped 1, unfinished 1"
    assert failing == ["FAILED tests/test_b.py::test_two[cuda-float32]", "ERROR tests/test_a.py::test_four",
                       "UNFINISHED tests/test_c.py::test_six"]
