"""Packaging: the sdist holds every source and header, a wheel built from it
installs and loads its extension, an isolated build stops at once with the command to use,
and an extension that cannot be used gives one loud warning with the reason and the fix.

The wheel test compiles the CPU kernels (FORCE_ONLY_CPU=1: minutes on 2 cores), so it
runs only with COLA_FAST_TEST_WHEEL=1; the other tests always run."""
import os
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked(*patterns) -> list:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout: cannot list the tracked sources")
    return out.stdout.split()


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist, made as `python -m build --sdist` makes it (setuptools' sdist command),
    in a clean copy of the checkout's files: a leftover cola_fast.egg-info/SOURCES.txt
    would otherwise add files that MANIFEST.in forgets."""
    import shutil
    src = tmp_path_factory.mktemp("src")
    for f in _tracked("-co", "--exclude-standard"):
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(out)], cwd=src,
                       capture_output=True, text=True, env=dict(os.environ, FORCE_ONLY_CPU="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    (tgz,) = out.glob("cola_fast-*.tar.gz")
    return tgz


def test_sdist_holds_every_kernel_source_and_header(sdist):
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    needed = _tracked("csrc", "kernels", "cola_fast/*.py", "cola_fast/**/*.py", "cola_fast/data/thumos14",
                      "setup.py", "pyproject.toml", "MANIFEST.in", "README.md")
    assert "csrc/cpu/mine_snippets_impl.h" in needed
    missing = sorted(set(needed) - names)
    assert not missing, f"the sdist lacks {missing}"
    assert not [n for n in names if n.endswith((".so", ".pyc")) or n.endswith("_build_info.py")]


def test_isolated_build_without_torch_stops_with_the_command_to_use(tmp_path):
    """What pip's isolated build environment looks like to setup.py: no torch. The
    metadata step of an editable or wheel build (dist_info) must stop, naming
    --no-build-isolation; making the sdist's metadata (egg_info) must still work."""
    hide = tmp_path / "hide" / "torch"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    env = dict(os.environ, PYTHONPATH=str(hide.parent))
    r = subprocess.run([sys.executable, "setup.py", "dist_info", "--output-dir", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert "pip install --no-build-isolation -e ." in r.stderr + r.stdout
    r = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]


def test_build_requirements_are_declared_and_torch_is_not():
    import tomllib
    req = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    names = {r.split(">")[0].split("=")[0].strip() for r in req}
    assert {"setuptools", "wheel"} <= names and "torch" not in names


@pytest.fixture
def fresh_native_status(monkeypatch):
    """_native_status re-evaluated under the test's monkeypatches, and again afterwards."""
    from cola_fast.ops import _backend
    _backend._native_status.cache_clear()
    yield _backend
    monkeypatch.undo()
    _backend._native_status.cache_clear()
    _backend._RESOLVED.clear()


def test_extension_that_fails_to_load_warns_with_reason_and_fix(fresh_native_status, monkeypatch):
    import cola_fast
    _backend = fresh_native_status
    monkeypatch.setitem(sys.modules, "cola_fast._C", None)  # the import raises ImportError
    monkeypatch.delattr(cola_fast, "_C", raising=False)
    fake = type(sys)("cola_fast._build_info")
    fake.TORCH_VERSION, fake.CUDA_VERSION = "2.0.0+cu118", "11.8"
    monkeypatch.setitem(sys.modules, "cola_fast._build_info", fake)
    monkeypatch.delattr(cola_fast, "_build_info", raising=False)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        ok, _, why = _backend._native_status()
        _backend._native_status()  # cached: no second warning
    assert not ok
    msgs = [str(w.message) for w in got if issubclass(w.category, _backend.NativeExtensionWarning)]
    assert len(msgs) == 1, msgs
    assert "failed to load" in msgs[0] and "built against torch 2.0.0+cu118 (CUDA 11.8)" in msgs[0]
    assert "pip install --no-build-isolation -e ." in msgs[0] and "reference" in msgs[0]


def test_extension_built_against_another_torch_is_said_clearly(fresh_native_status, monkeypatch):
    import cola_fast
    import torch
    _backend = fresh_native_status
    fake = type(sys)("cola_fast._build_info")
    fake.TORCH_VERSION, fake.CUDA_VERSION = "1.13.0", None
    monkeypatch.setitem(sys.modules, "cola_fast._build_info", fake)
    monkeypatch.delattr(cola_fast, "_build_info", raising=False)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        ok, _, _ = _backend._native_status()
    assert ok  # it loaded, but the user is told
    msgs = [str(w.message) for w in got if issubclass(w.category, _backend.NativeExtensionWarning)]
    assert len(msgs) == 1 and "built against torch 1.13.0" in msgs[0] and torch.__version__ in msgs[0]
    # the same versions: silent
    fake.TORCH_VERSION, fake.CUDA_VERSION = torch.__version__, torch.version.cuda
    _backend._native_status.cache_clear()
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        _backend._native_status()
    assert not [w for w in got if issubclass(w.category, _backend.NativeExtensionWarning)]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("COLA_FAST_TEST_WHEEL") != "1",
                    reason="compiles the extension (minutes): set COLA_FAST_TEST_WHEEL=1")
def test_wheel_from_the_sdist_installs_and_loads(sdist, tmp_path):
    env = dict(os.environ, FORCE_ONLY_CPU="1")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                        "-w", str(tmp_path / "wheels"), str(sdist)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    (whl,) = (tmp_path / "wheels").glob("cola_fast-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert any(n.startswith("cola_fast/_C") and n.endswith(".so") for n in names)
    assert "cola_fast/_build_info.py" in names and "cola_fast/kernels/__init__.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                        str(whl)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    check = ("import warnings; warnings.simplefilter('error');"
             "import torch, cola_fast, cola_fast.ops as o, cola_fast._build_info as b;"
             "print(cola_fast.__file__); assert o.describe()['native'];"
             "assert b.TORCH_VERSION == torch.__version__, b.TORCH_VERSION;"
             "assert torch._C._dispatch_has_kernel_for_dispatch_key('cola_fast::mine_snippets', 'CPU')")
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(target)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().startswith(str(target)), r.stdout
    assert (target / "bin" / "cola-fast-train").exists()
