"""VideoDataset over the layout of COLA_SPEC 1: outputs, sampling, and one test per bad input."""
import json
import math

import numpy as np
import pytest
import torch

from cola_fast.data import DataError, VideoDataset, class_names_from_gt, sample_random_perturb

GT = {
    "version": "test",
    "database": {
        "v_a": {"subset": "train", "duration": 10, "annotations": [
            {"label": "Jump", "segment": ["1.0", "2.5"]}, {"label": "Run", "segment": [3, 4.2]}]},
        "v_b": {"subset": "train", "annotations": [{"label": "Jump", "segment": ["0.3", "0.9"]}]},
        "v_c": {"subset": "test", "annotations": [{"label": "Swim", "segment": [0.0, 5.0]}]},
        "v_d": {"subset": "test", "annotations": [{"label": "Run", "segment": [2.0, 3.0]}]},
    },
}
LENGTHS = {"v_a": 40, "v_b": 7, "v_c": 900, "v_d": 12}
SPLITS = {"train": ["v_a", "v_b"], "test": ["v_c", "v_d"]}


def write_dataset(root, gt=GT, lengths=LENGTHS, splits=SPLITS, d_rgb=6, d_flow=4, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "gt.json").write_text(json.dumps(gt))
    for split, ids in splits.items():
        (root / f"split_{split}.txt").write_text("\n".join(ids) + "\n")
        for m, d in (("rgb", d_rgb), ("flow", d_flow)):
            (root / "features" / split / m).mkdir(parents=True, exist_ok=True)
            for v in ids:
                np.save(root / "features" / split / m / f"{v}.npy",
                        rng.standard_normal((lengths[v], d)).astype(np.float32))
    return root


@pytest.fixture
def root(tmp_path):
    return write_dataset(tmp_path / "ds")


def feat(root, split, m, v):
    return np.load(root / "features" / split / m / f"{v}.npy")


# ------------------------------------------------------------------ outputs
def test_train_items(root):
    ds = VideoDataset(root, "train", modality="all", num_segments=20, sampling="random")
    assert len(ds) == 2 and ds.video_ids == ["v_a", "v_b"]
    assert ds.class_names == ["Jump", "Run", "Swim"]  # all of gt.json, alphabetical
    assert ds.feature_dim == 10 and ds.gt_path == root / "gt.json"
    it = ds[0]
    assert it["features"].shape == (20, 10) and it["features"].dtype == torch.float32
    assert it["vid"] == "v_a" and it["num_snippets"] == 40
    assert torch.equal(it["label"], torch.tensor([1.0, 1.0, 0.0]))
    # the features are rows of rgb ++ flow at indices drawn by default_rng([seed, epoch, i])
    full = np.concatenate([feat(root, "train", "rgb", "v_a"), feat(root, "train", "flow", "v_a")], 1)
    idx = sample_random_perturb(40, 20, np.random.default_rng([0, 0, 0]))
    np.testing.assert_array_equal(it["features"].numpy(), full[idx])
    # T < N: stretched (repeats)
    it = ds[1]
    assert it["features"].shape == (20, 10) and it["num_snippets"] == 7
    assert torch.equal(it["label"], torch.tensor([1.0, 0.0, 0.0]))


def test_modalities(root):
    for mod, d in (("rgb", 6), ("flow", 4)):
        ds = VideoDataset(root, "train", modality=mod, num_segments=5)
        assert ds.feature_dim == d
        x = ds.get(0)["features"].numpy()
        full = feat(root, "train", mod, "v_a")
        idx = sample_random_perturb(40, 5, np.random.default_rng([0, 0, 0]))
        np.testing.assert_array_equal(x, full[idx])


def test_test_uniform(root):
    ds = VideoDataset(root, "test", num_segments=750)  # default sampling for test: uniform
    assert ds.sampling == "uniform"
    a = ds[0]  # T = 900 > 750
    full = np.concatenate([feat(root, "test", "rgb", "v_c"), feat(root, "test", "flow", "v_c")], 1)
    np.testing.assert_array_equal(a["features"].numpy(), full[np.floor(np.arange(750) * 900 / 750).astype(int)])
    b = ds[1]  # T = 12 <= 750: all snippets, no resampling
    assert b["features"].shape == (12, 10) and b["num_snippets"] == 12
    assert torch.equal(b["label"], torch.tensor([0.0, 1.0, 0.0]))


