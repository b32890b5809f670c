"""Where the data meets the trainer: the video label of COLA_SPEC 1 (multi-hot over the
class list, THUMOS'14's 20 names in alphabetical order) and the action-loss target built
from it (COLA_SPEC 3: label / sum(label))."""
import math
from pathlib import Path

import torch

from cola_fast.data import VideoDataset, class_names_from_gt
from cola_fast.model import CoLALoss
from test_data_loader import write_dataset

THUMOS14 = ["BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving", "CricketBowling",
            "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow",
            "LongJump", "PoleVault", "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus",
            "VolleyballSpiking"]


def test_thumos14_class_list():
    gt = Path(__file__).resolve().parents[1] / "cola_fast" / "data" / "thumos14" / "gt.json"
    assert class_names_from_gt(gt) == THUMOS14


def test_label_is_multi_hot_and_the_target_sums_to_one(tmp_path):
    """Two instances of Jump and one of Run: label (1, 1, 0), not counts (2, 1, 0); the
    action loss then targets (1/2, 1/2, 0)."""
    gt = {"database": {
        "v_a": {"subset": "train", "annotations": [
            {"label": "Jump", "segment": [1.0, 2.0]}, {"label": "Jump", "segment": [3.0, 4.0]},
            {"label": "Run", "segment": [5.0, 6.0]}]},
        "v_c": {"subset": "test", "annotations": [{"label": "Swim", "segment": [0.0, 1.0]}]}}}
    root = write_dataset(tmp_path / "ds", gt=gt, lengths={"v_a": 30, "v_c": 20},
                         splits={"train": ["v_a"], "test": ["v_c"]})
    ds = VideoDataset(root, "train", modality="all", num_segments=20, sampling="random")
    assert ds.class_names == ["Jump", "Run", "Swim"]
    label = ds[0]["label"]
    assert torch.equal(label, torch.tensor([1.0, 1.0, 0.0]))
    # BCE against y = (1/2, 1/2, 0) with scores (1/2, 1/4, 1/4), mean over the 3 classes:
    # class 0: -ln 1/2; class 1: -(1/2 ln 1/4 + 1/2 ln 3/4); class 2: -ln 3/4
    out = {"video_scores": torch.tensor([[0.5, 0.25, 0.25]]), "embeddings": torch.zeros(1, 2, 2)}
    out.update({k: torch.zeros(1, 1, dtype=torch.int64) for k in ("ea", "eb", "ha", "hb")})
    _, parts = CoLALoss(lambda_snico=0.0, backend="reference")(out, label[None])
    want = -(math.log(0.5) + 0.5 * math.log(0.25) + 0.5 * math.log(0.75) + math.log(0.75)) / 3
    assert abs(parts["loss_action"].item() - want) < 1e-6
