"""A built-in synthetic dataset shaped like THUMOS'14 (the default training data).

Shape: the real THUMOS'14 annotations, splits (200 train = validation videos, 210 test
videos) and durations, vendored in ``cola_fast/data/thumos14``. A video of duration d
seconds has T = int(d * time_scale * 25 / 16) snippets (at least 1); segments are scaled
by ``time_scale``, cut at the video end (dropped when they start after it) and, when
``max_snippets`` caps T, the video is cropped to a window of that many snippets (starting
at 0, or just before the first segment when that lies beyond the cap). Every kept
segment covers at least one snippet; with time_scale < 1 its ground-truth end is also
extended to at least one snippet length (0.64 s) after its start.

Generative model (per modality m in {rgb, flow}; every direction below is a random unit
vector in R^D, drawn from the seed, independent between modalities). For snippet t:

    x_t = action_t + context_t + scene + background_t + motion_t + distractor_t + noise_t

- action_t: inside each annotated instance of class c, amp_t * v, where the instance
  direction v = normalize(0.8 * p_c + 0.6 * xi) (p_c the class prototype, itself sharing
  30% of its variance with a direction shared by the scene group of c - related classes
  look alike - and xi a fresh random direction per instance), amp_t = strength_m * a *
  ramp_t * cover_t * wobble_t with a ~ U(0.6, 1.4) per instance, a linear ramp over the
  first and last (up to) 2 snippets (1/3, 2/3, 1, ...), cover_t the fraction of the
  snippet inside the segment, and wobble_t a smooth random factor (AR(1), with occasional
  dips) around 1. Flow carries more of it than rgb (motion).
- context_t: a per-class context direction q_c, present in every video holding class c:
  weak everywhere (0.25), half strength inside the instances, full strength in the
  snippet just outside an instance and decaying as exp(-(d-1)/2) with the distance d in
  snippets. It is also present at 0.3 strength in videos of related classes (same scene
  group). This makes the boundary snippets ambiguous: just outside an instance the
  context is strongest and the action absent; just inside, the action is ramping up.
  rgb carries more of it than flow (appearance).
- scene: a per-group scene direction, constant over the video (rgb stronger).
- background_t: a slowly drifting mixture of 16 generic directions (AR(1) weights).
- motion_t: flow only, camera-motion bursts (a generic direction, a few snippets long,
  anywhere in the video, unrelated to the class).
- distractor_t: unannotated action-like bursts (replays, partial actions): a class of
  the video at 0.3-0.6 of the action amplitude, 2-10 snippets, placed in background.
- noise_t: i.i.d. Gaussian, std ``noise_std`` per channel.

Determinism: global directions come from numpy's default_rng([seed, 0xC01A]); each video
from default_rng([seed, zlib.crc32(vid), modality]), so a video's features do not depend
on which other videos are generated. Features are float32.

Calibration (generator v2, scripts/calibrate_synthetic.py: CoLA of COLA_SPEC 2-4 from
cola_fast.reference ops, embedding width 128, Adam lr 5e-4, batch 16, mAP@avg(0.1:0.7) on
the test split with the proposals/AP of COLA_SPEC 5-6; one seed, CPU):
    feature_dim 1024, time_scale 1, N 750:  25.2 at 300 steps, 26.3 at 600
    feature_dim 256,  time_scale 1, N 750:  36.7 at 300 steps, 37.8 at 600
    feature_dim 128,  time_scale 0.5, N 400: 22.8 at 300 steps, 26.0 at 600
    feature_dim 128,  time_scale 0.25, N 200: 10.2 at 300 steps, 12.1 at 600 (segments of
        1-2 snippets: high tIoU thresholds become nearly unreachable)
(at lr 1e-4 learning is slower: v1 data, feature_dim 256: 19.8 at 800 steps). A
fully-supervised per-snippet linear probe (cola_fast.data.probe, feature_dim 256) gets
40.6% of the snippets well inside instances right (20 classes + background), 45.1% of
those within 2 snippets of a boundary, 94.5% of the background, 71.1% overall (always
"background": 65.2%); rgb alone 9.9% inside, flow alone 22.0%: the modalities complement.

``make_synthetic_dataset(out_dir, spec)`` writes the layout of COLA_SPEC 1 into
``out_dir`` (gt.json, split_train.txt, split_test.txt, features/<split>/{rgb,flow}/<vid>.npy
and synthetic_spec.json) through a temporary directory renamed into place, and does
nothing when ``out_dir`` already holds a complete dataset of the same spec.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["SyntheticSpec", "make_synthetic_dataset", "thumos14_files", "SCENE_GROUPS", "GENERATOR_VERSION"]

GENERATOR_VERSION = 2
SNIPPET_SECONDS = 16 / 25
SPEC_FILE = "synthetic_spec.json"

# Scene groups of the THUMOS'14 classes: classes of a group share a scene direction, part of
# their action prototype and some context ("related classes").
SCENE_GROUPS = {
    "track_field": ["HighJump", "LongJump", "PoleVault", "JavelinThrow", "Shotput", "ThrowDiscus", "HammerThrow"],
    "water": ["CliffDiving", "Diving"],
    "cricket": ["CricketBowling", "CricketShot"],
    "court": ["BasketballDunk", "VolleyballSpiking", "TennisSwing"],
    "field": ["BaseballPitch", "FrisbeeCatch", "SoccerPenalty", "GolfSwing"],
    "indoor": ["Billiards", "CleanAndJerk"],
}


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Strength fields are multipliers of the built-in defaults."""
    seed: int = 0
    feature_dim: int = 1024          # per modality; "all" gives 2 * feature_dim
    time_scale: float = 1.0          # < 1 shrinks T and the segments proportionally
    max_snippets: int | None = None  # cap T (crop)
    max_videos: int | None = None    # keep the first n videos of each split
    noise_std: float = 1.0
    action_strength: float = 1.0
    context_strength: float = 1.0
    background_strength: float = 1.0
    distractor_rate: float = 1.0     # expected distractor bursts per 150 snippets

    def validate(self):
        def bad(msg):
            raise DataError(f"SyntheticSpec: {msg}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            bad(f"seed must be a non-negative int, got {self.seed!r}")
        if not isinstance(self.feature_dim, int) or isinstance(self.feature_dim, bool) or self.feature_dim < 1:
            bad(f"feature_dim must be a positive int, got {self.feature_dim!r}")
        if not (isinstance(self.time_scale, (int, float)) and 0 < self.time_scale <= 1 and math.isfinite(self.time_scale)):
            bad(f"time_scale must be in (0, 1], got {self.time_scale!r}")
        for name in ("max_snippets", "max_videos"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                bad(f"{name} must be None or a positive int, got {v!r}")
        for name in ("noise_std", "action_strength", "context_strength", "background_strength", "distractor_rate"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                bad(f"{name} must be a finite number >= 0, got {v!r}")
        return self

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["generator_version"] = GENERATOR_VERSION
        return d

    def tag(self) -> str:
        """Short stable hash of the spec, e.g. for a cache folder name."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return f"{zlib.crc32(blob):08x}"


# Built-in strengths (per modality). Multiplied by the spec's strength fields.
_RGB, _FLOW = 0, 1
_ACTION = (1.8, 2.75)         # action amplitude at a = 1
_CONTEXT = (2.0, 0.9)         # context amplitude at full weight
_SCENE = (1.5, 0.5)
_BACKGROUND = (2.0, 1.5)
_MOTION = (0.0, 2.0)          # camera-motion bursts (flow only)
_PROTO_SHARE = 0.3            # variance of a class prototype shared with its scene group
_INSTANCE_COS = 0.8           # cosine between an instance direction and its prototype
_CTX_BASE, _CTX_INSIDE, _CTX_DECAY, _CTX_RELATED = 0.25, 0.5, 2.0, 0.3
_RAMP = 2
_N_BG = 16


def thumos14_files():
    """(gt dict, {split: [ids]}, durations dict) of the vendored THUMOS'14 files."""
    base = resources.files("cola_fast.data") / "thumos14"
    gt = json.loads((base / "gt.json").read_text(encoding="utf-8"))
    splits = {s: [v.strip() for v in (base / f"split_{s}.txt").read_text(encoding="utf-8").split() if v.strip()]
              for s in ("train", "test")}
    durations = json.loads((base / "durations.json").read_text(encoding="utf-8"))
    return gt, splits, durations


def _unit(rng, n, d):
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class _Directions:
    """All global directions of one modality."""

    def __init__(self, rng, classes, groups, D):
        C, G = len(classes), len(groups)
        self.group_of = np.array([groups.index(_group_of(c)) for c in classes])
        gdir = _unit(rng, G, D)
        own = _unit(rng, C, D)
        proto = math.sqrt(1 - _PROTO_SHARE) * own + math.sqrt(_PROTO_SHARE) * gdir[self.group_of]
        self.proto = proto / np.linalg.norm(proto, axis=1, keepdims=True)
        self.context = _unit(rng, C, D)
        self.scene = _unit(rng, G, D)
        self.background = _unit(rng, _N_BG, D)
        self.motion = _unit(rng, 1, D)[0]


def _group_of(c):
    for g, members in SCENE_GROUPS.items():
        if c in members:
            return g
    return "other:" + c


def _video_layout(vid, entry, duration, spec):
    """T and the kept segments [(label, start_s, end_s)] (scaled, cropped, cut)."""
    s = float(spec.time_scale)
    anns = [(a["label"], float(a["segment"][0]) * s, float(a["segment"][1]) * s) for a in entry["annotations"]]
    if duration is None or not math.isfinite(duration) or duration <= 0:
        duration = max(e for _, _, e in anns) / s + 5.0 if anns else 10.0  # max end + margin
    T = max(1, int(duration * s * 25 / 16))
    offset = 0
    if spec.max_snippets is not None and T > spec.max_snippets:
        cap = spec.max_snippets
        first = min((int(st // SNIPPET_SECONDS) for _, st, _ in anns), default=0)
        if first >= cap - 1:  # no segment would survive a crop at 0: crop just before the first
            offset = min(max(0, first - max(1, cap // 8)), T - cap)
        T = cap
    t0, t1 = offset * SNIPPET_SECONDS, (offset + T) * SNIPPET_SECONDS
    kept = []
    for lab, st, en in anns:
        if st >= t1 or en <= t0:
            continue
        st, en = max(st, t0) - t0, min(en, t1) - t0
        if s < 1:
            en = max(en, min(st + SNIPPET_SECONDS, t1 - t0))
        kept.append((lab, round(st, 4), round(en, 4)))
    return T, kept


def _snippet_span(st, en, T):
    a = min(T - 1, int(math.floor(st / SNIPPET_SECONDS)))
    b = min(T - 1, int(math.ceil(en / SNIPPET_SECONDS - 1e-9)) - 1)
    return a, max(a, b)


def _ar1(rng, T, k, rho):
    """(T, k) stationary AR(1) with unit variance: out_t = rho out_{t-1} + sqrt(1-rho^2) z_t,
    out_0 = z_0. Vectorised in chunks by the closed form
    out_{t0+j} = rho^(j+1) out_{t0-1} + sum_{i<=j} rho^(j-i) e_{t0+i} (chunks short enough
    that rho^-j stays below e^30)."""
    z = rng.standard_normal((T, k))
    e = z * math.sqrt(1 - rho * rho)
    e[0] = z[0]
    out = np.empty_like(z)
    K = max(1, int(30.0 / -math.log(rho)))
    state = np.zeros(k)
    for t0 in range(0, T, K):
        n = min(K, T - t0)
        j = np.arange(n)
        acc = np.cumsum(e[t0:t0 + n] * (rho ** -j)[:, None], axis=0) * (rho ** j)[:, None]
        out[t0:t0 + n] = acc + state[None, :] * (rho ** (j + 1))[:, None]
        state = out[t0 + n - 1]
    return out


def _generate_video(spec, dirs, m, classes, cidx, groups, vid, T, segs, related):
    """Features (T, D) float32 of modality m for one video."""
    D = spec.feature_dim
    rng = np.random.default_rng([spec.seed, zlib.crc32(vid.encode()), m])
    x = np.zeros((T, D), dtype=np.float64)
    t_idx = np.arange(T)
    A = _ACTION[m] * spec.action_strength
    present = sorted({lab for lab, _, _ in segs})
    in_action = np.zeros(T, dtype=bool)

    # action instances
    for lab, st, en in segs:
        a, b = _snippet_span(st, en, T)
        L = b - a + 1
        k = np.arange(L)
        r = min(_RAMP, (L - 1) // 2)
        ramp = np.minimum(1.0, (np.minimum(k, L - 1 - k) + 1) / (r + 1))
        lo_t = (a + k) * SNIPPET_SECONDS
        cover = np.clip((np.minimum(lo_t + SNIPPET_SECONDS, en) - np.maximum(lo_t, st)) / SNIPPET_SECONDS, 0.15, 1.0)
        wob = 1.0 + 0.3 * _ar1(rng, L, 1, 0.7)[:, 0]
        dips = rng.random(L) < 0.08
        wob[dips] *= 0.3
        wob = np.clip(wob, 0.05, 2.0)
        amp = A * rng.uniform(0.6, 1.4) * ramp * cover * wob
        xi = rng.standard_normal(D)
        xi /= np.linalg.norm(xi)
        v = _INSTANCE_COS * dirs.proto[cidx[lab]] + math.sqrt(1 - _INSTANCE_COS ** 2) * xi
        v /= np.linalg.norm(v)
        x[a:b + 1] += amp[:, None] * v[None, :]
        in_action[a:b + 1] = True

    # context: per present class, weight by distance to its instances; related classes weakly
    Cx = _CONTEXT[m] * spec.context_strength
    for lab in present:
        dist = np.full(T, np.inf)
        inside = np.zeros(T, dtype=bool)
        for l2, st, en in segs:
            if l2 != lab:
                continue
            a, b = _snippet_span(st, en, T)
            inside[a:b + 1] = True
            dist = np.minimum(dist, np.where(t_idx < a, a - t_idx, np.where(t_idx > b, t_idx - b, 0)))
        w = np.where(inside, _CTX_INSIDE, _CTX_BASE + (1 - _CTX_BASE) * np.exp(-(np.maximum(dist, 1) - 1) / _CTX_DECAY))
        x += (Cx * w)[:, None] * dirs.context[cidx[lab]][None, :]
    for lab in related:
        x += Cx * _CTX_RELATED * dirs.context[cidx[lab]][None, :]

    # scene of each present group
    for g in sorted({dirs.group_of[cidx[lab]] for lab in present}):
        x += _SCENE[m] * spec.context_strength * dirs.scene[g][None, :]

    # background: slowly drifting mixture
    Bs = _BACKGROUND[m] * spec.background_strength
    if Bs > 0:
        wts = _ar1(rng, T, _N_BG, 0.95) / math.sqrt(_N_BG)
        x += Bs * (wts @ dirs.background)

    # camera-motion bursts (flow)
    if _MOTION[m] > 0:
        for _ in range(rng.poisson(T / 100)):
            L = int(rng.integers(2, 9))
            a = int(rng.integers(0, max(1, T - L + 1)))
            x[a:a + L] += _MOTION[m] * rng.uniform(0.5, 1.0) * dirs.motion[None, :]

    # distractors: unannotated, weaker action-like bursts in background
    if present and spec.distractor_rate > 0:
        for _ in range(rng.poisson(spec.distractor_rate * T / 150)):
            L = int(rng.integers(2, 11))
            a = int(rng.integers(0, max(1, T - L + 1)))
            if in_action[max(0, a - 3):a + L + 3].any():
                continue
            lab = present[int(rng.integers(len(present)))]
            xi = rng.standard_normal(D)
            xi /= np.linalg.norm(xi)
            v = _INSTANCE_COS * dirs.proto[cidx[lab]] + math.sqrt(1 - _INSTANCE_COS ** 2) * xi
            v /= np.linalg.norm(v)
            k = np.arange(L)
            ramp = np.minimum(1.0, (np.minimum(k, L - 1 - k) + 1) / 2)
            x[a:a + L] += (A * rng.uniform(0.3, 0.6) * ramp)[:, None] * v[None, :]

    x = x.astype(np.float32)
    if spec.noise_std > 0:
        x += np.float32(spec.noise_std) * rng.standard_normal((T, D), dtype=np.float32)
    return x


def _spec_matches(root: Path, spec: SyntheticSpec) -> bool:
    try:
        with open(root / SPEC_FILE, "r", encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return False
    return rec.get("complete") is True and rec.get("spec") == spec.to_json()


def make_synthetic_dataset(out_dir, spec: SyntheticSpec | None = None, *, overwrite: bool = False) -> Path:
    """Write the synthetic THUMOS'14-shaped dataset into ``out_dir`` and return it.

    Skips the work when ``out_dir`` already holds a complete dataset of the same spec.
    An existing synthetic dataset of another spec is replaced; any other existing
    non-empty directory is refused (DataError) unless ``overwrite=True``.
    """
    spec = (spec or SyntheticSpec()).validate()
    root = Path(out_dir)
    if root.exists():
        if _spec_matches(root, spec):
            return root
        if not root.is_dir():
            raise DataError(f"{root} exists and is not a directory")
        if any(root.iterdir()) and not (root / SPEC_FILE).exists() and not overwrite:
            raise DataError(f"{root} is a non-empty directory that is not a synthetic dataset; "
                            "refusing to overwrite it (pass overwrite=True or choose another folder)")
    root.parent.mkdir(parents=True, exist_ok=True)

    gt, splits, durations = thumos14_files()
    db = gt["database"]
    classes = sorted({a["label"] for e in db.values() for a in e["annotations"]})
    cidx = {c: k for k, c in enumerate(classes)}
    groups = sorted({_group_of(c) for c in classes})
    grng = np.random.default_rng([spec.seed, 0xC01A])
    dirs = [_Directions(grng, classes, groups, spec.feature_dim) for _ in (_RGB, _FLOW)]
    group_members = {}
    for c in classes:
        group_members.setdefault(_group_of(c), []).append(c)

    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        out_db = {}
        for split in ("train", "test"):
            ids = splits[split][: spec.max_videos] if spec.max_videos else splits[split]
            for mname in ("rgb", "flow"):
                (tmp / "features" / split / mname).mkdir(parents=True, exist_ok=True)
            for vid in ids:
                T, segs = _video_layout(vid, db[vid], durations.get(vid), spec)
                present = {lab for lab, _, _ in segs}
                related = sorted({c for lab in present for c in group_members[_group_of(lab)]} - present)
                for m, mname in ((_RGB, "rgb"), (_FLOW, "flow")):
                    x = _generate_video(spec, dirs[m], m, classes, cidx, groups, vid, T, segs, related)
                    np.save(tmp / "features" / split / mname / f"{vid}.npy", x)
                out_db[vid] = {"subset": split, "duration": round(T * SNIPPET_SECONDS, 4),
                               "annotations": [{"label": lab, "segment": [st, en]} for lab, st, en in segs]}
            with open(tmp / f"split_{split}.txt", "w", encoding="utf-8") as f:
                f.write("".join(v + "\n" for v in ids))
        with open(tmp / "gt.json", "w", encoding="utf-8") as f:
            json.dump({"version": f"cola_fast synthetic THUMOS'14 v{GENERATOR_VERSION}", "classes": classes,
                       "database": out_db}, f)
        with open(tmp / SPEC_FILE, "w", encoding="utf-8") as f:
            json.dump({"spec": spec.to_json(), "complete": True, "classes": classes}, f, indent=1)
        _install(tmp, root, spec)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _install(tmp: Path, root: Path, spec: SyntheticSpec):
    """Rename tmp into place; replace an older dataset atomically-enough (rename it aside first)."""
    try:
        os.rename(tmp, root)  # works when root is absent or an empty directory
        return
    except OSError:
        pass
    if _spec_matches(root, spec):  # a concurrent run finished the same dataset first
        return
    old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
    os.rmdir(old)
    os.rename(root, old)
    os.rename(tmp, root)
    shutil.rmtree(old, ignore_errors=True)
