"""python -m cola_fast.train: train CoLA, evaluate periodically, keep the best checkpoint.

    python -m cola_fast.train                       # default preset (cpu without a GPU, thumos14 with one)
    python -m cola_fast.train --preset tiny --out runs/tiny
    python -m cola_fast.train --preset thumos14 --data-root /data/THUMOS14 --out runs/t14
    python -m cola_fast.train --out runs/t14 --resume   # continue a killed run

A run directory holds config.json, metrics.jsonl (one JSON object per line: train
losses every log interval, mAP at every evaluation), last.pt (for --resume, written
at every evaluation and on Ctrl-C), best.pt (the best average mAP so far),
best_results.json (its detections, ActivityNet results format) and, when TensorBoard is
installed, tb/ event files. Checkpoints are written atomically (temporary file, then
rename), so a crash never leaves a half-written one.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig, get_preset, parse_override
from .evaluation import format_table
from .model import CoLA, CoLALoss, ModelConfig, mining_counts


# --------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------
def atomic_torch_save(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for, but CUDA is not available")
    return dev


def default_cache_dir() -> Path:
    return Path(os.environ.get("COLA_FAST_CACHE", Path.home() / ".cache" / "cola_fast"))


class MetricLog:
    """metrics.jsonl, plus TensorBoard when it is installed."""

    def __init__(self, out: Path, enable_tb: bool = True):
        self.path = out / "metrics.jsonl"
        self.tb = None
        if enable_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"))
            except Exception as e:  # noqa: BLE001 - tensorboard is optional
                self.tb = None
                print(f"note: TensorBoard is not available ({type(e).__name__}: {e}); metrics go to "
                      f"{self.path} only (pip install tensorboard for {out / 'tb'}/)", file=sys.stderr)

    def log(self, step: int, kind: str, values: dict) -> None:
        rec = {"step": step, "kind": kind, "time": time.time(), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def prepare_data(cfg: TrainConfig, log=print):
    from .data import VideoDataset, make_synthetic_dataset, SyntheticSpec

    if cfg.data_root is None:
        spec = SyntheticSpec(seed=cfg.synthetic_seed, feature_dim=cfg.synthetic_feature_dim,
                             time_scale=cfg.synthetic_time_scale)
        name = f"synthetic_thumos14_d{cfg.synthetic_feature_dim}_ts{cfg.synthetic_time_scale:g}_s{cfg.synthetic_seed}"
        t0 = time.time()
        root = make_synthetic_dataset(default_cache_dir() / name, spec)
        log(f"data: built-in synthetic THUMOS'14-shaped dataset at {root} ({time.time() - t0:.1f}s)")
    else:
        root = cfg.data_root
        log(f"data: {root}")
    train = VideoDataset(root, split="train", modality=cfg.modality, num_segments=cfg.num_segments,
                         sampling="random", seed=cfg.seed)
    test = VideoDataset(root, split="test", modality=cfg.modality, num_segments=cfg.num_segments,
                        sampling="uniform", class_names=train.class_names)
    return root, train, test


class BatchStream:
    """Step s's batch is a pure function of (seed, s): epoch e visits the videos in the
    order of a permutation drawn from (seed, e), and the random-perturb sampling of step
    s draws from (seed, s). A resumed run therefore sees exactly the batches the
    uninterrupted run would have seen.

    Two schedules (COLA_SPEC 4): "stream" (the default) reads the permutations as one
    endless stream, every batch full, batches crossing epoch ends; "official" cuts each
    epoch's permutation into batches of B without drop_last, as the official code's
    shuffled DataLoader does, so an epoch's last batch holds n mod B videos when B does
    not divide n.

    Two data paths: host (numpy features, one sampling call per video, then a copy to
    the device) and device (every feature of the split in one DeviceFeatureBank tensor on
    the device, sampling vectorised there, the batch one gather; the video order is
    uploaded once per `chunk` steps, so a step never waits for the host)."""

    def __init__(self, ds, batch_size: int, num_segments: int, seed: int,
                 device: torch.device | None = None, chunk: int = 500, schedule: str = "stream"):
        # videos without any action label cannot be trained on (label / sum(label))
        self.index = torch.nonzero(ds.labels.sum(1) > 0).flatten().numpy()
        if len(self.index) == 0:
            raise ValueError("no training video has an action label")
        self.ds = ds
        self.skipped = len(ds) - len(self.index)
        self.labels = ds.labels[torch.from_numpy(self.index)].float()
        self.B, self.N, self.seed = batch_size, num_segments, seed
        if schedule not in ("stream", "official"):
            raise ValueError(f"batch_schedule must be 'stream' or 'official', got {schedule!r}")
        self.schedule = schedule
        self.batches_per_epoch = -(-len(self.index) // batch_size)  # official schedule: ceil(n / B)
        self._perm_cache: dict[int, np.ndarray] = {}
        self.bank = None
        if device is not None:
            from .data import DeviceFeatureBank
            self.bank = DeviceFeatureBank(ds, device=device)
            self.device = torch.device(device)
            self.chunk = chunk
            self._chunk_id, self._chunk_dev = -1, None
            self._gen = torch.Generator(device=self.device)

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.index))}
        return self._perm_cache[epoch]

    def picks(self, steps: range) -> np.ndarray:
        """Dataset indices of the videos of each step in steps: (len(steps), B)."""
        n = len(self.index)
        out = np.empty((len(steps), self.B), dtype=np.int64)
        for r, step in enumerate(steps):
            for j in range(self.B):
                p = step * self.B + j
                out[r, j] = self.index[self._perm(p // n)[p % n]]
        return out

    def step_videos(self, step: int) -> np.ndarray:
        """Dataset indices of step's videos: B of them, fewer for the last batch of an
        epoch under the official schedule."""
        if self.schedule == "official":
            epoch, k = divmod(step, self.batches_per_epoch)
            return self.index[self._perm(epoch)[k * self.B:(k + 1) * self.B]]
        return self.picks(range(step, step + 1))[0]

    def batch(self, step: int, rows: slice = slice(None)):
        """Features (b,N,D) and labels (b,C) of step's batch, restricted to rows (the
        share of one process under torchrun)."""
        if self.bank is not None and self.schedule == "official":  # one small upload per step
            vids = torch.from_numpy(self.step_videos(step)).to(self.device)[rows]
            self._gen.manual_seed(int(np.random.default_rng([self.seed, 2, step]).integers(2**62)))
            b = self.bank.random_batch(vids, self.N, self._gen)
            return b["features"], b["label"]
        if self.bank is not None:
            c = step // self.chunk
            if c != self._chunk_id:
                first = c * self.chunk
                self._chunk_dev = torch.from_numpy(self.picks(range(first, first + self.chunk))).to(self.device)
                self._chunk_id = c
            vids = self._chunk_dev[step - c * self.chunk][rows]
            self._gen.manual_seed(int(np.random.default_rng([self.seed, 2, step]).integers(2**62)))
            b = self.bank.random_batch(vids, self.N, self._gen)
            return b["features"], b["label"]
        from .data import sample_random_perturb

        picks = self.step_videos(step)
        js = list(range(len(picks)))[rows]
        feats = []
        for j in js:
            x = self.ds.features_of(int(picks[j]))            # (T, D) float32 numpy
            rng = np.random.default_rng([self.seed, 2, step, j])
            feats.append(x[sample_random_perturb(x.shape[0], self.N, rng)])
        x = torch.from_numpy(np.stack(feats))
        return x, self.ds.labels[torch.from_numpy(picks[js])].float()


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: CoLA, test_ds, cfg: TrainConfig, device: torch.device, plot_dir: Path | None = None,
             gt=None):
    """Run the model over the test split, build proposals, compute detection mAP.
    Returns (metrics dict, results dict in the ActivityNet results format). With
    plot_dir, the first cfg.plot_videos test videos get a PNG there; a plot that fails
    is reported and skipped, never fatal to the run."""
    from .evaluation import evaluate_detection, generate_proposals, results_document

    pcfg = cfg.proposal_config()
    was_training = model.training
    model.eval()
    results = {}
    plotter = VideoPlotter(plot_dir, cfg) if plot_dir is not None else None
    for i in range(len(test_ds)):
        item = test_ds[i]
        x = item["features"].to(device)[None]
        out = model(x, mine=False)
        curves = [out[k][0].float().cpu().numpy() for k in ("video_scores", "cas", "actionness")]
        dets = generate_proposals(*curves, item["num_snippets"], test_ds.class_names, pcfg, impl=cfg.eval_impl)
        results[item["vid"]] = dets
        if plotter is not None and i < cfg.plot_videos:
            plotter.plot(item, curves, dets, test_ds)
    model.train(was_training)
    res = evaluate_detection(test_ds.gt_path if gt is None else gt, {"results": results}, subset="test",
                             tiou_thresholds=np.asarray(cfg.tiou), impl=cfg.eval_impl)
    return res, results_document(results)


class VideoPlotter:
    """One PNG per test video at an evaluation (--set plot_videos=N). Any failure while
    plotting (matplotlib missing or broken, a full disk) is printed once and plotting is
    switched off for the rest of the run: a picture is never worth a training run."""

    failed = False  # class-wide: once plotting has failed, later evaluations skip it

    def __init__(self, plot_dir: Path, cfg: TrainConfig):
        self.dir, self.cfg = Path(plot_dir), cfg

    def plot(self, item, curves, dets, test_ds) -> None:
        if VideoPlotter.failed:
            return
        from .visualize import plot_video
        vid = item["vid"]
        anns = [{"label": lab, "segment": [s, e]} for lab, s, e in test_ds.annotations[vid]]
        video_scores, cas, actionness = curves
        try:
            plot_video(self.dir / f"{vid}.png", vid, actionness, cas, video_scores, test_ds.class_names,
                       dets, item["num_snippets"], anns, snippet_seconds=self.cfg.snippet_seconds)
        except Exception as e:  # noqa: BLE001 - see the class docstring
            VideoPlotter.failed = True
            print(f"warning: plotting {vid} failed ({type(e).__name__}: {e}); no more plots in this run",
                  file=sys.stderr)


def check_plotting(cfg: TrainConfig) -> bool:
    """Before the first step: plot_videos > 0 needs matplotlib. Without it, say so once
    (with the install command) and train without plots. True when plots will be made."""
    VideoPlotter.failed = False
    if cfg.plot_videos <= 0:
        return False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        VideoPlotter.failed = True
        print(f"warning: plot_videos={cfg.plot_videos} needs matplotlib, which is not installed "
              f"(pip install cola_fast[plot]); training without plots", file=sys.stderr)
        return False
    return True


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def build(cfg: TrainConfig, feature_dim: int, num_classes: int, device: torch.device):
    backend = None if cfg.backend == "auto" else cfg.backend
    mcfg = ModelConfig(feature_dim=feature_dim, num_classes=num_classes, embed_dim=cfg.embed_dim,
                       embed_kernel=cfg.embed_kernel, classifier=cfg.classifier, dropout=cfg.dropout,
                       r_easy=cfg.r_easy, r_hard=cfg.r_hard, m=cfg.m, M=cfg.M)
    model = CoLA(mcfg, backend=backend).to(device)
    loss_fn = CoLALoss(cfg.lambda_snico, cfg.tau, backend=backend)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    return model, loss_fn, opt


def preflight(cfg: TrainConfig, world: int) -> None:
    """Settings that can only be judged at run time, checked before any work (plots,
    batch schedule), so that nothing fails after the first step for a reason known before it."""
    check_plotting(cfg)
    if cfg.batch_schedule == "official" and world > 1:
        raise ValueError("batch_schedule=official runs in one process: its short last batch of an epoch "
                         "cannot be split evenly across processes (use batch_schedule=stream under torchrun)")


def compile_step(net, loss_fn, cfg: TrainConfig, say=print):
    """With cfg.compile, the model and the loss of the training step under torch.compile
    (the fused ops are custom ops that compile into the graph). Evaluation runs eagerly."""
    if not cfg.compile:
        return net, loss_fn
    say("compile: torch.compile on the model and the loss; the first steps include the compile time")
    if cfg.backend in ("auto", "native") and cfg.dropout > 0 and resolve_device(cfg.device).type == "cpu":
        say("compile: note: on the CPU the fused dropout takes a new integer seed every step, which "
            "torch.compile recompiles for until its limit (measured slower than eager on the tiny preset); "
            "--backend reference compiles cleanly")
    return torch.compile(net), torch.compile(loss_fn)


class Dist:
    """torchrun / torch.distributed context: rank, world size, and the device of this rank."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_name)
        if self.world > 1:
            import torch.distributed as dist
            if device.type == "cuda":
                device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        self.device = device
        self.main = self.rank == 0

    def mean(self, values: dict) -> dict:
        if self.world == 1:
            return values
        import torch.distributed as dist
        t = torch.tensor([values[k] for k in sorted(values)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(sorted(values), t.tolist())}

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self):
        if self.world > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def train(cfg: TrainConfig, out: Path, resume: bool = False, quiet: bool = False,
          deterministic: bool = False) -> dict:
    """Train one model; returns a summary dict (best mAP, timings). Under torchrun the
    global batch is split across ranks (DistributedDataParallel); evaluation,
    checkpoints and logs happen on rank 0."""
    out = Path(out)
    dist_ctx = Dist(cfg.device)
    device, is_main = dist_ctx.device, dist_ctx.main
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    quiet = quiet or not is_main
    say = (lambda *a, **k: None) if quiet else print
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    mining_counts(cfg.num_segments, cfg.r_easy, cfg.r_hard)  # clear error before any work
    if cfg.M > cfg.num_segments:
        raise ValueError(f"num_segments={cfg.num_segments} is shorter than the hard-mining window M={cfg.M}")
    if cfg.amp not in ("none", "bf16"):
        raise ValueError(f"amp must be 'none' or 'bf16', got {cfg.amp!r}")
    if cfg.batch_size % dist_ctx.world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {dist_ctx.world} processes")

    state = None
    if resume:
        ck = out / "last.pt"
        if not ck.exists():
            raise ValueError(f"--resume given but {ck} does not exist")
        state = torch.load(ck, map_location="cpu", weights_only=True)
        saved = state["config"]
        if saved != json.loads(json.dumps(cfg.to_dict())):
            diff = sorted(k for k, v in cfg.to_dict().items() if saved.get(k) != v)
            say(f"resume: using the saved configuration of {ck} (the command line differed in {diff})")
            cfg = TrainConfig(**saved)

    preflight(cfg, dist_ctx.world)
    root, train_ds, test_ds = prepare_data(cfg, log=say)
    on_device = cfg.data_on_device == "yes" or (cfg.data_on_device == "auto" and device.type == "cuda")
    stream = BatchStream(train_ds, cfg.batch_size, cfg.num_segments, cfg.seed,
                         device=device if on_device else None, schedule=cfg.batch_schedule)
    if stream.skipped:
        say(f"data: {stream.skipped} training videos have no action label and are skipped")
    torch.manual_seed(cfg.seed)
    model, loss_fn, opt = build(cfg, train_ds.feature_dim, len(train_ds.class_names), device)
    if cfg.init and state is None:
        from .official import init_model
        init_model(model, cfg.init, say)
    from .ops import describe
    say(f"device: {device}  processes: {dist_ctx.world}  backend: {cfg.backend}  available: {describe()}")
    say(f"model: {sum(p.numel() for p in model.parameters()):,} parameters; "
        f"train videos {len(stream.index)}, test videos {len(test_ds)}, classes {len(train_ds.class_names)}")

    start, best = 0, {"average_mAP": -1.0, "step": -1}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, best = state["step"], state["best"]
        say(f"resume: from step {start} (best average mAP so far {100 * max(best['average_mAP'], 0):.2f} "
            f"at step {best['step']})")
    net = model
    if dist_ctx.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    net, loss_fn = compile_step(net, loss_fn, cfg, say)
    metrics = MetricLog(out) if is_main else None
    from .evaluation import load_gt
    test_gt = load_gt(test_ds.gt_path)  # validated once, reused at every evaluation
    if is_main:
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))

    def checkpoint(step: int, path: Path):
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                           "best": best, "config": cfg.to_dict(), "class_names": train_ds.class_names,
                           "feature_dim": train_ds.feature_dim}, path)

    interrupted = {"flag": False}

    def on_signal(signum, frame):  # finish the current step, save, exit
        interrupted["flag"] = True

    old_handlers = {sg: signal.signal(sg, on_signal) for sg in (signal.SIGINT, signal.SIGTERM)}
    per_rank = cfg.batch_size // dist_ctx.world
    rows = slice(dist_ctx.rank * per_rank, (dist_ctx.rank + 1) * per_rank)
    train_seconds = 0.0
    try:
        from tqdm import tqdm
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", unit="step",
                   disable=quiet, dynamic_ncols=True, mininterval=1.0)
        net.train()
        t_train = time.time()
        # running sums stay on the device: the step itself never waits for the host
        run = {k: torch.zeros((), device=device) for k in ("loss", "loss_action", "loss_snico")}
        n_run = 0
        for step in bar:
            # dropout and keep masks are a function of (seed, step, rank): resumable, repeatable
            torch.manual_seed((cfg.seed * 1_000_003 + step) * 64 + dist_ctx.rank)
            x, y = stream.batch(step, rows)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                out_ = net(x)
            loss, parts = loss_fn(out_, y)  # losses in float32 (BCE is not autocast-safe)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k in run:
                run[k] += parts[k]
            n_run += 1
            done = step + 1
            if done % 10 == 0 or done == cfg.steps:  # one host sync per 10 steps
                avg = dist_ctx.mean({k: float(v) / n_run for k, v in run.items()})
                for v in run.values():
                    v.zero_()
                n_run = 0
                if not math.isfinite(avg["loss"]):
                    if is_main:
                        checkpoint(step, out / "crash.pt")
                    raise FloatingPointError(f"loss became {avg['loss']} at step {done}; "
                                             f"state saved to {out / 'crash.pt'}")
                if is_main:
                    bar.set_postfix(loss=f"{avg['loss']:.4f}", best=f"{100 * max(best['average_mAP'], 0):.2f}")
                    metrics.log(done, "train", avg)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                if is_main:
                    t0 = time.time()
                    res, results = evaluate(model, test_ds, cfg, device,
                                            plot_dir=out / "plots" / f"step{done:06d}" if cfg.plot_videos else None,
                                            gt=test_gt)
                    dt = time.time() - t0
                    metrics.log(done, "eval", {"average_mAP": res["average_mAP"], "eval_seconds": dt,
                                               **{f"mAP@{t:g}": v for t, v in zip(res["tiou_thresholds"], res["mAP"])}})
                    improved = res["average_mAP"] > best["average_mAP"]
                    if improved:
                        best = {"average_mAP": res["average_mAP"], "step": done, "mAP": res["mAP"],
                                "tiou_thresholds": res["tiou_thresholds"]}
                        checkpoint(done, out / "best.pt")
                        atomic_write_text(out / "best_results.json", json.dumps(results))
                    checkpoint(done, out / "last.pt")
                    if not quiet:
                        bar.write(f"step {done}: evaluation {dt:.1f}s{'  (new best)' if improved else ''}\n"
                                  + format_table(res))
                dist_ctx.barrier()
            if interrupted["flag"]:
                if is_main:
                    checkpoint(done, out / "last.pt")
                    say(f"\ninterrupted at step {done}: state saved to {out / 'last.pt'}; continue with --resume")
                bar.close()
                raise KeyboardInterrupt
        bar.close()
        train_seconds = time.time() - t_train
    finally:
        for sg, h in old_handlers.items():
            signal.signal(sg, h)
        if metrics is not None:
            metrics.close()
        dist_ctx.close()

    summary = {"best": best, "train_seconds": train_seconds, "steps": cfg.steps, "seed": cfg.seed,
               "out": str(out), "processes": dist_ctx.world}
    if is_main:
        if best["step"] >= 0:
            say(f"\nfinal: best checkpoint at step {best['step']} ({out / 'best.pt'})")
            say(format_table({"tiou_thresholds": best["tiou_thresholds"], "mAP": best["mAP"],
                                  "average_mAP": best["average_mAP"]}))
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _preset_defaults(name: str) -> str:
    """'thumos14 6000, anet12 100000, ...': a field's default in each preset, for --help."""
    from .config import PRESETS
    return ", ".join(f"{k} {getattr(v, name)}" for k, v in PRESETS.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cola_fast.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Settings are applied in this order, later ones winning: the preset, "
                                       "--config FILE, --init's sizes, the named flags, --set.")
    p.add_argument("--preset", default=None,
                   help="thumos14 | anet12 | cpu | cpu-large | tiny | auto (default: auto = thumos14 with a GPU, "
                        "cpu without; with --config, the preset named in FILE)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a JSON config, e.g. a run's config.json: its fields replace the preset's "
                        "(default: none)")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from these weights: an official CoLA state dict (.pkl/.pth) or a cola_fast "
                        "checkpoint; embed_dim and embed_kernel follow the weights' shapes (default: random init)")
    p.add_argument("--data-root", default=None,
                   help="dataset in the COLA_SPEC layout (default: the built-in synthetic data)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt (default: off)")
    p.add_argument("--steps", type=int, help=f"training steps (default: the preset's: {_preset_defaults('steps')})")
    p.add_argument("--eval-every", type=int,
                   help=f"evaluate every this many steps (default: the preset's: {_preset_defaults('eval_every')})")
    p.add_argument("--batch-size", type=int,
                   help=f"videos per step (default: the preset's: {_preset_defaults('batch_size')})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default: the preset's: {_preset_defaults('lr')})")
    p.add_argument("--seed", type=int, help="seed of the weights, batches and dropout (default: 0)")
    p.add_argument("--num-segments", type=int,
                   help=f"snippets sampled per training video, T (default: the preset's: "
                        f"{_preset_defaults('num_segments')})")
    p.add_argument("--modality", choices=["all", "rgb", "flow"], help="feature channels used (default: all)")
    p.add_argument("--backend", choices=["auto", "reference", "native", "triton"],
                   help="implementation of the fused ops (default: auto, the fastest available)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice; tiny preset 1)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any config field, e.g. --set plot_videos=4, --set compile=true, "
                        "--set batch_schedule=official, --set feature_fps=30 (see cola_fast/config.py; "
                        "repeatable; default: none)")
    p.add_argument("--seeds", help="comma-separated seeds: one run per seed in OUT/seed<N>, then mean and std "
                                   "(default: one run with --seed)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only (a repeated CPU run is bit-identical) (default: off)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or tables (default: off)")
    return p


