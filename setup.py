"""Build cola_fast and its compiled extension cola_fast._C.

The extension is compiled against the torch that is installed, and must run with that
same torch. Build it without build isolation (an isolated build would compile against a
fresh torch downloaded into a throw-away environment):

    pip install --no-build-isolation -e .                    # from a clone
    pip install --no-build-isolation cola_fast-<v>.tar.gz     # from the sdist
    python -m build --no-isolation                           # sdist and wheel

Without an importable torch the metadata and the sdist are still made; anything that
compiles (including pip's metadata step before an editable or wheel build) stops at once
with the command to use. Next to the extension, cola_fast/_build_info.py records the
torch and CUDA versions it was built against (checked when cola_fast.ops is imported).

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


def _cublaslt(cuda_home):
    """(include_dirs, extra_link_args) for cuBLASLt (csrc/cuda/temporal_conv_embed.cu), or None.

    The library is the one torch's CUDA build loads: the nvidia-* wheel beside torch when there is
    one (site-packages/nvidia/*/lib, torch's own rpath), else torch/lib or the toolkit's lib64. The
    wheel ships libcublasLt.so.<major> without the unversioned link, hence -l:<file name>; an rpath
    to its folder lets a fresh process resolve it even before torch has loaded it. The header
    comes from the same place; the toolkit here lacks cublas headers, and the wheel's include folder
    also holds its own copies of the toolkit's headers, so only cublasLt.h and cublas_api.h are
    linked into a private folder (build/cublaslt_include) on the include path."""
    import torch
    site = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
    places = sorted(glob.glob(os.path.join(site, "nvidia", "*"))) + [os.path.join(site, "torch")]
    places += [cuda_home] if cuda_home else []
    for root in places:
        libs = [p for d in ("lib", "lib64") for p in glob.glob(os.path.join(root, d, "libcublasLt.so*"))]
        if not libs:
            continue
        lib = min(libs, key=len)  # libcublasLt.so, else libcublasLt.so.<major>
        inc = next((d for d in (os.path.join(root, "include"), os.path.join(cuda_home or "", "include"))
                    if os.path.exists(os.path.join(d, "cublasLt.h"))), None)
        if inc is None:
            continue
        private = os.path.join(ROOT, "build", "cublaslt_include")
        os.makedirs(private, exist_ok=True)
        for h in ("cublasLt.h", "cublas_api.h"):
            dst = os.path.join(private, h)
            if os.path.lexists(dst):
                os.remove(dst)
            os.symlink(os.path.join(inc, h), dst)
        libdir = os.path.dirname(lib)
        return [private], [f"-L{libdir}", f"-l:{os.path.basename(lib)}", f"-Wl,-rpath,{libdir}"]
    return None


def _extensions():
    import torch
    from torch.utils import cpp_extension

    cpu_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))

    want_cuda = not _env_flag("FORCE_ONLY_CPU")
    cuda_home = _find_cuda_home() if want_cuda else None
    torch_has_cuda = torch.version.cuda is not None
    cublaslt = _cublaslt(cuda_home) if (want_cuda and cuda_home and torch_has_cuda) else None
    build_cuda = bool(want_cuda and cuda_home and torch_has_cuda and cuda_sources and cublaslt)
    if _env_flag("FORCE_CUDA") and not build_cuda:
        sys.exit(
            "FORCE_CUDA=1 but the CUDA kernels cannot be built: "
            f"nvcc toolkit={cuda_home!r}, torch.version.cuda={torch.version.cuda!r}, "
            f"cuBLASLt (library and cublasLt.h) found: {cublaslt is not None}"
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
            include_dirs=cublaslt[0],
            define_macros=define_macros + [("COLA_FAST_WITH_CUDA", "1")],
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": ["-O3", "-lineinfo"],
            },
            extra_link_args=openmp + cublaslt[1],
            py_limited_api=True,
        )
    else:
        why = ("FORCE_ONLY_CPU=1" if not want_cuda else
               "no nvcc found" if not cuda_home else
               "torch is a CPU-only build" if not torch_has_cuda else
               "no CUDA sources" if not cuda_sources else "cuBLASLt (library and cublasLt.h) not found")
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


# setup.py commands that compile the extension or prepare a wheel / editable install of it
_NEEDS_TORCH = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "dist_info",
                "bdist_egg"}

NO_TORCH_MESSAGE = """
cola_fast compiles a C++/CUDA extension against the torch it will run with, and torch
cannot be imported here ({error}).

If you ran `pip install -e .` or `pip install .`: pip builds in an isolated environment
without your torch. Build against your installed torch instead:

    pip install --no-build-isolation -e .        # from a clone (this is the command to use)
    pip install --no-build-isolation cola_fast-<version>.tar.gz   # from the sdist
    python -m build --no-isolation               # to make the sdist and the wheel

If torch is not installed yet, install it first (pip install torch), then run one of the
commands above. Add FORCE_ONLY_CPU=1 to build the CPU kernels only (faster).
"""


def _write_build_info(directory: str, with_cuda: bool) -> None:
    """cola_fast/_build_info.py next to the built extension: the versions it was built
    against, for the check in cola_fast.ops._backend."""
    import torch
    text = ("# Written by setup.py when cola_fast._C was compiled (not in git). cola_fast.ops compares\n"
            "# these with the running torch and warns when they differ.\n"
            f"TORCH_VERSION = {torch.__version__!r}\n"
            f"CUDA_VERSION = {torch.version.cuda!r}  # torch.version.cuda of the build's torch\n"
            f"WITH_CUDA_KERNELS = {bool(with_cuda)!r}\n")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "_build_info.py"), "w") as f:
        f.write(text)


def _recording(build_ext_cls, with_cuda: bool):
    """build_ext_cls that also writes _build_info.py beside the extension it builds."""

    class BuildExtRecordingVersions(build_ext_cls):
        def run(self):
            super().run()
            _write_build_info(os.path.dirname(self.get_ext_fullpath("cola_fast._C")), with_cuda)

    return BuildExtRecordingVersions


def _torch_or_exit():
    """ext_modules and cmdclass when torch is importable. Without torch: nothing to
    compile for sdist / egg_info; a clear stop for every command that would compile."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        if _NEEDS_TORCH & set(sys.argv[1:]):
            sys.exit(NO_TORCH_MESSAGE.format(error=e))
        return [], {}
    exts, build_ext = _extensions()
    with_cuda = any("COLA_FAST_WITH_CUDA" in dict(e.define_macros) for e in exts)
    return exts, {"build_ext": _recording(build_ext, with_cuda)}


ext_modules, cmdclass = _torch_or_exit()

setup(
    # cola_fast.data.thumos14 holds only data files (read through importlib.resources)
    packages=["cola_fast", "cola_fast.ops", "cola_fast.data", "cola_fast.data.thumos14",
              "cola_fast.evaluation", "cola_fast.kernels"],
    package_dir={"cola_fast.kernels": "kernels"},
    package_data={"cola_fast.data.thumos14": ["*.json", "*.txt"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
