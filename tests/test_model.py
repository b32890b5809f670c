"""The CoLA model and loss on the reference path, in both configurations, against
direct formulations of COLA_SPEC 2-3 (torch conv1d layers as the published code builds them)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cola_fast import reference
from cola_fast.model import CoLA, CoLALoss, ModelConfig, mining_counts


def _published_forward(model: CoLA, x):
    """COLA_SPEC 2 written with nn.Conv1d on (B,D,T), as the published code does."""
    cfg = model.cfg
    emb = F.relu(F.conv1d(x.transpose(1, 2), model.embed_weight, model.embed_bias, padding=cfg.embed_kernel // 2))
    h = model.classifier(emb)  # eval mode: no dropout
    if model.depthwise is not None:
        h = model.depthwise(h)
    cas = F.relu(h).transpose(1, 2)
    return emb.transpose(1, 2), cas, cas.sum(2)


@pytest.mark.parametrize("classifier,kernel", [("thumos", 3), ("anet", 9)])
def test_forward_matches_published_formulation(classifier, kernel):
    torch.manual_seed(0)
    cfg = ModelConfig(feature_dim=12, num_classes=5, embed_dim=16, embed_kernel=kernel, classifier=classifier)
    model = CoLA(cfg, backend="reference").eval()
    x = torch.randn(3, 40, 12)
    out = model(x, mine=True)
    emb, cas, act = _published_forward(model, x)
    torch.testing.assert_close(out["embeddings"], emb)
    torch.testing.assert_close(out["cas"], cas)
    torch.testing.assert_close(out["actionness"], act)
    k_easy, k_hard = 40 // 5, 40 // 20
    # video scores: softmax of the mean of the k_easy largest cas values per class
    top = cas.sort(dim=1, descending=True).values[:, :k_easy].mean(1)
    torch.testing.assert_close(out["video_scores"], torch.softmax(top, 1))
    assert out["ea"].shape == (3, k_easy) and out["ha"].shape == (3, k_hard)
    # eval mode: keep = 1, so EA is the plain top-k of actionness
    ref = reference.mine_snippets(act, torch.ones_like(act), k_easy, k_hard)
    for a, b in zip((out["ea"], out["eb"], out["ha"], out["hb"]), ref):
        assert torch.equal(a, b)


def test_anet_classifier_layout():
    cfg = ModelConfig(feature_dim=8, num_classes=4, embed_dim=8, embed_kernel=9, classifier="anet")
    m = CoLA(cfg)
    assert m.classifier.kernel_size == (9,) and m.classifier.padding == (4,)
    assert m.depthwise.kernel_size == (7,) and m.depthwise.dilation == (2,) and m.depthwise.groups == 4
    assert m.embed_weight.shape == (8, 8, 9)


def test_loss_backward_and_value():
    torch.manual_seed(1)
    cfg = ModelConfig(feature_dim=6, num_classes=3, embed_dim=10)
    model = CoLA(cfg, backend="reference").train()
    x = torch.randn(4, 60, 6)
    y = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.float32)
    out = model(x)
    loss_fn = CoLALoss(lambda_snico=0.01, backend="reference")
    total, parts = loss_fn(out, y)
    yn = y / y.sum(1, keepdim=True)
    l_act = F.binary_cross_entropy(out["video_scores"], yn)
    l_nce = reference.snico_loss(out["embeddings"], out["ea"], out["eb"], out["ha"], out["hb"], 0.07)
    torch.testing.assert_close(total, l_act + 0.01 * l_nce)
    total.backward()
    assert model.embed_weight.grad is not None and torch.isfinite(model.embed_weight.grad).all()


def test_mining_counts_errors():
    assert mining_counts(750, 5, 20) == (150, 37)
    assert mining_counts(50, 10, 8) == (5, 6)
    with pytest.raises(ValueError, match="too small"):
        mining_counts(19, 5, 20)
    model = CoLA(ModelConfig(feature_dim=4, num_classes=2, embed_dim=4)).train()
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(2, 10, 4))


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(embed_kernel=4)
    with pytest.raises(ValueError, match="m < M"):
        ModelConfig(m=6, M=6)
    model = CoLA(ModelConfig(feature_dim=4, num_classes=2, embed_dim=4))
    with pytest.raises(ValueError, match="expected features"):
        model(torch.randn(2, 10, 5))


@pytest.mark.parametrize("T", [1, 3, 4])
def test_short_test_video_scores_defined(T):
    """T < r_easy: k_easy = T // 5 would be 0 (the published code would average nothing);
    a test video that short is scored with its single largest cas value per class."""
    torch.manual_seed(T)
    model = CoLA(ModelConfig(feature_dim=4, num_classes=3, embed_dim=4)).eval()
    x = torch.randn(1, T, 4)
    out = model(x, mine=False)
    _, cas, _ = _published_forward(model, x)
    want = torch.softmax(cas.max(dim=1).values, dim=1)
    torch.testing.assert_close(out["video_scores"], want)
    assert out["video_scores"].sum().item() == pytest.approx(1.0, rel=1e-6)


def test_module_params_match_nn_conv1d_init_shapes():
    cfg = ModelConfig(feature_dim=7, num_classes=3, embed_dim=9)
    m = CoLA(cfg)
    ref = nn.Conv1d(7, 9, 3, padding=1)
    assert m.embed_weight.shape == ref.weight.shape and m.embed_bias.shape == ref.bias.shape