def test_random_reproducible_and_epochs(root):
    ds1 = VideoDataset(root, "train", num_segments=15, seed=3)
    ds2 = VideoDataset(root, "train", num_segments=15, seed=3, preload=False)
    assert torch.equal(ds1[0]["features"], ds2[0]["features"])
    e0 = ds1[0]["features"]
    ds1.set_epoch(1)
    assert not torch.equal(ds1[0]["features"], e0)
    ds1.set_epoch(0)
    assert torch.equal(ds1[0]["features"], e0)
    ds3 = VideoDataset(root, "train", num_segments=15, seed=4)
    assert not torch.equal(ds3[0]["features"], e0)
    # explicit generator
    a = ds1.get(0, rng=np.random.default_rng(5))["features"]
    b = ds1.get(0, rng=np.random.default_rng(5))["features"]
    assert torch.equal(a, b)


def test_preload_false_matches(root):
    a = VideoDataset(root, "test", num_segments=30)
    b = VideoDataset(root, "test", num_segments=30, preload=False)
    assert a.num_snippets == b.num_snippets == [900, 12] and a.feature_dim == b.feature_dim
    for i in range(2):
        assert torch.equal(a[i]["features"], b[i]["features"])


def test_given_class_names_and_dataloader(root):
    names = ["Swim", "Run", "Jump", "Extra"]
    ds = VideoDataset(root, "train", num_segments=8, class_names=names)
    assert ds.class_names == names
    assert torch.equal(ds[0]["label"], torch.tensor([0.0, 1.0, 1.0, 0.0]))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["features"].shape == (2, 8, 10) and batch["label"].shape == (2, 4)
    assert list(batch["vid"]) == ["v_a", "v_b"] and batch["num_snippets"].tolist() == [40, 7]


def test_class_names_from_gt(root):
    assert class_names_from_gt(root / "gt.json") == ["Jump", "Run", "Swim"]
    assert class_names_from_gt(GT) == ["Jump", "Run", "Swim"]


def test_index_errors(root):
    ds = VideoDataset(root, "train", num_segments=8)
    with pytest.raises(IndexError):
        ds[2]
    assert ds[-1]["vid"] == "v_b"


def test_feature_widths_any(tmp_path):
    r = write_dataset(tmp_path / "w", d_rgb=1024, d_flow=1024)
    ds = VideoDataset(r, "test", num_segments=4)
    assert ds.feature_dim == 2048 and ds[1]["features"].shape == (4, 2048)


# ------------------------------------------------------------------ errors, one per input
def expect(match, *a, **k):
    with pytest.raises(DataError, match=match):
        VideoDataset(*a, **k)


def test_err_missing_root(tmp_path):
    expect("not a directory", tmp_path / "nope")


def test_err_missing_gt(root):
    (root / "gt.json").unlink()
    expect("gt.json", root, "train")


def test_err_bad_json(root):
    (root / "gt.json").write_text('{"database": {')
    expect(r"gt\.json: not valid JSON", root, "train")


def test_err_no_database(root):
    (root / "gt.json").write_text(json.dumps({"taxonomy": []}))
    expect(r"gt\.json: missing 'database'", root, "train")


def _gt_with(ann):
    g = json.loads(json.dumps(GT))
    g["database"]["v_a"]["annotations"] = [ann]
    return g


@pytest.mark.parametrize("seg,match", [
    (["abc", "2"], r"annotations\[0\]\.segment\[0\]: expected a number"),
    ([1.0], r"annotations\[0\]\.segment: expected \[start, end\], got a list of 1"),
    ([1.0, 2.0, 3.0], r"annotations\[0\]\.segment: expected \[start, end\], got a list of 3"),
    ([float("nan"), 2.0], r"segment\[0\]: expected a finite number"),
    (["1", "inf"], r"segment\[1\]: expected a finite number"),
    ([None, 2.0], r"segment\[0\]: expected a number, got null"),
    ("1-2", r"segment: expected \[start, end\], got a string '1-2'"),
])
def test_err_bad_segment_values(root, seg, match):
    # NaN is written as the bare token NaN that Python's json module reads back
    (root / "gt.json").write_text(json.dumps(_gt_with({"label": "Jump", "segment": seg})))
    expect(f"v_a.*{match}", root, "train")


def test_err_start_after_end(root):
    (root / "gt.json").write_text(json.dumps(_gt_with({"label": "Jump", "segment": ["5.0", "2.0"]})))
    expect(r"v_a.*segment end 2\.0 is before its start 5\.0", root, "train")


def test_err_missing_label(root):
    (root / "gt.json").write_text(json.dumps(_gt_with({"segment": [1, 2]})))
    expect("v_a.*label", root, "train")


def test_err_missing_split(root):
    (root / "split_train.txt").unlink()
    expect("split file not found.*split_train.txt", root, "train")


