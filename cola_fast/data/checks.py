"""Checks of a dataset as a whole, on data already read: what one file alone cannot show.

    duration_mismatch(num_snippets, durations, feature_fps, snippet_frames)  -> message or None
    label_clashes(labels_by_video)                                           -> message or None
    classes_without_training(class_names, train_labels, test_labels)        -> [class]
    describe_data(...)                                                       -> the header lines

Each is a pure function of parsed values (no file access), so that the trainer, the
re-evaluation of a run and the tests call the same rule. prepare_data (batches.py) runs
them when it assembles a run's splits.
"""
from __future__ import annotations

import statistics

__all__ = ["DURATION_TOLERANCE", "duration_mismatch", "label_clashes", "classes_without_training",
           "describe_data"]

DURATION_TOLERANCE = 0.05  # the largest median relative difference a dataset passes with


def duration_mismatch(num_snippets: dict, durations: dict, feature_fps: float, snippet_frames: int,
                      tolerance: float = DURATION_TOLERANCE) -> str | None:
    """One line when the videos' lengths computed from the features (T x snippet_frames /
    feature_fps) and the ground truth's durations differ by more than tolerance in the
    median over the videos that have a duration; None when they agree (or none has one).

    num_snippets: {vid: T}; durations: {vid: seconds} (missing or non-positive: skipped)."""
    pairs = [(num_snippets[v], float(d)) for v, d in durations.items()
             if v in num_snippets and d is not None and float(d) > 0]
    if not pairs:
        return None
    snippet_seconds = snippet_frames / feature_fps
    ratio = statistics.median(T * snippet_seconds / d for T, d in pairs)  # computed / recorded
    if abs(ratio - 1) <= tolerance:
        return None
    computed = statistics.median(T * snippet_seconds for T, _ in pairs)
    recorded = statistics.median(d for _, d in pairs)
    return (f"feature_fps={feature_fps:g} with snippet_frames={snippet_frames} makes the videos "
            f"{computed:.1f} s long in the median (T x snippet_frames / feature_fps), but gt.json's "
            f"durations say {recorded:.1f} s ({100 * abs(ratio - 1):.0f}% apart over {len(pairs)} videos); "
            f"feature_fps={_plain(feature_fps * ratio)} would fit (--set feature_fps=...; or change "
            f"snippet_frames), or --set check_durations=false keeps a deliberate mismatch")


def _plain(x: float) -> str:
    """x to 2 decimals without trailing zeros: 30, 29.97."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _key(label: str) -> str:
    return label.strip().casefold()


def label_clashes(labels_by_video: dict, class_names=()) -> str | None:
    """One line naming the first two labels that differ only in case or surrounding spaces
    (a typo that would become a class of its own) and a few videos of each; None when
    there are none. labels_by_video: {vid: [label, ...]}; class_names: a given class list,
    checked with them."""
    where: dict[str, list] = {}
    for c in class_names:
        where.setdefault(c, [])
    for vid, labels in labels_by_video.items():
        for lab in labels:
            vids = where.setdefault(lab, [])
            if vid not in vids:
                vids.append(vid)
    groups: dict[str, list] = {}
    for lab in where:
        groups.setdefault(_key(lab), []).append(lab)
    for labs in groups.values():
        if len(labs) > 1:
            a, b = sorted(labs, key=lambda lab: -len(where[lab]))[:2]
            return (f"labels {a!r} and {b!r} differ only in case or spaces: {a!r} in {_some(where[a])}, "
                    f"{b!r} in {_some(where[b])}; correct the label (the class list would hold both)")
    return None


def _some(vids: list, n: int = 3) -> str:
    if not vids:
        return "the class list"
    more = f" and {len(vids) - n} more" if len(vids) > n else ""
    return f"{len(vids)} video{'s' if len(vids) > 1 else ''} ({', '.join(vids[:n])}{more})"


def classes_without_training(class_names, train_labels, test_labels) -> list:
    """The classes, in class_names order, that some test video holds and no training video
    does (the model cannot learn them). *_labels: iterables of label lists, one per video."""
    trained = {lab for labels in train_labels for lab in labels}
    tested = {lab for labels in test_labels for lab in labels}
    return [c for c in class_names if c in tested and c not in trained]


def describe_data(feature_fps: float, snippet_frames: int, feature_dim: int, modality: str,
                  class_names, classes_listed: bool) -> list:
    """The run header's lines about the data: timing, feature size, the classes in order."""
    order = 'gt.json\'s "classes" list' if classes_listed else "alphabetical: gt.json has no \"classes\" list"
    return [f"data: feature_fps {feature_fps:g}, snippet_frames {snippet_frames}: "
            f"{snippet_frames / feature_fps:.4g} s per snippet; feature size {feature_dim} (modality {modality})",
            f"data: {len(class_names)} classes, in order ({order}): {', '.join(class_names)}"]
