"""The CoLA model and loss where the pieces meet (model.py + ops/ + reference.py), in train
and eval mode, against a plain re-statement of COLA_SPEC 2-3 written here from the spec
alone: torch conv1d for the convolutions, Python sorts for the top-k rule, numpy for the
median, scipy.ndimage for erosion and dilation, plain loops for InfoNCE.

The dropout mask is fixed (a known 0/1 mask replaces the random one), the keep mask of
easy mining is read where the model hands it to the mining op (a spy that calls the real
op), so every step of a training forward can be recomputed from the spec:
what the classifier sees, what SniCo sees, the keep rate, k_easy / k_hard, the video
scores, the mined indices, the action loss, the total loss and its gradient.
"""
import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

import cola_fast.ops as cf_ops
from cola_fast import reference
from cola_fast.model import CoLA, CoLALoss, ModelConfig

# the model's two code paths: the pure-PyTorch one and the fused ops (native on the CPU)
BACKENDS = ["reference", None]


# --------------------------------------------------------------------------------------
# COLA_SPEC 2-3, re-stated
# --------------------------------------------------------------------------------------
def spec_embed(x, w, b):
    """Conv1d(D->E, kernel K, padding K//2, bias) then ReLU, on (B,T,D) -> (B,T,E)."""
    return F.relu(F.conv1d(x.transpose(1, 2), w, b, padding=w.shape[2] // 2)).transpose(1, 2)


def spec_cas(h, model):
    """Classifier then ReLU on the (dropped-out) embeddings h (B,T,E) -> (B,T,C)."""
    y = F.conv1d(h.transpose(1, 2), model.classifier.weight, padding=model.classifier.weight.shape[2] // 2)
    if model.depthwise is not None:
        dw = model.depthwise.weight
        y = F.conv1d(y, dw, padding=6, dilation=2, groups=dw.shape[0])
    return F.relu(y).transpose(1, 2)


def spec_topk(values, k):
    """Value descending, equal values lower time index first, the first k."""
    v = [float(a) for a in values]
    return sorted(range(len(v)), key=lambda t: (-v[t], t))[:k]


def spec_mining(act, keep, k_easy, k_hard, m, M):
    """COLA_SPEC 2.1 and 2.2 for one video: act, keep 1-D numpy -> EA, EB, HA, HB lists."""
    ea = spec_topk(act * keep, k_easy)
    eb = spec_topk((act.max() - act) * keep, k_easy)
    binary = (act > np.median(act))[None, :]
    ero = {s: scipy.ndimage.binary_erosion(binary, np.ones((1, s)))[0].astype(np.int64) for s in (m, M)}
    dil = {s: scipy.ndimage.binary_dilation(binary, np.ones((1, s)))[0].astype(np.int64) for s in (m, M)}
    inner, outer = ero[m] - ero[M], dil[M] - dil[m]
    assert inner.min() >= 0 and outer.min() >= 0
    return ea, eb, spec_topk(act * inner, k_hard), spec_topk(act * outer, k_hard)


def spec_video_scores(cas, k):
    """softmax over classes of the mean of the k largest cas values along t, per class."""
    top = torch.stack([torch.stack([cas[b, :, c].sort(descending=True).values[:k].mean()
                                    for c in range(cas.shape[2])]) for b in range(cas.shape[0])])
    return torch.softmax(top, dim=1)


def spec_action_loss(scores, label):
    y = label / label.sum(dim=1, keepdim=True)
    return -(y * torch.log(scores) + (1 - y) * torch.log(1 - scores)).mean()


def _unit(v):
    return v / torch.clamp(torch.sqrt((v * v).sum()), min=1e-12)


def spec_nce(q, k, negs, tau):
    """One video: cross-entropy of [q.k, q.neg_1..N] / tau against target 0."""
    q, k = _unit(q), _unit(k)
    logits = torch.stack([q @ k] + [q @ _unit(n) for n in negs]) / tau
    return torch.logsumexp(logits, 0) - logits[0]


def spec_snico(emb, ea, eb, ha, hb, tau):
    terms = []
    for b in range(emb.shape[0]):
        e = emb[b]
        t1 = spec_nce(e[ha[b]].mean(0), e[ea[b]].mean(0), [e[t] for t in eb[b]], tau)
        t2 = spec_nce(e[hb[b]].mean(0), e[eb[b]].mean(0), [e[t] for t in ea[b]], tau)
        terms.append((t1, t2))
    return sum(t1 for t1, _ in terms) / len(terms) + sum(t2 for _, t2 in terms) / len(terms)


# --------------------------------------------------------------------------------------
# fixed dropout mask, keep-mask spy
# --------------------------------------------------------------------------------------
class FixedDropout(torch.nn.Module):
    """Dropout with a given 0/1 mask: x * mask / (1 - p) when training, x otherwise."""

    def __init__(self, mask, p):
        super().__init__()
        self.mask, self.p, self.calls = mask, p, []

    def forward(self, x):
        return self.drop(x, self.p, self.training)

    def drop(self, x, p, training=True, backend=None):
        self.calls.append((p, training))
        return x * self.mask.to(x.dtype) / (1 - p) if training else x


def fix_dropout(model, monkeypatch, mask):
    """Both dropout call sites of the model (nn.Dropout on the reference path, ops.dropout
    on the fused path) use the given mask."""
    fd = FixedDropout(mask, model.cfg.dropout)
    fd.train(model.training)
    model.dropout = fd
    monkeypatch.setattr(cf_ops, "dropout", fd.drop)
    return fd


def spy_mining(monkeypatch):
    """Record every (actionness, keep, k_easy, k_hard, m, M) the model gives the mining op:
    ops.mine_snippets on the fused path, reference.mine_snippets on the reference path (the
    reference calls made inside ops.mine_snippets, by backend="auto"'s measurement on random
    inputs or as its choice, are the op's own business)."""
    seen, inside = [], [False]
    real_ops, real_ref = cf_ops.mine_snippets, reference.mine_snippets

    def ops_spy(actionness, keep, k_easy, k_hard, m=3, M=6, backend=None):
        seen.append((actionness.clone(), keep.clone(), k_easy, k_hard, m, M))
        inside[0] = True
        try:
            return real_ops(actionness, keep, k_easy, k_hard, m, M, backend=backend)
        finally:
            inside[0] = False

    def ref_spy(actionness, keep, k_easy, k_hard, m=3, M=6):
        if not inside[0]:
            seen.append((actionness.clone(), keep.clone(), k_easy, k_hard, m, M))
        return real_ref(actionness, keep, k_easy, k_hard, m, M)

    monkeypatch.setattr(cf_ops, "mine_snippets", ops_spy)
    monkeypatch.setattr(reference, "mine_snippets", ref_spy)
    return seen


def _model(backend, classifier="thumos", kernel=3, D=6, C=4, E=10, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(feature_dim=D, num_classes=C, embed_dim=E, embed_kernel=kernel, classifier=classifier, **kw)
    return CoLA(cfg, backend=backend).double()


# --------------------------------------------------------------------------------------
# the training forward, step by step
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("classifier,kernel,T", [("thumos", 3, 49), ("thumos", 3, 60), ("anet", 9, 59)])
def test_train_forward_step_by_step(backend, classifier, kernel, T, monkeypatch):
    B, D, C, E = 3, 6, 4, 10
    model = _model(backend, classifier, kernel, D, C, E).train()
    g = torch.Generator().manual_seed(T)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, E, generator=g) > 0.7).double()
    fd = fix_dropout(model, monkeypatch, mask)
    seen = spy_mining(monkeypatch)
    out = model(x)

    # the embedding SniCo sees is the conv output, never the dropped-out one
    emb = spec_embed(x, model.embed_weight, model.embed_bias)
    torch.testing.assert_close(out["embeddings"], emb, rtol=1e-12, atol=1e-12)
    # the classifier sees emb * mask / (1 - 0.7)
    assert fd.calls == [(0.7, True)]
    cas = spec_cas(emb * mask / 0.3, model)
    torch.testing.assert_close(out["cas"], cas, rtol=1e-12, atol=1e-12)
    act = cas.sum(2)
    torch.testing.assert_close(out["actionness"], act, rtol=1e-12, atol=1e-12)
    # k_easy = T // r_easy (5), k_hard = T // r_hard (20)
    k_easy, k_hard = T // 5, T // 20
    torch.testing.assert_close(out["video_scores"], spec_video_scores(cas, k_easy), rtol=1e-12, atol=1e-12)
    assert out["ea"].shape == out["eb"].shape == (B, k_easy)
    assert out["ha"].shape == out["hb"].shape == (B, k_hard)

    # mining: one call, on the actionness, with a 0/1 keep mask, the spec's k and windows
    assert len(seen) == 1
    a_seen, keep, ke, kh, m, M = seen[0]
    assert (ke, kh, m, M) == (k_easy, k_hard, 3, 6)
    torch.testing.assert_close(a_seen, act, rtol=1e-12, atol=1e-12)
    assert set(keep.unique().tolist()) <= {0.0, 1.0}
    for b in range(B):
        want = spec_mining(act[b].detach().numpy(), keep[b].double().numpy(), k_easy, k_hard, 3, 6)
        for name, w in zip(("ea", "eb", "ha", "hb"), want):
            assert out[name][b].tolist() == w, (name, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_keep_mask_rate_and_eval_keep(backend, monkeypatch):
    """keep ~ Bernoulli(0.4) per (b, t) in training; keep = 1 when mining in eval mode."""
    model = _model(backend, D=4, C=3, E=6)
    seen = spy_mining(monkeypatch)
    torch.manual_seed(5)
    model.train()(torch.randn(32, 500, 4, dtype=torch.float64))
    keep = seen[-1][1]
    assert keep.shape == (32, 500)
    # 16000 draws: the rate is 0.4 +- 0.0039 (1 sd); 0.6 (the published dropout p) or 1 fail
    assert abs(keep.double().mean().item() - 0.4) < 0.02
    # not one mask repeated over the batch: rows differ
    assert not torch.equal(keep[0], keep[1])
    model.eval()(torch.randn(2, 40, 4, dtype=torch.float64), mine=True)
    assert torch.equal(seen[-1][1], torch.ones(2, 40, dtype=seen[-1][1].dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_dropout_reaches_only_the_classifier(backend):
    """No mask fixed: with a classifier that copies the embedding (E = C, identity weight),
    cas = dropout(emb) itself, so the real mask and scale are visible: each value is 0 or
    emb / 0.3, about 70% zeros; the embeddings handed to SniCo are those of eval mode."""
    D, E = 5, 8
    model = _model(backend, D=D, C=E, E=E)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.eye(E, dtype=torch.float64)[:, :, None])
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 300, D, generator=g, dtype=torch.float64)
    torch.manual_seed(3)
    tr = model.train()(x)
    ev = model.eval()(x, mine=False)
    emb = spec_embed(x, model.embed_weight, model.embed_bias)
    torch.testing.assert_close(tr["embeddings"], emb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ev["embeddings"], emb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ev["cas"], emb, rtol=1e-12, atol=1e-12)  # eval: no dropout
    pos = emb > 0
    kept = tr["cas"][pos] != 0
    torch.testing.assert_close(tr["cas"][pos][kept], emb[pos][kept] / 0.3, rtol=1e-12, atol=1e-12)
    assert abs(1 - kept.double().mean().item() - 0.7) < 0.02


# --------------------------------------------------------------------------------------
# counts: every rounding case, train and eval
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T", [20, 24, 29, 39, 40, 41, 59, 99])
def test_train_counts_floor(backend, T):
    """k_easy = T // 5 and k_hard = T // 20, never rounded (T/5 and T/20 chosen to round up
    and down)."""
    model = _model(backend, D=3, C=2, E=4).train()
    out = model(torch.randn(2, T, 3, dtype=torch.float64))
    assert out["ea"].shape[1] == T // 5 and out["ha"].shape[1] == T // 20


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T", [1, 3, 4, 5, 7, 9, 14, 24, 29, 48, 49])
def test_eval_video_scores_use_floor_k(backend, T):
    """Eval mode: video scores with k_easy = T // 5 (at least 1 for T < 5, where the
    published code would average nothing): 9 -> 1 (not round(1.8) = 2), 49 -> 9, 14 -> 2."""
    model = _model(backend, D=3, C=4, E=6).eval()
    x = torch.randn(1, T, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(T))
    out = model(x, mine=False)
    emb = spec_embed(x, model.embed_weight, model.embed_bias)
    cas = spec_cas(emb, model)
    k = max(1, T // 5)
    torch.testing.assert_close(out["video_scores"], spec_video_scores(cas, k), rtol=1e-12, atol=1e-12)


def test_training_too_short_for_r_hard_is_a_clear_error():
    model = _model("reference", D=3, C=2, E=4).train()
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 19, 3, dtype=torch.float64))  # k_hard = 19 // 20 = 0
    model(torch.randn(1, 20, 3, dtype=torch.float64))       # k_hard = 1: fine


# --------------------------------------------------------------------------------------
# the loss: values and gradients against the re-statement
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lam", [0.01, 0.005])
def test_total_loss_and_gradient(backend, lam, monkeypatch):
    B, T, D, C, E = 4, 45, 5, 3, 7
    model = _model(backend, D=D, C=C, E=E, seed=4).train()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, E, generator=g) > 0.7).double()
    fix_dropout(model, monkeypatch, mask)
    seen = spy_mining(monkeypatch)
    y = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.float64)
    out = model(x)
    # the trainer's labels are float32; the loss takes the action term in float32
    total, parts = CoLALoss(lambda_snico=lam, backend=backend)(out, y.float())
    total.backward()

    # the same forward from the spec, on copies of the parameters
    w = model.embed_weight.detach().clone().requires_grad_()
    bias = model.embed_bias.detach().clone().requires_grad_()
    wc = model.classifier.weight.detach().clone().requires_grad_()
    emb = F.relu(F.conv1d(x.transpose(1, 2), w, bias, padding=1)).transpose(1, 2)
    cas = F.relu(F.conv1d((emb * mask / 0.3).transpose(1, 2), wc)).transpose(1, 2)
    act = cas.sum(2).detach()
    k_easy, k_hard = T // 5, T // 20
    keep = seen[0][1].double()
    idx = [spec_mining(act[b].numpy(), keep[b].numpy(), k_easy, k_hard, 3, 6) for b in range(B)]
    ea, eb, ha, hb = ([i[n] for i in idx] for n in range(4))
    l_act = spec_action_loss(spec_video_scores(cas, k_easy), y)
    l_nce = spec_snico(emb, ea, eb, ha, hb, 0.07)
    want = l_act + lam * l_nce
    want.backward()

    assert parts["loss_action"].item() == pytest.approx(l_act.item(), rel=1e-6)
    assert parts["loss_snico"].item() == pytest.approx(l_nce.item(), rel=1e-10)
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    torch.testing.assert_close(model.embed_weight.grad, w.grad, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(model.embed_bias.grad, bias.grad, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(model.classifier.weight.grad, wc.grad, rtol=1e-5, atol=1e-9)


def test_action_loss_hand_value():
    """Two classes, scores (0.8, 0.2), label (1, 1) -> y = (0.5, 0.5):
    BCE = -(0.5 ln 0.8 + 0.5 ln 0.2 + 0.5 ln 0.2 + 0.5 ln 0.8) / 2 = -(ln 0.8 + ln 0.2) / 2."""
    out = {"video_scores": torch.tensor([[0.8, 0.2]], dtype=torch.float64),
           "embeddings": torch.zeros(1, 4, 3, dtype=torch.float64)}
    for k in ("ea", "eb", "ha", "hb"):
        out[k] = torch.zeros(1, 1, dtype=torch.int64)
    total, parts = CoLALoss(lambda_snico=0.0, backend="reference")(out, torch.tensor([[1.0, 1.0]]))
    assert parts["loss_action"].item() == pytest.approx(-(math.log(0.8) + math.log(0.2)) / 2, rel=1e-6)
    # zero embeddings: every cosine is 0, each NCE term is log(1 + k_easy) = log 2
    assert parts["loss_snico"].item() == pytest.approx(2 * math.log(2), rel=1e-12)
