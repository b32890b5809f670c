"""The built-in synthetic THUMOS'14-shaped dataset."""
import json
import math
import os

import numpy as np
import pytest
import torch

from cola_fast.data import DataError, SyntheticSpec, VideoDataset, make_synthetic_dataset, thumos14_files

SMALL = SyntheticSpec(seed=0, feature_dim=16, time_scale=0.25, max_videos=12)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "small", SMALL)


def files_bytes(root):
    out = {}
    for dp, _, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def test_layout_and_loader(small_root):
    gt, splits, durations = thumos14_files()
    for split in ("train", "test"):
        ds = VideoDataset(small_root, split, num_segments=50)
        assert ds.video_ids == splits[split][:12]
        assert ds.feature_dim == 32
        assert ds.class_names == sorted({a["label"] for e in gt["database"].values() for a in e["annotations"]})
        assert len(ds.class_names) == 20
        for i, vid in enumerate(ds.video_ids):
            T = ds.num_snippets[i]
            assert T == max(1, int(durations[vid] * 0.25 * 25 / 16))
            assert ds.labels[i].sum() >= 1
            x = np.load(small_root / "features" / split / "rgb" / f"{vid}.npy")
            assert x.dtype == np.float32 and x.shape == (T, 16)
            real = {a["label"] for a in gt["database"][vid]["annotations"]}
            assert {lab for lab, _, _ in ds.annotations[vid]} <= real
            for lab, st, en in ds.annotations[vid]:
                assert 0 <= st < en <= T * 0.64 + 1e-6
                assert en - st >= min(0.64, T * 0.64 - st) - 1e-6  # at least one snippet long


def test_segments_scaled_from_real(small_root):
    gt, _, durations = thumos14_files()
    db = json.loads((small_root / "gt.json").read_text())["database"]
    vid = "video_validation_0000051"
    T = int(durations[vid] * 0.25 * 25 / 16)
    real = [(a["label"], float(a["segment"][0]) * 0.25, float(a["segment"][1]) * 0.25)
            for a in gt["database"][vid]["annotations"] if float(a["segment"][0]) * 0.25 < T * 0.64]
    ours = [(a["label"], a["segment"][0], a["segment"][1]) for a in db[vid]["annotations"]]
    assert len(ours) == len(real)
    for (l1, s1, e1), (l2, s2, e2) in zip(real, ours):
        assert l1 == l2 and math.isclose(s1, s2, abs_tol=1e-3)
        assert math.isclose(max(min(e1, T * 0.64), s1 + 0.64) if s1 + 0.64 <= T * 0.64 else min(e1, T * 0.64),
                            e2, abs_tol=1e-3)


def test_deterministic_and_idempotent(tmp_path, small_root):
    b = make_synthetic_dataset(tmp_path / "again", SMALL)
    fa, fb = files_bytes(small_root), files_bytes(b)
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)
    # idempotent: nothing rewritten
    mt = {p: os.stat(os.path.join(b, p)).st_mtime_ns for p in fb}
    assert make_synthetic_dataset(tmp_path / "again", SMALL) == b
    assert all(os.stat(os.path.join(b, p)).st_mtime_ns == t for p, t in mt.items())
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left


def test_video_independent_of_others_and_seed(tmp_path, small_root):
    fewer = make_synthetic_dataset(tmp_path / "fewer", SyntheticSpec(seed=0, feature_dim=16, time_scale=0.25, max_videos=3))
    vid = "video_test_0000004"
    p = os.path.join("features", "test", "flow", f"{vid}.npy")
    assert (fewer / p).read_bytes() == (small_root / p).read_bytes()
    other = make_synthetic_dataset(tmp_path / "s1", SyntheticSpec(seed=1, feature_dim=16, time_scale=0.25, max_videos=3))
    assert not np.array_equal(np.load(other / p), np.load(small_root / p))


