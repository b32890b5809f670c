"""Import of the Triton kernels package, cola_fast.kernels. In a source checkout (the top-level
kernels/ folder beside the package, used with PYTHONPATH=repo or an editable install) that
folder is loaded; in an installed wheel, setup.py has mapped it to cola_fast.kernels.

The checkout's folder comes first: an editable install of another checkout in the same
environment would otherwise serve its kernels to this checkout's package."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ROOT = os.path.join(_CHECKOUT, "kernels")


def _in_checkout() -> bool:
    """Whether the package runs from a source checkout (pyproject.toml and kernels/ beside it),
    not from site-packages (where an unrelated top-level "kernels" package may live)."""
    return (os.path.isfile(os.path.join(_CHECKOUT, "pyproject.toml"))
            and os.path.isfile(os.path.join(_ROOT, "temporal_conv_embed.py")))


def _load_checkout_kernels() -> None:
    spec = importlib.util.spec_from_file_location(
        "cola_fast.kernels", os.path.join(_ROOT, "__init__.py"), submodule_search_locations=[_ROOT])
    if spec is None:
        raise ModuleNotFoundError("cola_fast.kernels (the Triton kernels) not found")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cola_fast.kernels"] = mod
    spec.loader.exec_module(mod)


def kernels_module(name: str):
    """cola_fast.kernels.<name>, importing triton on first use."""
    if "cola_fast.kernels" not in sys.modules and _in_checkout():
        _load_checkout_kernels()
    return importlib.import_module(f"cola_fast.kernels.{name}")
