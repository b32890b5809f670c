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


@pytest.mark.skipif(os.environ.get("COLA_FAST_EXPECT_CUDA_BUILD") != "1",
                    reason="CUDA build not expected here (no nvcc, or FORCE_ONLY_CPU)")
def test_cuda_kernels_compiled_and_linked():
    import cola_fast._C as C  # noqa: F401
    from cola_fast.ops import describe
    assert describe()["native_cuda"], "the extension was built without its CUDA kernels"
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"cola_fast::{op}", "CUDA"), op
