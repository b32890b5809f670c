"""W-TALC single-file layout: refusal without allow_pickle, round trip through the converter."""
import json

import numpy as np
import pytest
import torch

from cola_fast.data import DataError, SyntheticSpec, VideoDataset, make_synthetic_dataset
from cola_fast.data.convert_wtalc import main as convert_main
from cola_fast.data.wtalc import load_wtalc


def obj(items):
    a = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        a[i] = x
    return a


def write_wtalc(src, out):
    """A W-TALC fixture from a dataset in the COLA_SPEC 1 layout (the W-TALC subset
    names: validation for train videos, test for test)."""
    gt = json.loads((src / "gt.json").read_text())
    names, subsets, feats, segs, labs = [], [], [], [], []
    for split, sub in (("train", "validation"), ("test", "test")):
        for vid in (src / f"split_{split}.txt").read_text().split():
            x = np.concatenate([np.load(src / "features" / split / m / f"{vid}.npy") for m in ("rgb", "flow")], 1)
            names.append(vid.encode())
            subsets.append(sub.encode())
            feats.append(x)
            anns = gt["database"][vid]["annotations"]
            segs.append([[float(a["segment"][0]), float(a["segment"][1])] for a in anns])
            labs.append([a["label"] for a in anns])
    out.mkdir(parents=True)
    np.save(out / "features.npy", obj(feats), allow_pickle=True)
    ann = out / "annotations"
    ann.mkdir()
    np.save(ann / "videoname.npy", np.array(names))
    np.save(ann / "subset.npy", np.array(subsets))
    np.save(ann / "segments.npy", obj(segs), allow_pickle=True)
    np.save(ann / "labels.npy", obj(labs), allow_pickle=True)
    np.save(ann / "classlist.npy", np.array([c.encode() for c in gt["classes"]]))
    return out / "features.npy", ann


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    base = tmp_path_factory.mktemp("wt")
    src = make_synthetic_dataset(base / "src", SyntheticSpec(feature_dim=8, time_scale=0.2, max_videos=6))
    f, a = write_wtalc(src, base / "wtalc")
    return src, f, a, base


def test_refuses_without_allow_pickle(fixture):
    _, f, a, base = fixture
    with pytest.raises(DataError, match="allow_pickle=True"):
        load_wtalc(f, a)
    assert convert_main([str(f), str(a), str(base / "refused")]) == 2
    assert not (base / "refused").exists()


def test_round_trip(fixture, capsys):
    src, f, a, base = fixture
    with pytest.warns(UserWarning, match="pickled"):
        d = load_wtalc(f, a, allow_pickle=True)
    assert len(d) == 12 and d.subsets[:6] == ["validation"] * 6
    out = base / "converted"
    # the CLI says that it read pickled arrays in its closing line, not as a warning
    # (which would put two more lines before any error message: a user error is one line)
    assert convert_main([str(f), str(a), str(out), "--allow-pickle"]) == 0
    assert "pickled" in capsys.readouterr().out
    for split in ("train", "test"):
        for mod in ("all", "rgb", "flow"):
            x = VideoDataset(src, split, modality=mod, num_segments=20)
            y = VideoDataset(out, split, modality=mod, num_segments=20)
            assert x.video_ids == y.video_ids and x.class_names == y.class_names
            assert torch.equal(x.labels, y.labels) and x.num_snippets == y.num_snippets
            for i in range(len(x)):
                assert np.array_equal(x.features_of(i), y.features_of(i))
                assert x.annotations[x.video_ids[i]] == y.annotations[y.video_ids[i]]


def test_errors(fixture, tmp_path):
    src, f, a, base = fixture
    import shutil
    bad = tmp_path / "ann"
    shutil.copytree(a, bad)
    np.save(bad / "classlist.npy", np.array([b"Only"]))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="not in classlist.npy"):
        load_wtalc(f, bad, allow_pickle=True)
    (bad / "labels.npy").unlink()
    with pytest.warns(UserWarning), pytest.raises(DataError, match="labels.npy"):
        load_wtalc(f, bad, allow_pickle=True)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="exists and is not empty"):
        from cola_fast.data.wtalc import convert_wtalc
        convert_wtalc(f, a, src, allow_pickle=True)
    odd = tmp_path / "odd.npy"
    np.save(odd, obj([np.zeros((3, 5), np.float32)] * 12), allow_pickle=True)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="cannot be split"):
        from cola_fast.data.wtalc import convert_wtalc
        convert_wtalc(odd, a, tmp_path / "o", allow_pickle=True)


def test_subset_mapping():
    from cola_fast.data.wtalc import subset_to_split
    assert subset_to_split(["validation", "test"]) == {"validation": "train", "test": "test"}
    assert subset_to_split(["training", "validation"]) == {"training": "train", "validation": "test"}
    with pytest.raises(DataError, match="unknown W-TALC subsets"):
        subset_to_split(["foo"])
