"""DeviceFeatureBank: one tensor per split, batches by one gather, against the dataset."""
import os
import sys

import numpy as np
import pytest
import torch

from cola_fast.data import DataError, VideoDataset
from cola_fast.data.bank import DeviceFeatureBank

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # helpers of the sibling test modules
from test_data_loader import write_dataset  # noqa: E402
from test_data_sampling import spec_ranges  # noqa: E402


@pytest.fixture
def ds(tmp_path):
    return VideoDataset(write_dataset(tmp_path / "ds"), "test", num_segments=30)


def test_gather_matches_dataset_rows(ds):
    bank = DeviceFeatureBank(ds)
    assert len(bank) == 2 and bank.features.shape == (912, 10)
    idx = torch.tensor([[0, 899, 5, 5], [11, 0, 3, 3]])
    out = bank.gather(torch.tensor([0, 1]), idx)
    for b in range(2):
        np.testing.assert_array_equal(out[b].numpy(), ds.features_of(b)[idx[b].numpy()])


def test_random_batch_rows_and_support(ds):
    bank = DeviceFeatureBank(ds)
    g = torch.Generator().manual_seed(0)
    vids = torch.tensor([1, 0, 1, 1])
    out = bank.random_batch(vids, 30, g)
    assert out["features"].shape == (4, 30, 10)
    assert torch.equal(out["label"], ds.labels[vids])
    assert out["num_snippets"].tolist() == [12, 900, 12, 12]
    for b, v in enumerate(vids.tolist()):
        idx = out["idx"][b].numpy()
        ranges = np.array(spec_ranges(ds.num_snippets[v], 30))
        assert (idx >= ranges[:, 0]).all() and (idx <= ranges[:, 1]).all()
        np.testing.assert_array_equal(out["features"][b].numpy(), ds.features_of(v)[idx])


def test_uniform_item_matches_dataset(ds):
    bank = DeviceFeatureBank(ds, pin_memory=torch.cuda.is_available())
    for i in range(2):
        a, b = bank.uniform_item(i, 30), ds[i]
        assert torch.equal(a["features"][0], b["features"]) and a["num_snippets"] == b["num_snippets"]


def test_bank_errors(ds):
    bank = DeviceFeatureBank(ds)
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        bank.random_batch(torch.tensor([0, 2]), 5)
    with pytest.raises(DataError, match="1-D integer"):
        bank.random_batch(torch.tensor([[0]]), 5)
    with pytest.raises(DataError, match=r"idx must be \(B, N\)"):
        bank.gather(torch.tensor([0]), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(DataError, match="pin_memory"):
        DeviceFeatureBank(ds, device="cuda", pin_memory=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bank_on_cuda(ds):
    bank = DeviceFeatureBank(ds, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    vids = torch.tensor([0, 1, 1], device="cuda")
    out = bank.random_batch(vids, 30, g)
    assert out["features"].device.type == "cuda"
    for b, v in enumerate(vids.tolist()):
        idx = out["idx"][b].cpu().numpy()
        np.testing.assert_array_equal(out["features"][b].cpu().numpy(), ds.features_of(v)[idx])
