"""Datasets of cola_fast: the layout of COLA_SPEC section 1, snippet sampling, and a
built-in synthetic THUMOS'14-shaped dataset.

    from cola_fast.data import VideoDataset, make_synthetic_dataset, SyntheticSpec
    root = make_synthetic_dataset("/tmp/cola_synth", SyntheticSpec(feature_dim=256, time_scale=0.5))
    train = VideoDataset(root, "train", num_segments=750, sampling="random")
    test = VideoDataset(root, "test", num_segments=750, sampling="uniform")
"""
from .errors import DataError
from .sampling import sample_random_perturb, sample_uniform, sample_random_perturb_batch
from .dataset import VideoDataset, load_gt, class_names_from_gt, read_split, load_feature
from .synthetic import SyntheticSpec, make_synthetic_dataset, thumos14_files
from .bank import DeviceFeatureBank
from .batches import BatchStream, prepare_data

__all__ = [
    "DataError", "sample_random_perturb", "sample_uniform", "sample_random_perturb_batch",
    "VideoDataset", "load_gt", "class_names_from_gt", "read_split", "load_feature",
    "SyntheticSpec", "make_synthetic_dataset", "thumos14_files", "DeviceFeatureBank",
    "BatchStream", "prepare_data",
]
