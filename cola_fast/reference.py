"""The pure-PyTorch oracle of every cola_fast op, written to read like COLA_SPEC.md.

Every fast backend (C++ CPU, CUDA, Triton) is tested against the functions here, and
these are tested against independent oracles (scipy.ndimage, numpy, plain loops).
Nothing here is tuned for speed: clarity and the spec's exact rules come first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "topk_indices",
    "median",
    "binary_erosion",
    "binary_dilation",
    "hard_masks",
    "mine_easy",
    "mine_hard",
    "mine_snippets",
    "info_nce",
    "snico_loss",
    "temporal_conv_embed",
    "video_scores",
    "action_loss",
]


# --------------------------------------------------------------------------------------
# Top-k with the spec's tie rule (COLA_SPEC 2, "Top-k rule")
# --------------------------------------------------------------------------------------
def topk_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest values of each row of x (B,T): ordered by value
    descending, equal values by lower time index first. A stable descending sort
    keeps equal values in index order, which is exactly that rule."""
    if x.dim() != 2:
        raise ValueError(f"topk_indices expects (B,T), got shape {tuple(x.shape)}")
    T = x.shape[1]
    if not 0 <= k <= T:
        raise ValueError(f"k={k} must lie in [0, T={T}]")
    order = torch.sort(x, dim=1, descending=True, stable=True).indices
    return order[:, :k].contiguous()


