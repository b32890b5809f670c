"""Build cola_fast and its compiled extension cola_fast._C.

The CPU kernels (csrc/cpu/*.cpp) are always built. The CUDA kernels (csrc/cuda/*.cu)
are built whenever a CUDA toolkit (nvcc) and a CUDA-enabled torch are present, whether
or not a GPU is visible, so that CI compiles and links them on every change.

Switches (environment variables):
  FORCE_ONLY_CPU=1   never build the CUDA kernels
  FORCE_CUDA=1       fail if the CUDA kernels cannot be built
  TORCH_CUDA_ARCH_LIST   defaults to "8.0;9.0" when no GPU is visible
"""
import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _find_cuda_home():
    """The real toolkit root. The nvcc on PATH may be a wrapper script that execs the
    real one (seen on our build machines); torch's guess (the folder above the script)
    is then wrong, so read the script."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and os.path.exists(os.path.join(os.environ[var], "bin", "nvcc")):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        for cand in sorted(glob.glob("/usr/local/cuda*"), reverse=True):
            if os.path.exists(os.path.join(cand, "bin", "nvcc")):
                return cand
        return None
    real = os.path.realpath(nvcc)
    try:
        with open(real, "rb") as f:
            head = f.read(4096)
        if head.startswith(b"#!"):
            for tok in head.decode("utf-8", "ignore").split():
                tok = tok.strip("'\"")
                if tok.endswith("/bin/nvcc") and os.path.exists(tok):
                    return os.path.dirname(os.path.dirname(tok))
    except OSError:
        pass
    return os.path.dirname(os.path.dirname(real))


def _extensions():
    import torch
    from torch.utils import cpp_extension

    cpu_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))

    want_cuda = not _env_flag("FORCE_ONLY_CPU")
    cuda_home = _find_cuda_home() if want_cuda else None
    torch_has_cuda = torch.version.cuda is not None
    build_cuda = bool(want_cuda and cuda_home and torch_has_cuda and cuda_sources)
    if _env_flag("FORCE_CUDA") and not build_cuda:
        sys.exit(
            "FORCE_CUDA=1 but the CUDA kernels cannot be built: "
            f"nvcc toolkit={cuda_home!r}, torch.version.cuda={torch.version.cuda!r}"
        )

    openmp = ["-fopenmp"]
    cxx_flags = ["-O3"] + openmp
    define_macros = []  # torch adds Py_LIMITED_API itself for py_limited_api extensions
    if build_cuda:
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home  # torch caches its own guess at import time
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            try:
                visible = torch.cuda.is_available()
            except Exception:  # noqa: BLE001
                visible = False
            if not visible:
                os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        print(f"[cola_fast] building CPU + CUDA kernels (CUDA_HOME={cuda_home}, "
              f"arch={os.environ.get('TORCH_CUDA_ARCH_LIST', 'detected')})")
        ext = cpp_extension.CUDAExtension(
            "cola_fast._C",
            cpu_sources + cuda_sources,
            define_macros=define_macros + [("COLA_FAST_WITH_CUDA", "1")],
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": ["-O3", "-lineinfo"],
            },
            extra_link_args=openmp,
            py_limited_api=True,
        )
    else:
        why = ("FORCE_ONLY_CPU=1" if not want_cuda else
               "no nvcc found" if not cuda_home else
               "torch is a CPU-only build" if not torch_has_cuda else "no CUDA sources")
        print(f"[cola_fast] building CPU kernels only ({why})")
        ext = cpp_extension.CppExtension(
            "cola_fast._C",
            cpu_sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=openmp,
            py_limited_api=True,
        )
    return [ext], cpp_extension.BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)


ext_modules, build_ext = _extensions()

setup(
    # cola_fast.data.thumos14 holds only data files (read through importlib.resources)
    packages=["cola_fast", "cola_fast.ops", "cola_fast.data", "cola_fast.data.thumos14",
              "cola_fast.evaluation", "cola_fast.kernels"],
    package_dir={"cola_fast.kernels": "kernels"},
    package_data={"cola_fast.data.thumos14": ["*.json", "*.txt"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