def read_config_file(path) -> dict:
    """The fields of a JSON config file (such as a run's config.json), checked against
    TrainConfig's fields; ValueError naming the file otherwise."""
    import dataclasses
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of config fields, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"--config {path}: unknown config fields {unknown}")
    return data


def config_from_args(args) -> TrainConfig:
    """The run's TrainConfig: preset < --config FILE < --init's sizes < named flags < --set."""
    from_file = read_config_file(args.config) if args.config else {}
    preset = args.preset or from_file.get("preset") or "auto"
    if preset == "auto":
        preset = "thumos14" if torch.cuda.is_available() else "cpu"
    cfg = get_preset(preset)
    try:
        cfg = cfg.replace(**{k: v for k, v in from_file.items() if k != "preset"})
    except (TypeError, ValueError) as e:
        raise ValueError(f"--config {args.config}: {e}") from None
    if args.init:
        from .official import load_any_weights
        _, dims, _ = load_any_weights(args.init)
        cfg = cfg.replace(init=args.init, embed_dim=dims["embed_dim"], embed_kernel=dims["embed_kernel"])
    named = {"data_root": args.data_root, "steps": args.steps, "eval_every": args.eval_every,
             "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
             "num_segments": args.num_segments, "modality": args.modality, "backend": args.backend,
             "device": args.device, "threads": args.threads}
    cfg = cfg.replace(**{k: v for k, v in named.items() if v is not None})
    for item in args.set:
        cfg = parse_override(cfg, item)
    if cfg.steps < 1 or cfg.eval_every < 1 or cfg.batch_size < 1:
        raise ValueError("steps, eval_every and batch_size must be >= 1")
    return cfg


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()] if args.seeds else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/{cfg.preset}")
    try:
        if not seeds:
            train(cfg, out, resume=args.resume, quiet=args.quiet, deterministic=args.deterministic)
            return 0
        summaries = []
        for seed in seeds:
            print(f"\n=== seed {seed} ===")
            summaries.append(train(cfg.replace(seed=seed), out / f"seed{seed}", resume=args.resume,
                                   quiet=args.quiet, deterministic=args.deterministic))
        table = seeds_table(summaries)
        print("\n" + table)
        atomic_write_text(out / "seeds.md", table + "\n")
    except KeyboardInterrupt:
        return 130
    except (ValueError, FloatingPointError) as e:  # DataError and friends: a clear message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def seeds_table(summaries: list) -> str:
    """One row per seed (mAP at each tIoU and the average, percent), then mean and std."""
    th = summaries[0]["best"]["tiou_thresholds"]
    head = "| seed | " + " | ".join(f"{t:g}" for t in th) + " | avg | best step |"
    lines = [head, "|" + "---|" * (len(th) + 3)]
    rows = []
    for s in summaries:
        vals = [100 * v for v in s["best"]["mAP"]] + [100 * s["best"]["average_mAP"]]
        rows.append(vals)
        lines.append(f"| {s['seed']} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {s['best']['step']} |")
    a = np.asarray(rows)
    lines.append("| mean | " + " | ".join(f"{v:.2f}" for v in a.mean(0)) + " | |")
    lines.append("| std | " + " | ".join(f"{v:.2f}" for v in a.std(0, ddof=1 if len(a) > 1 else 0)) + " | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
