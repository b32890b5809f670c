"""cola_fast.ops.dropout: the fused CPU dropout has torch's dropout's distribution and scaling,
its backward uses the same mask, it is reproducible under torch.manual_seed and independent of
the thread count, and it falls back to torch's dropout where it does not apply."""
import math

import pytest
import torch
import torch.nn.functional as F

from cola_fast.ops import dropout, module

native_available = module("dropout").native_available

needs_native = pytest.mark.skipif(not native_available(), reason="cola_fast._C not built")


@needs_native
@pytest.mark.parametrize("p", [0.1, 0.5, 0.7, 0.95])
def test_keep_rate_and_scale(p):
    torch.manual_seed(0)
    x = torch.rand(2_000_000) + 0.5  # no zeros: out == 0 exactly where dropped
    y = dropout(x, p, True, backend="native")
    kept = y != 0
    n = x.numel()
    rate = kept.double().mean().item()
    assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n), rate  # 5 sigma
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))


@needs_native
def test_mask_has_no_structure():
    """Neighbouring elements and rows are independent: the keep rate conditioned on the
    previous element, and the correlation of row keep counts, match independence."""
    torch.manual_seed(1)
    p = 0.7
    y = dropout(torch.ones(1000, 2048), p, True, backend="native") != 0
    flat = y.flatten().double()
    both = (flat[1:] * flat[:-1]).mean().item()
    assert abs(both - (1 - p) ** 2) < 0.003, both
    rows = y.double().mean(1)
    assert abs(rows.mean().item() - (1 - p)) < 0.003
    assert rows.std().item() < 2 * math.sqrt(p * (1 - p) / 2048)  # no rows systematically off
    cols = y.double().mean(0)
    assert cols.std().item() < 2 * math.sqrt(p * (1 - p) / 1000)


@needs_native
def test_backward_uses_the_forward_mask():
    torch.manual_seed(2)
    x = (torch.rand(3, 50, 64, dtype=torch.float64) + 0.5).requires_grad_(True)
    y = dropout(x, 0.6, True, backend="native")
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, torch.where(y != 0, g / 0.4, torch.zeros_like(g)))


@needs_native
def test_reproducible_and_thread_independent():
    x = torch.randn(4, 300, 257)
    torch.manual_seed(3)
    a = dropout(x, 0.7, True, backend="native")
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(3)
        b = dropout(x, 0.7, True, backend="native")
    finally:
        torch.set_num_threads(n)
    assert torch.equal(a, b)
    c = dropout(x, 0.7, True, backend="native")  # the generator moved on: a new mask
    assert not torch.equal(a, c)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_and_noncontiguous(dtype):
    torch.manual_seed(4)
    x = (torch.rand(40, 30) + 0.5).to(dtype).t()  # non-contiguous
    y = dropout(x, 0.5, True, backend="native")
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    torch.testing.assert_close(y[kept], (x[kept].double() * 2).to(dtype))


def test_eval_identity_and_edge_probabilities():
    x = torch.randn(5, 7)
    assert dropout(x, 0.7, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))
    with pytest.raises(ValueError):
        dropout(x, 1.5)
    with pytest.raises(TypeError):
        dropout([1.0], 0.5)


def test_reference_backend_is_torch_dropout():
    x = torch.randn(6, 9)
    torch.manual_seed(5)
    a = dropout(x, 0.3, True, backend="reference")
    torch.manual_seed(5)
    b = F.dropout(x, 0.3, True)
    assert torch.equal(a, b)


@needs_native
def test_opcheck():
    x = torch.randn(3, 8, requires_grad=True)
    torch.library.opcheck(torch.ops.cola_fast.dropout_fwd.default, (x, 0.4, 123))