def test_err_empty_split(root):
    (root / "split_train.txt").write_text("\n \n")
    expect("split_train.txt is empty", root, "train")


def test_err_split_video_not_in_gt(root):
    (root / "split_train.txt").write_text("v_a\nv_zzz\n")
    expect("absent from.*v_zzz", root, "train")


@pytest.mark.parametrize("mod", ["rgb", "flow"])
@pytest.mark.parametrize("preload", [True, False])
def test_err_missing_feature(root, mod, preload):
    (root / "features" / "train" / mod / "v_b.npy").unlink()
    expect(f"feature file not found.*{mod}/v_b.npy", root, "train", preload=preload)


@pytest.mark.parametrize("preload", [True, False])
def test_err_length_mismatch(root, preload):
    np.save(root / "features" / "train" / "flow" / "v_b.npy", np.zeros((8, 4), np.float32))
    expect("v_b.*rgb has 7 snippets but flow has 8", root, "train", preload=preload)
    VideoDataset(root, "train", modality="rgb")  # one modality alone is fine


@pytest.mark.parametrize("shape", [(7,), (7, 4, 1)])
@pytest.mark.parametrize("preload", [True, False])
def test_err_wrong_ndim(root, shape, preload):
    np.save(root / "features" / "train" / "flow" / "v_b.npy", np.zeros(shape, np.float32))
    expect(r"flow/v_b.npy: features must be 2-D", root, "train", preload=preload)


def test_err_empty_features(root):
    np.save(root / "features" / "train" / "rgb" / "v_b.npy", np.zeros((0, 6), np.float32))
    expect("rgb/v_b.npy: empty feature array", root, "train")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_err_nonfinite(root, bad):
    x = np.zeros((7, 6), np.float32)
    x[3, 2] = bad
    np.save(root / "features" / "train" / "rgb" / "v_b.npy", x)
    expect(r"rgb/v_b.npy: features hold NaN or inf \(first at snippet 3, channel 2\)", root, "train")


def test_err_nonfinite_lazy_load(root):
    x = np.zeros((7, 6), np.float32)
    x[0, 0] = np.nan
    np.save(root / "features" / "train" / "rgb" / "v_b.npy", x)
    ds = VideoDataset(root, "train", preload=False, num_segments=4)  # shapes only at open
    with pytest.raises(DataError, match="v_b.npy: features hold NaN"):
        ds[1]


def test_err_object_array(root):
    np.save(root / "features" / "train" / "rgb" / "v_b.npy", np.array([np.zeros(3), None], dtype=object),
            allow_pickle=True)
    expect("rgb/v_b.npy: cannot read as a numeric", root, "train")


def test_err_width_differs(root):
    np.save(root / "features" / "train" / "rgb" / "v_b.npy", np.zeros((7, 5), np.float32))
    expect("feature width differs.*v_b", root, "train")


def test_err_unknown_class_names(root):
    expect(r"labels not in the given class_names: \['Swim'\]", root, "train", class_names=["Jump", "Run"])


def test_err_duplicate_class_names(root):
    expect("duplicates", root, "train", class_names=["Jump", "Run", "Swim", "Run"])


@pytest.mark.parametrize("n", [0, -1])
def test_err_num_segments(root, n):
    expect("num_segments must be >= 1", root, "train", num_segments=n)


def test_err_bad_args(root):
    expect("modality", root, "train", modality="depth")
    expect("sampling", root, "train", sampling="dense")
    expect("num_segments must be an integer", root, "train", num_segments=7.5)
    expect("seed", root, "train", seed=-1)


def test_real_thumos_gt_parses():
    from cola_fast.data import load_gt, thumos14_files
    gt, splits, durations = thumos14_files()
    db = load_gt(gt)
    assert len(db) == 410 and len(splits["train"]) == 200 and len(splits["test"]) == 210
    assert len(class_names_from_gt(db)) == 20
    assert all(math.isfinite(durations[v]) for v in db)


def test_gt_classes_list(root):
    g = json.loads(json.dumps(GT))
    g["classes"] = ["Swim", "Jump", "Run", "Dive"]  # a top-level class list wins over inference
    (root / "gt.json").write_text(json.dumps(g))
    ds = VideoDataset(root, "train", num_segments=4)
    assert ds.class_names == ["Swim", "Jump", "Run", "Dive"]
    assert torch.equal(ds[0]["label"], torch.tensor([0.0, 1.0, 1.0, 0.0]))
    g["classes"] = ["Jump", "Run"]
    (root / "gt.json").write_text(json.dumps(g))
    expect(r"gt\.json: labels not in its \"classes\" list: \['Swim'\]", root, "train")
