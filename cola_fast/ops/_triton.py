"""Import of the Triton kernels package, installed as cola_fast.kernels (setup.py maps
the top-level kernels/ folder there). In a source checkout used without installation
(PYTHONPATH=repo) the folder is loaded from beside the package."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys


def kernels_module(name: str):
    """cola_fast.kernels.<name>, importing triton on first use."""
    try:
        return importlib.import_module(f"cola_fast.kernels.{name}")
    except ModuleNotFoundError as e:
        if e.name not in ("cola_fast.kernels", f"cola_fast.kernels.{name}"):
            raise
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "kernels")
    if "cola_fast.kernels" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "cola_fast.kernels", os.path.join(root, "__init__.py"), submodule_search_locations=[root])
        if spec is None:
            raise ModuleNotFoundError("cola_fast.kernels (the Triton kernels) not found")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["cola_fast.kernels"] = mod
        spec.loader.exec_module(mod)
    return importlib.import_module(f"cola_fast.kernels.{name}")
