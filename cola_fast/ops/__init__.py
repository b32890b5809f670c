"""The public functional API of the fused ops.

Each op takes backend= "auto" | "reference" | "native" | "triton" (default: the
environment variable COLA_FAST_BACKEND, else "auto"); see cola_fast.ops._backend. "auto"
chooses by measurement, per shape class, among the implementations that match the reference
(cola_fast.ops._autotune; `describe()` lists the choices made so far).

One module per op, named as the op: temporal_conv_embed, mine_snippets, snico_loss,
classifier_1x1, dropout. Each module's function is exported here under the same name, so
the attribute cola_fast.ops.<op> is the function and shadows the module: `from cola_fast.ops
import temporal_conv_embed` and `import cola_fast.ops.temporal_conv_embed as m` both give the
function. To reach an op's module (its run(), candidates(), shape_class(), ...) use
`module("temporal_conv_embed")`: importlib.import_module, which looks the module up by its
full name in sys.modules and is never shadowed. That is the one way, everywhere.
"""
import importlib

from ._backend import BACKENDS, BackendUnavailable, _native_status, cap_onednn, cpu_isa, describe, gemm_libraries, resolve

cap_onednn()  # before anything runs oneDNN: $COLA_FAST_CPU_ISA caps oneDNN too
from .classifier_1x1 import classifier_1x1
from .dropout import dropout
from .mine_snippets import mine_snippets, mining_cpu_isa
from .snico_loss import snico_loss
from .temporal_conv_embed import temporal_conv_embed

OPS = ("temporal_conv_embed", "mine_snippets", "snico_loss", "classifier_1x1", "dropout")


def module(op: str):
    """The module of op (one of OPS), e.g. module("snico_loss").check_index_errors."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; the ops are {', '.join(OPS)}")
    return importlib.import_module(f"cola_fast.ops.{op}")


# Load cola_fast._C now: one loud NativeExtensionWarning at import when it cannot be used,
# rather than a silent fall-back to the reference ops at the first call.
_native_status()
# Which GEMM libraries the native CPU conv may use here: a probe now, so that auto's candidates are
# what this CPU can run (never an error met while tuning). `python -m cola_fast.info` says why one is missing.
gemm_libraries()

__all__ = ["BACKENDS", "BackendUnavailable", "OPS", "classifier_1x1", "cpu_isa", "describe", "gemm_libraries",
           "module", "resolve", "dropout", "mine_snippets", "mining_cpu_isa", "snico_loss", "temporal_conv_embed"]
