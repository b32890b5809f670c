"""The published constants of COLA_SPEC pinned by value, and hand-computed cases at every
boundary the spec draws: a score equal to a threshold, an index equal to T, ties.

Every expected number here is written down from the spec (or computed by hand in a
comment), never read from the code under test.
"""
import math

import numpy as np
import pytest
import torch

from cola_fast import reference
from cola_fast.config import get_preset
from cola_fast.evaluation import ProposalConfig, evaluate_detection, generate_proposals
from cola_fast.evaluation import reference as R
from cola_fast.evaluation.proposals import _native_ops, nms_batched, nms_indices
from cola_fast.model import CoLA, CoLALoss, ModelConfig
from cola_fast.ops import mine_snippets, snico_loss

NATIVE = _native_ops()
native_only = pytest.mark.skipif(NATIVE is None, reason="cola_fast._C (with the proposal ops) is not built")
OP_BACKENDS = ["reference", "native"]

THUMOS_TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
ANET_TIOU = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


# --------------------------------------------------------------------------------------
# presets (COLA_SPEC 2-4)
# --------------------------------------------------------------------------------------
def test_thumos14_preset_values():
    c = get_preset("thumos14")
    assert (c.num_segments, c.embed_dim, c.embed_kernel, c.classifier) == (750, 2048, 3, "thumos")
    assert (c.dropout, c.r_easy, c.r_hard, c.m, c.M) == (0.7, 5, 20, 3, 6)
    assert (c.lambda_snico, c.tau) == (0.01, 0.07)
    assert (c.batch_size, c.lr, c.weight_decay, c.steps, c.seed, c.eval_every) == (16, 1e-4, 5e-4, 6000, 0, 100)
    assert c.proposals == "thumos14" and c.modality == "all"
    np.testing.assert_allclose(c.tiou, THUMOS_TIOU, rtol=0, atol=1e-15)


def test_anet12_preset_values():
    c = get_preset("anet12")
    assert (c.num_segments, c.embed_dim, c.embed_kernel, c.classifier) == (50, 2048, 9, "anet")
    assert (c.dropout, c.r_easy, c.r_hard, c.m, c.M) == (0.7, 10, 8, 3, 6)
    assert (c.lambda_snico, c.tau) == (0.005, 0.07)
    assert (c.batch_size, c.lr, c.weight_decay, c.steps, c.eval_every) == (256, 1e-4, 5e-4, 100_000, 500)
    assert c.proposals == "anet12"
    np.testing.assert_allclose(c.tiou, ANET_TIOU, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["cpu", "cpu-large", "tiny"])
def test_small_presets_keep_the_thumos_rules(name):
    """The CPU presets shrink the data and the model, never CoLA's rules."""
    c = get_preset(name)
    assert (c.dropout, c.r_easy, c.r_hard, c.m, c.M, c.lambda_snico, c.tau) == (0.7, 5, 20, 3, 6, 0.01, 0.07)
    assert (c.classifier, c.embed_kernel, c.weight_decay, c.proposals) == ("thumos", 3, 5e-4, "thumos14")
    np.testing.assert_allclose(c.tiou, THUMOS_TIOU, rtol=0, atol=1e-15)


def test_model_and_loss_defaults():
    mc = ModelConfig()
    assert (mc.embed_dim, mc.embed_kernel, mc.dropout, mc.keep_prob) == (2048, 3, 0.7, 0.4)
    assert (mc.r_easy, mc.r_hard, mc.m, mc.M) == (5, 20, 3, 6)
    loss = CoLALoss()
    assert (loss.lambda_snico, loss.tau) == (0.01, 0.07)
    # the ActivityNet layout: embedding kernel 9 / padding 4, classifier k9 p4, depthwise k7 d2 p6
    m = CoLA(ModelConfig(feature_dim=4, num_classes=3, embed_dim=5, embed_kernel=9, classifier="anet"))
    assert m.embed_weight.shape == (5, 4, 9)
    assert (m.classifier.kernel_size, m.classifier.padding, m.classifier.bias) == ((9,), (4,), None)
    assert (m.depthwise.kernel_size, m.depthwise.dilation, m.depthwise.padding, m.depthwise.groups) == \
        ((7,), (2,), (6,), 3)
    t = CoLA(ModelConfig(feature_dim=4, num_classes=3, embed_dim=5))
    assert (t.classifier.kernel_size, t.classifier.bias, t.depthwise) == ((1,), None, None)