def test_spec_change_replaces_and_foreign_dir_refused(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", SyntheticSpec(feature_dim=4, time_scale=0.1, max_videos=2))
    root = make_synthetic_dataset(tmp_path / "d", SyntheticSpec(feature_dim=5, time_scale=0.1, max_videos=2))
    assert VideoDataset(root, "train", num_segments=5).feature_dim == 10
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to overwrite"):
        make_synthetic_dataset(foreign, SyntheticSpec(feature_dim=4, time_scale=0.1, max_videos=2))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_max_snippets_caps(tmp_path):
    root = make_synthetic_dataset(tmp_path / "cap", SyntheticSpec(feature_dim=4, time_scale=0.5, max_snippets=40, max_videos=30))
    for split in ("train", "test"):
        ds = VideoDataset(root, split, num_segments=40)
        assert max(ds.num_snippets) <= 40
        assert all(ds.labels.sum(1) >= 1)
        for vid, T in zip(ds.video_ids, ds.num_snippets):
            for _, st, en in ds.annotations[vid]:
                assert 0 <= st < en <= T * 0.64 + 1e-6


@pytest.mark.parametrize("bad", [dict(feature_dim=0), dict(time_scale=0), dict(time_scale=1.5),
                                 dict(max_snippets=0), dict(noise_std=-1.0), dict(seed=-2)])
def test_bad_spec(tmp_path, bad):
    with pytest.raises(DataError, match="SyntheticSpec"):
        make_synthetic_dataset(tmp_path / "x", SyntheticSpec(**bad))


def test_signal_is_learnable_but_not_trivial(tmp_path):
    """A nearest-class-mean snippet classifier (fit on train, scored on test) must beat
    chance clearly on action snippets but stay far from perfect."""
    from cola_fast.data.probe import snippet_targets
    root = make_synthetic_dataset(tmp_path / "sig", SyntheticSpec(feature_dim=64, time_scale=0.5, max_videos=80))
    tr = VideoDataset(root, "train", num_segments=1, sampling="uniform")
    te = VideoDataset(root, "test", num_segments=1, sampling="uniform", class_names=tr.class_names)

    def stack(ds):
        xs, ys, rs = [], [], []
        for i in range(len(ds)):
            y, r = snippet_targets(ds, i)
            xs.append(ds.features_of(i)), ys.append(y), rs.append(r)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), torch.from_numpy(np.concatenate(rs))

    xtr, ytr, _ = stack(tr)
    xte, yte, rte = stack(te)
    C1 = len(tr.class_names) + 1
    present = torch.bincount(ytr, minlength=C1) > 0
    means = torch.stack([xtr[ytr == c].mean(0) if present[c] else torch.full((xtr.shape[1],), 1e6) for c in range(C1)])
    pred = torch.cdist(xte, means).argmin(1)
    act = (yte < C1 - 1) & present[yte]
    acc_act = float((pred[act] == yte[act]).float().mean())
    chance = 1.0 / int(present.sum())
    assert acc_act > 3 * chance, acc_act
    assert acc_act < 0.95, acc_act


def test_timing_small(tmp_path):
    import time
    t = time.perf_counter()
    make_synthetic_dataset(tmp_path / "t", SyntheticSpec(feature_dim=32, time_scale=0.25))
    assert time.perf_counter() - t < 20  # all 410 videos (generous bound on a shared CPU)


@pytest.mark.parametrize("rho,T", [(0.7, 500), (0.95, 1500), (0.5, 1)])
def test_ar1_matches_recursion(rho, T):
    from cola_fast.data.synthetic import _ar1
    z = np.random.default_rng(0).standard_normal((T, 3))
    ref = np.empty_like(z)
    ref[0] = z[0]
    for t in range(1, T):
        ref[t] = rho * ref[t - 1] + math.sqrt(1 - rho * rho) * z[t]
    np.testing.assert_allclose(_ar1(np.random.default_rng(0), T, 3, rho), ref, atol=1e-12)