# --------------------------------------------------------------------------------------
# Hard-snippet masks (COLA_SPEC 2.2)
# --------------------------------------------------------------------------------------
def median(x: torch.Tensor) -> torch.Tensor:
    """Row median of (B,T); the mean of the two middle values when T is even (numpy's
    rule; torch.median would return the lower one)."""
    s = torch.sort(x, dim=1).values
    T = x.shape[1]
    return 0.5 * (s[:, (T - 1) // 2] + s[:, T // 2])


def _window_count(b: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """For each i, the number of ones of b (B,T) in [i - left, i + right], positions
    outside [0, T) counting as 0."""
    B, T = b.shape
    padded = F.pad(b.to(torch.int64), (left, right))  # zeros outside
    return padded.unfold(1, left + right + 1, 1).sum(-1)


def binary_erosion(b: torch.Tensor, s: int) -> torch.Tensor:
    """scipy.ndimage.binary_erosion(b, np.ones((1, s))) row by row: AND over
    [i - c, i + s - 1 - c] with c = s // 2, outside counting as 0."""
    c = s // 2
    return (_window_count(b, c, s - 1 - c) == s).to(b.dtype)


def binary_dilation(b: torch.Tensor, s: int) -> torch.Tensor:
    """scipy.ndimage.binary_dilation(b, np.ones((1, s))) row by row: OR over
    [i - (s - 1 - c), i + c] with c = s // 2 (the structure is mirrored)."""
    c = s // 2
    return (_window_count(b, s - 1 - c, c) > 0).to(b.dtype)


def hard_masks(actionness: torch.Tensor, m: int = 3, M: int = 6):
    """The inner and outer bands of COLA_SPEC 2.2 as 0/1 tensors of actionness's dtype."""
    if not 0 < m < M:
        raise ValueError(f"need 0 < m < M, got m={m}, M={M}")
    med = median(actionness)
    binary = (actionness > med[:, None]).to(actionness.dtype)
    inner = binary_erosion(binary, m) - binary_erosion(binary, M)
    outer = binary_dilation(binary, M) - binary_dilation(binary, m)
    return inner, outer


# --------------------------------------------------------------------------------------
# Mining (COLA_SPEC 2.1 and 2.2)
# --------------------------------------------------------------------------------------
def mine_easy(actionness: torch.Tensor, keep: torch.Tensor, k_easy: int):
    keep = keep.to(actionness.dtype)
    ea = topk_indices(actionness * keep, k_easy)
    inverted = actionness.max(dim=1, keepdim=True).values - actionness
    eb = topk_indices(inverted * keep, k_easy)
    return ea, eb


def mine_hard(actionness: torch.Tensor, k_hard: int, m: int = 3, M: int = 6):
    inner, outer = hard_masks(actionness, m, M)
    ha = topk_indices(actionness * inner, k_hard)
    hb = topk_indices(actionness * outer, k_hard)
    return ha, hb


def mine_snippets(actionness: torch.Tensor, keep: torch.Tensor, k_easy: int, k_hard: int,
                  m: int = 3, M: int = 6):
    """(EA, EB, HA, HB), int64 index tensors (B,k_easy), (B,k_easy), (B,k_hard), (B,k_hard).
    Not differentiated: mining only selects indices."""
    with torch.no_grad():
        a = actionness.detach()
        ea, eb = mine_easy(a, keep, k_easy)
        ha, hb = mine_hard(a, k_hard, m, M)
    return ea, eb, ha, hb


# --------------------------------------------------------------------------------------
# Losses (COLA_SPEC 3)
# --------------------------------------------------------------------------------------
def _gather(emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """emb (B,T,D), idx (B,k) -> (B,k,D)."""
    return torch.gather(emb, 1, idx[:, :, None].expand(-1, -1, emb.shape[2]))


def normalize(x: torch.Tensor, dim: int, eps: float = 1e-12) -> torch.Tensor:
    """F.normalize(x, dim=dim, eps=eps), x / max(|x|, eps), with a norm that does not overflow:
    |x| is computed on x divided by its largest magnitude along dim (the scaled norm), so that
    float32 vectors of scale 1e20 and beyond (whose squares overflow) are normalised exactly
    rather than to 0. The scale is a constant for autograd (the value does not depend on it)."""
    s = x.detach().abs().amax(dim=dim, keepdim=True)
    s = torch.where(s > 0, s, torch.ones_like(s))
    xs = x / s
    return xs / torch.maximum(torch.linalg.vector_norm(xs, dim=dim, keepdim=True), eps / s)


def info_nce(q: torch.Tensor, k: torch.Tensor, neg: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """q, k (B,D), neg (B,N,D): cross-entropy of [q.k, q.neg_1..N]/tau against target 0,
    every vector L2-normalised first (normalize above); mean over B."""
    q = normalize(q, dim=1)
    k = normalize(k, dim=1)
    neg = normalize(neg, dim=2)
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = torch.einsum("bd,bnd->bn", q, neg)
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


def snico_loss(emb: torch.Tensor, ea: torch.Tensor, eb: torch.Tensor, ha: torch.Tensor,
               hb: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """NCE(mean emb[HA], mean emb[EA], emb[EB]) + NCE(mean emb[HB], mean emb[EB], emb[EA])."""
    e_ea, e_eb = _gather(emb, ea), _gather(emb, eb)
    e_ha, e_hb = _gather(emb, ha), _gather(emb, hb)
    return (info_nce(e_ha.mean(1), e_ea.mean(1), e_eb, tau)
            + info_nce(e_hb.mean(1), e_eb.mean(1), e_ea, tau))


# --------------------------------------------------------------------------------------
# Temporal conv embedding (COLA_SPEC 2)
# --------------------------------------------------------------------------------------
def temporal_conv_embed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """ReLU(Conv1d(x)) on channels-last x (B,T,Cin); weight (Cout,Cin,K) with K odd,
    zero padding K//2 per video. Returns (B,T,Cout)."""
    K = weight.shape[2]
    if K % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {K}")
    B, T, Cin = x.shape
    Cout = weight.shape[0]
    if B * T == 0 or Cin == 0 or Cout == 0:
        return _conv_embed_empty(x, weight, bias)
    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=K // 2)
    return F.relu(y).transpose(1, 2).contiguous()


def _conv_embed_empty(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The conv with an empty dimension, by its definition (torch's conv1d refuses T < K//2+1
    and Cout = 0, and returns a (B,0,T) result for Cin = 0): (B,T,Cout), every output the
    ReLU of the bias (a sum over no channels or taps), zero gradients for x and weight."""
    B, T, _ = x.shape
    # 0 * sums keep x and weight in the graph, so that their gradients are zeros, not None
    zero = (x.sum() + weight.sum()) * 0
    pre = zero.expand(B, T, weight.shape[0])
    if bias is not None:
        pre = pre + bias
    return F.relu(pre).contiguous()


# --------------------------------------------------------------------------------------
# Video scores and action loss (COLA_SPEC 2.3, 3)
# --------------------------------------------------------------------------------------
def video_scores(cas: torch.Tensor, k_easy: int) -> torch.Tensor:
    """softmax over classes of the mean of the k_easy largest cas values along t."""
    topk = torch.topk(cas, k_easy, dim=1).values
    return torch.softmax(topk.mean(dim=1), dim=1)


def action_loss(scores: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """BCE(video_scores, label / sum(label)), mean over B*C."""
    y = label / label.sum(dim=1, keepdim=True)
    return F.binary_cross_entropy(scores, y)