# --------------------------------------------------------------------------------------
# proposal and evaluation constants (COLA_SPEC 5-6)
# --------------------------------------------------------------------------------------
def test_thumos14_proposal_constants():
    c = ProposalConfig.thumos14()
    assert (c.class_threshold, c.upsample, c.nms_iou, c.video_score_weight) == (0.2, 24, 0.6, 0.2)
    assert (c.snippet_frames, c.fps, c.min_run, c.outer_ratio) == (16, 25, 2, 0.25)
    # np.arange(0, 0.25, 0.025): 10 values 0 .. 0.225; np.arange(0.1, 0.925, 0.025): 33 values 0.1 .. 0.9
    np.testing.assert_allclose(c.cas_thresholds, [0.025 * i for i in range(10)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(c.act_thresholds, [0.1 + 0.025 * i for i in range(33)], rtol=0, atol=1e-15)
    # the exact floats of np.arange decide which positions pass at equality
    assert np.array_equal(c.cas_thresholds, np.arange(0, 0.25, 0.025))
    assert np.array_equal(c.act_thresholds, np.arange(0.1, 0.925, 0.025))


def test_anet12_proposal_constants():
    c = ProposalConfig.anet12()
    assert (c.class_threshold, c.upsample, c.nms_iou, c.video_score_weight) == (0.1, 24, 0.6, 0.2)
    assert (c.snippet_frames, c.fps, c.min_run, c.outer_ratio) == (16, 25, 2, 0.25)
    np.testing.assert_allclose(c.cas_thresholds, [0.015 * i for i in range(10)], rtol=0, atol=1e-15)
    assert np.array_equal(c.cas_thresholds, np.arange(0, 0.15, 0.015))
    assert np.array_equal(c.act_thresholds, np.arange(0.1, 0.925, 0.025))


def test_default_tiou_grid_is_thumos():
    """evaluate_detection without thresholds uses 0.1:0.7 (np.linspace(0.1, 0.7, 7))."""
    db = {"v": {"subset": "test", "annotations": [{"label": "a", "segment": [0.0, 10.0]}]}}
    out = evaluate_detection({"database": db}, {"results": {}}, "test")
    assert out["tiou_thresholds"] == list(np.linspace(0.1, 0.7, 7))


# --------------------------------------------------------------------------------------
# a score equal to a threshold
# --------------------------------------------------------------------------------------
def _bumps(T=6, C=3):
    cas = np.zeros((T, C))
    for c in range(C):
        cas[1 + c % 3, c] = 1.0
        cas[2 + c % 3, c] = 1.0
    return cas


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("preset,th", [("thumos14", 0.2), ("anet12", 0.1)])
def test_class_score_equal_to_threshold_is_predicted(backend, preset, th):
    """COLA_SPEC 5.2: score >= threshold. Class a sits exactly on it, class b just below."""
    cfg = getattr(ProposalConfig, preset)()
    cas = _bumps()
    vs = np.array([th, np.nextafter(th, 0), 1.0 - th - np.nextafter(th, 0)])
    dets = generate_proposals(vs, cas, cas.sum(1), 6, ["a", "b", "c"], cfg, backend=backend)
    assert {d["label"] for d in dets} == {"a", "c"}


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_no_class_above_threshold_takes_the_argmax(backend):
    cas = _bumps()
    vs = np.array([0.05, 0.19, 0.18])
    dets = generate_proposals(vs, cas, cas.sum(1), 6, ["a", "b", "c"], ProposalConfig.thumos14(), backend=backend)
    assert {d["label"] for d in dets} == {"b"}


@pytest.mark.parametrize("backend", ["numpy", "auto", "reference"])
def test_actionness_equal_to_threshold_is_a_candidate(backend):
    """COLA_SPEC 5.5: actionness' >= th. act = (0, 1, .5, .5, .5, 0) is its own normalised
    curve; upsampled 24x it is exactly 0.5 at x = 0.5 (j = 12) and on [2, 4] (j = 48..96),
    above 0.5 on (0.5, 2), below elsewhere. With th = 0.5 the one run is j = 12..96:
    start 12 f, end 97 f, f = 16 T / (24 T 25) = 16 / 600 (a strict > would give 13..47)."""
    act = np.array([0.0, 1.0, 0.5, 0.5, 0.5, 0.0])
    cfg = ProposalConfig(cas_thresholds=[], act_thresholds=[0.5])
    dets = generate_proposals(np.array([1.0]), act[:, None], act, 6, ["a"], cfg, backend=backend)
    assert len(dets) == 1
    f = 16 / 600
    assert dets[0]["segment"] == pytest.approx([12 * f, 97 * f], rel=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "auto", "reference"])
def test_cas_equal_to_threshold_is_a_candidate(backend):
    """COLA_SPEC 5.5: values < th are set to 0, then a > 0. cas = (0, 1, .05, .05, 0):
    upsampled it is exactly 0.05 on [2, 3] (j = 48..72) and at x = 0.05 * 1 (j = 1.2: no
    grid point), above on (0.05, 2). With th = 0.05 (= np.arange(0, .25, .025)[2]) the run
    is j = 2..72: start 2 f, end 73 f, f = 16 / 600."""
    th = np.arange(0, 0.25, 0.025)[2]
    assert th == 0.05
    cas = np.array([0.0, 1.0, 0.05, 0.05, 0.0])
    cfg = ProposalConfig(cas_thresholds=[th], act_thresholds=[])
    dets = generate_proposals(np.array([1.0]), cas[:, None], cas, 5, ["a"], cfg, backend=backend)
    assert len(dets) == 1
    f = 16 / 600
    assert dets[0]["segment"] == pytest.approx([2 * f, 73 * f], rel=1e-12)


@pytest.mark.parametrize("backend", ["auto", "reference", "pandas"])
def test_tiou_equal_to_threshold_is_a_match(backend):
    """COLA_SPEC 6: below the threshold -> false positive; equal -> true positive.
    gt [0, 10], prediction [0, 5]: tIoU = 5 / 10 = 0.5 exactly."""
    db = {"v": {"subset": "test", "annotations": [{"label": "a", "segment": [0.0, 10.0]}]}}
    res = {"results": {"v": [{"label": "a", "score": 0.5, "segment": [0.0, 5.0]}]}}
    thr = [0.5, np.nextafter(0.5, 1)]
    if backend == "pandas":
        pytest.importorskip("pandas")
        from cola_fast.evaluation import anet_pandas
        m = anet_pandas.evaluate({"database": db}, res, "test", thr)[0]
    else:
        m = evaluate_detection({"database": db}, res, "test", thr, backend=backend)["mAP"]
    assert list(m) == [1.0, 0.0]


@pytest.mark.parametrize("backend", ["auto", "reference", "pandas"])
def test_tiou_threshold_zero_matches_disjoint_segments(backend):
    """tIoU = max(0, ...) / union: disjoint segments have tIoU exactly 0, which is not below
    a threshold of 0, so at threshold 0 the first prediction matches (AP 1)."""
    db = {"v": {"subset": "test", "annotations": [{"label": "a", "segment": [0.0, 10.0]}]}}
    res = {"results": {"v": [{"label": "a", "score": 0.5, "segment": [20.0, 30.0]}]}}
    thr = [0.0, 0.1]
    if backend == "pandas":
        pytest.importorskip("pandas")
        from cola_fast.evaluation import anet_pandas
        m = anet_pandas.evaluate({"database": db}, res, "test", thr)[0]
    else:
        m = evaluate_detection({"database": db}, res, "test", thr, backend=backend)["mAP"]
    assert list(m) == [1.0, 0.0]


@pytest.mark.parametrize("backend", ["auto", "reference", "pandas"])
def test_tied_scores_follow_reversed_argsort(backend):
    """COLA_SPEC 6: predictions sorted by numpy argsort then reversed, so of two equal
    scores the later one in the file comes first. File order: A (matches the one gt
    exactly), B (elsewhere). Walk: B (FP), A (TP): precision 0, 1/2; recall 0, 1 ->
    AP = 1 * 1/2 = 0.5 (the other order would give 1.0)."""
    db = {"v": {"subset": "test", "annotations": [{"label": "a", "segment": [0.0, 10.0]}]}}
    res = {"results": {"v": [{"label": "a", "score": 0.5, "segment": [0.0, 10.0]},
                             {"label": "a", "score": 0.5, "segment": [50.0, 60.0]}]}}
    if backend == "pandas":
        pytest.importorskip("pandas")
        from cola_fast.evaluation import anet_pandas
        m = anet_pandas.evaluate({"database": db}, res, "test", [0.5])[0]
    else:
        m = evaluate_detection({"database": db}, res, "test", [0.5], backend=backend)["mAP"]
    assert list(m) == [0.5]


# --------------------------------------------------------------------------------------
# NMS at an overlap equal to the threshold (COLA_SPEC 5.7: >= thresh is dropped)
# --------------------------------------------------------------------------------------
# rows [score, start, end]; overlap = inter / (len_a + len_b - inter), len = end - start + 1
NMS_CASES = {
    # [0,7] len 8 vs [4,7] len 4: inter 4, union 8 -> 0.5; vs [0,3]: 0.5; vs [3,5] len 3: 3/8 < 0.5
    0.5: ([[0.9, 0, 7], [0.8, 4, 7], [0.7, 0, 3], [0.6, 3, 5], [0.5, 20, 22]], [0, 3, 4]),
    # [0,4] len 5 vs [0,2] len 3: inter 3, union 5 -> 0.6; vs [2,4]: 0.6; vs [1,2]: 2/5 < 0.6
    0.6: ([[0.9, 0, 4], [0.8, 0, 2], [0.7, 2, 4], [0.6, 1, 2], [0.5, 10, 12]], [0, 3, 4]),
    # [0,7] len 8 vs [6,7] len 2: inter 2, union 8 -> 0.25; vs [5,12] len 8: 3/13 < 0.25;
    # then [5,12] vs [9,12] len 4: inter 4, union 8 -> 0.5
    0.25: ([[0.9, 0, 7], [0.8, 6, 7], [0.7, 5, 12], [0.6, 9, 12]], [0, 2]),
}


def _spec_nms(rows, thresh):
    order = sorted(range(len(rows)), key=lambda i: -rows[i][0])
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        s, e = rows[i][1], rows[i][2]
        rest = []
        for j in order:
            inter = max(0.0, min(e, rows[j][2]) - max(s, rows[j][1]) + 1)
            iou = inter / ((e - s + 1) + (rows[j][2] - rows[j][1] + 1) - inter)
            if iou < thresh:
                rest.append(j)
        order = rest
    return keep


@pytest.mark.parametrize("thresh", sorted(NMS_CASES))
def test_nms_overlap_equal_to_threshold_is_dropped(thresh):
    rows, want = NMS_CASES[thresh]
    assert _spec_nms(rows, thresh) == want
    sc = np.array([r[0] for r in rows])
    x1 = np.array([float(r[1]) for r in rows])
    x2 = np.array([float(r[2]) for r in rows])
    keys = np.array([r[1] * 1000 + r[2] for r in rows], dtype=np.int64)
    kept = R.nms([[0] + r for r in rows], thresh)
    assert [[k[1], k[2], k[3]] for k in kept] == [[float(v) for v in rows[i]] for i in want]
    assert nms_indices(sc, x1, x2, thresh, keys).tolist() == want
    assert nms_batched(np.zeros(len(rows), np.int64), sc, x1, x2, keys, thresh).tolist() == want


@native_only
@pytest.mark.parametrize("thresh", sorted(NMS_CASES))
def test_native_nms_overlap_equal_to_threshold_is_dropped(thresh):
    rows, want = NMS_CASES[thresh]
    t = torch.from_numpy
    sc = np.array([r[0] for r in rows])
    x1 = np.array([float(r[1]) for r in rows])
    x2 = np.array([float(r[2]) for r in rows])
    keys = np.array([r[1] * 1000 + r[2] for r in rows], dtype=np.int64)
    bounds = np.array([0, len(rows)], dtype=np.int64)
    for order in (np.zeros(0, np.int64), sc.argsort()[::-1].copy()):
        kept, ties = NATIVE.nms_groups(t(sc), t(x1), t(x2), t(keys), t(bounds), t(order), thresh)
        assert ties.numel() == 0 and kept.tolist() == want


# --------------------------------------------------------------------------------------
# an index equal to T, a count above T
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("which", ["ea", "eb", "ha", "hb"])
@pytest.mark.parametrize("bad", [5, -1])
def test_snico_index_equal_to_T_is_a_value_error(backend, which, bad):
    """Indices must lie in [0, T): T itself (5 here) and -1 are ValueErrors naming the set."""
    emb = torch.randn(2, 5, 3, dtype=torch.float64)
    idx = {k: torch.zeros(2, 2 if k in ("ea", "eb") else 1, dtype=torch.int64) for k in ("ea", "eb", "ha", "hb")}
    snico_loss(emb, *idx.values(), 0.07, backend=backend)  # valid
    idx[which][1, 0] = bad
    with pytest.raises(ValueError, match=which):
        snico_loss(emb, *idx.values(), 0.07, backend=backend)


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_mining_count_equal_to_T_is_fine_above_is_a_value_error(backend):
    a = torch.rand(2, 6, dtype=torch.float64)
    keep = torch.ones_like(a)
    ea, eb, ha, hb = mine_snippets(a, keep, 6, 6, backend=backend)
    assert sorted(ea[0].tolist()) == list(range(6)) and sorted(ha[1].tolist()) == list(range(6))
    for ke, kh in ((7, 1), (1, 7)):
        with pytest.raises(ValueError, match="must lie in"):
            mine_snippets(a, keep, ke, kh, backend=backend)


# --------------------------------------------------------------------------------------
# ties
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", None])
def test_flat_model_output_ties_resolve_to_lowest_indices(backend):
    """A model whose cas is 0 everywhere: every mined set is the first k indices (equal
    values, lower index first; the hard bands are empty: zero-valued picks by the tie
    rule), and the video scores are uniform."""
    torch.manual_seed(0)
    model = CoLA(ModelConfig(feature_dim=3, num_classes=4, embed_dim=5), backend=backend).double().eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
    out = model(torch.randn(2, 40, 3, dtype=torch.float64), mine=True)
    for name, k in (("ea", 8), ("eb", 8), ("ha", 2), ("hb", 2)):
        assert out[name].tolist() == [list(range(k))] * 2, name
    torch.testing.assert_close(out["video_scores"], torch.full((2, 4), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_mining_ties_hand_case(backend):
    """T = 10, actionness (3,1,3,0,2,2,0,3,1,1), keep all: EA k=3 -> 0,2,7 (the three 3s);
    EB = top of (3 - a) = (0,2,0,3,1,1,3,0,2,2) -> 3,6,1. median = (1+2)/2 = 1.5, binary =
    (1,0,1,0,1,1,0,1,0,0); m = 3, M = 6: erode_3 = AND over [i-1, i+1]: all 0 (no run
    of 3) -> inner all 0 -> HA = 0,1 (tie rule on zeros). dilate_3 = OR over [i-1, i+1]:
    (1,1,1,1,1,1,1,1,1,0); dilate_6 = OR over [i-2, i+3]: all 1 -> outer = (0,..,0,1):
    HB = 9 first (a=1 > 0), then 0."""
    a = torch.tensor([[3, 1, 3, 0, 2, 2, 0, 3, 1, 1]], dtype=torch.float64)
    ea, eb, ha, hb = mine_snippets(a, torch.ones_like(a), 3, 2, 3, 6, backend=backend)
    assert ea.tolist() == [[0, 2, 7]]
    assert eb.tolist() == [[3, 6, 1]]
    assert ha.tolist() == [[0, 1]]
    assert hb.tolist() == [[9, 0]]


# --------------------------------------------------------------------------------------
# the normalisation eps (1e-12, as F.normalize), pinned directly on every backend
# --------------------------------------------------------------------------------------
def test_reference_info_nce_eps():
    """q of norm 1e-13 < eps: q / max(|q|, 1e-12) = (0.1, 0, 0). k = e0, one negative e1:
    logits (0.1 / 0.07, 0) -> loss = log(1 + exp(a)) - a, a = 0.1 / 0.07."""
    q = torch.tensor([[1e-13, 0.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    neg = torch.tensor([[[0.0, 1.0, 0.0]]], dtype=torch.float64)
    a = 0.1 / 0.07
    assert reference.info_nce(q, k, neg, 0.07).item() == pytest.approx(math.log1p(math.exp(a)) - a, rel=1e-9)


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_snico_eps(backend, dtype):
    """emb rows: 0 = (1e-13, 0, 0) (the hard sets), 1 = e0 (EA), 2 = e1 (EB). With a = 0.1 / 0.07:
    NCE(q0, e0, [e1]) = log(1 + e^a) - a;  NCE(q0, e1, [e0]) = log(1 + e^a)."""
    emb = torch.tensor([[[1e-13, 0, 0], [1, 0, 0], [0, 1, 0]]], dtype=dtype)
    one = torch.ones(1, 1, dtype=torch.int64)
    got = snico_loss(emb, one, 2 * one, 0 * one, 0 * one, 0.07, backend=backend).item()
    a = 0.1 / 0.07
    want = 2 * math.log1p(math.exp(a)) - a
    assert got == pytest.approx(want, rel=1e-9 if dtype == torch.float64 else 1e-5)
