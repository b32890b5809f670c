"""python -m cola_fast.train: train CoLA, evaluate periodically, keep the best checkpoint.

    python -m cola_fast.train                       # default preset (cpu without a GPU, thumos14 with one)
    python -m cola_fast.train --preset tiny --out runs/tiny
    python -m cola_fast.train --preset thumos14 --data-root /data/THUMOS14 --out runs/t14
    python -m cola_fast.train --out runs/t14 --resume   # continue a killed run
    python -m cola_fast.train --out runs/t14 --resume --steps 9000   # extend a finished run

A fresh run refuses a folder that holds a run: add --resume to continue it, or
--overwrite to move the old run aside (renamed <out>.replaced-<time>). One trainer at a
time per folder (a lock; one left by a killed trainer never blocks). --resume continues
from the last checkpoint, or from step 0 when the run has none yet; it keeps the run's
own settings except steps, eval_every, plot_videos, threads and device, and reports
every difference. A user error (a setting, a file, a full disk) is one line on stderr
and exit status 2. See cola_fast/run.py for the run folder's life cycle.

A run directory holds config.json, env.json (where it ran: versions, CPU, GPU, threads,
determinism, backends; compared on --resume), metrics.jsonl (one JSON object per line: train
losses every log interval, mAP at every evaluation), last.pt (for --resume, written
at every evaluation and on Ctrl-C), best.pt (the best average mAP so far),
best_results.json (its detections, ActivityNet results format), last_results.json (the
latest evaluation's detections: the last step's at the end), summary.json (both "best",
chosen on the test set as the published code does, and "last") and, when TensorBoard is
installed, tb/ event files. Checkpoints are written atomically (temporary file, then
rename), so a crash never leaves a half-written one.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .cli import ArgumentParser, fail, one_line
from .config import TrainConfig, get_preset, parse_override, renamed_fields, resolve_device
from .data import BatchStream, prepare_data
from .env import environment
from .detect import check_plotting, evaluate
from .evaluation import format_table
from .model import CoLA, CoLALoss, ModelConfig
from .ops import module as op_module
from .run import RunError, RunFolder, open_run, restore_training_state


# ======================================================================================
# the training loop: one run, from its folder to its summary (train)
# ======================================================================================
class MetricLog:
    """metrics.jsonl, plus TensorBoard when it is installed."""

    def __init__(self, out: Path, enable_tb: bool = True, say=print):
        self.path = out / "metrics.jsonl"
        self.tb = None
        if enable_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"))
            except Exception as e:  # noqa: BLE001 - tensorboard is optional
                self.tb = None
                say(f"note: TensorBoard is not available ({type(e).__name__}: {e}); metrics go to "
                    f"{self.path} only (pip install tensorboard for {out / 'tb'}/)")

    def log(self, step: int, kind: str, values: dict) -> None:
        rec = {"step": step, "kind": kind, "time": time.time(), **values}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        except OSError as e:  # a torn last line is dropped on --resume (RunFolder.trim_metrics)
            raise RunError(f"cannot write {self.path}: {e.strerror or e}") from None
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()


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


class PeerLost(Exception):
    """Another process of a torchrun run died or stopped answering: this one stops too,
    with one line (exit status 1), rather than a collective's traceback."""


def dist_timeout_s() -> int:
    """How long a process waits in a collective for the others: long enough for rank 0's
    evaluation and checkpoint while the others wait at the barrier (30 minutes; set
    COLA_FAST_DIST_TIMEOUT, in seconds, for a longer evaluation)."""
    return int(os.environ.get("COLA_FAST_DIST_TIMEOUT", "1800"))


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
                dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                        timeout=datetime.timedelta(seconds=dist_timeout_s()))
        self.device = device
        self.main = self.rank == 0

    def mean(self, values: dict) -> dict:
        if self.world == 1:
            return values
        import torch.distributed as dist
        t = torch.tensor([values[k] for k in sorted(values)], dtype=torch.float64, device=self.device)
        self.collective(dist.all_reduce, t)
        return {k: float(v) / self.world for k, v in zip(sorted(values), t.tolist())}

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist
            self.collective(dist.barrier)

    def agree(self, error: str | None) -> str | None:
        """Rank 0's error message (or None), the same on every rank: a check that only
        rank 0 makes (the run folder) fails on every rank with the same line."""
        if self.world == 1:
            return error
        import torch.distributed as dist
        box = [error]
        self.collective(dist.broadcast_object_list, box, src=0)
        return box[0]

    def collective(self, fn, *args, **kw):
        """fn(*args, **kw), a call that talks to the other processes (DDP's forward and
        backward, a barrier, an all-reduce): a RuntimeError in it means the group broke
        (a 1-process run calls the same model code outside it, where a bug keeps its
        traceback)."""
        if self.world == 1:
            return fn(*args, **kw)
        try:
            return fn(*args, **kw)
        except RuntimeError as e:  # torch.distributed.DistError and gloo's own: the group broke
            raise PeerLost(f"process {self.rank} of {self.world}: the run's process group broke "
                           f"({one_line(e)[:160]}): another process stopped or did not answer within "
                           f"{dist_timeout_s()} s; its own message says why") from None

    def close(self):
        if self.world > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def check_backend(backend: str, device: torch.device) -> None:
    """ValueError, before any work, when backend cannot run the ops on device."""
    from .ops import BackendUnavailable, resolve
    for op in ("temporal_conv_embed", "snico_loss_fwd", "mine_snippets"):
        try:
            resolve(None if backend == "auto" else backend, device, op)
        except BackendUnavailable as e:
            raise ValueError(f"backend={backend}: {e}") from None


class Training:
    """One run being trained: model, optimizer, data stream, and the step loop that
    evaluates and checkpoints into its RunFolder (rank 0 only under torchrun)."""

    def __init__(self, cfg: TrainConfig, folder: RunFolder, dist_ctx: Dist, say, quiet: bool):
        self.cfg, self.folder, self.dist, self.say, self.quiet = cfg, folder, dist_ctx, say, quiet
        self.device, self.main = dist_ctx.device, dist_ctx.main
        _, self.train_ds, self.test_ds = prepare_data(cfg, log=say)
        on_device = cfg.data_on_device == "yes" or (cfg.data_on_device == "auto" and self.device.type == "cuda")
        self.stream = BatchStream(self.train_ds, cfg.batch_size, cfg.num_segments, cfg.seed,
                                  device=self.device if on_device else None, schedule=cfg.batch_schedule)
        if self.stream.skipped:
            say(f"data: {self.stream.skipped} training videos have no action label and are skipped")
        from .evaluation import load_gt
        self.test_gt = load_gt(self.test_ds.gt_path)  # validated once, reused at every evaluation
        check_test_split(self.test_ds, self.test_gt)
        torch.manual_seed(cfg.seed)
        self.model, self.loss_fn, self.opt = build(cfg, self.train_ds.feature_dim,
                                                   len(self.train_ds.class_names), self.device)
        self.start, self.best = 0, {"average_mAP": -1.0, "step": -1}
        self.last = None  # the latest evaluation (the last step's once the run is finished)
        self.train_seconds = 0.0
        self.interrupted = False

    def describe(self) -> None:
        from .ops import describe
        say, ds = self.say, self.train_ds
        say(f"device: {self.device}  processes: {self.dist.world}  backend: {self.cfg.backend}  "
            f"available: {describe()}")
        say(f"model: {sum(p.numel() for p in self.model.parameters()):,} parameters; "
            f"train videos {len(self.stream.index)}, test videos {len(self.test_ds)}, classes {len(ds.class_names)}")

    def restore(self, path: Path, state: dict) -> None:
        restore_training_state(path, state, self.model, self.opt)
        self.start, self.best = state["step"], state["best"]
        self.last = state.get("last")  # absent from checkpoints written before it was recorded

    def checkpoint(self, step: int, name: str) -> None:
        self.folder.save_checkpoint_with_choices(name, {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": step,
            "best": self.best, "last": self.last, "config": self.cfg.to_dict(),
            "class_names": self.train_ds.class_names, "feature_dim": self.train_ds.feature_dim})

    def diverged(self, step: int, what: str):
        """Save crash.pt; returns the error to raise (the loss or the weights are no longer numbers)."""
        if self.main:
            self.checkpoint(step, "crash.pt")
        return FloatingPointError(
            f"training diverged: {what} at step {step} (lr={self.cfg.lr:g}); the state is saved in "
            f"{self.folder.path / 'crash.pt'}: lower lr or check the features")

    def run(self) -> None:
        """Steps start .. cfg.steps; Ctrl-C / SIGTERM finish the step, save last.pt and
        raise KeyboardInterrupt."""
        cfg = self.cfg
        self.metrics = MetricLog(self.folder.path, say=self.say) if self.main else None
        try:
            from tqdm import tqdm
            self.bar = tqdm(range(self.start, cfg.steps), initial=self.start, total=cfg.steps, desc="train",
                            unit="step", disable=self.quiet, dynamic_ncols=True, mininterval=1.0)
            t_train = time.time()
            self._loop()
            self.bar.close()
            self.train_seconds = time.time() - t_train
        finally:
            if self.metrics is not None:
                self.metrics.close()

    def catch_signals(self) -> None:
        """From here on Ctrl-C / SIGTERM only set a flag: the step loop finishes its step, saves
        last.pt and stops (a signal during the set-up stops it after its first step)."""
        def on_signal(signum, frame):
            self.interrupted = True
        self._old_handlers = {sg: signal.signal(sg, on_signal) for sg in (signal.SIGINT, signal.SIGTERM)}

    def release_signals(self) -> None:
        for sg, h in getattr(self, "_old_handlers", {}).items():
            signal.signal(sg, h)

    def _loop(self) -> None:
        cfg, device, dist_ctx = self.cfg, self.device, self.dist
        net = self.model
        if dist_ctx.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        net, loss_fn = compile_step(net, self.loss_fn, cfg, self.say)
        per_rank = cfg.batch_size // dist_ctx.world
        rows = slice(dist_ctx.rank * per_rank, (dist_ctx.rank + 1) * per_rank)
        net.train()
        # running sums stay on the device: the step itself never waits for the host
        run = {k: torch.zeros((), device=device) for k in ("loss", "loss_action", "loss_snico")}
        n_run = 0
        for step in self.bar:
            # dropout and keep masks are a function of (seed, step, rank): resumable, repeatable
            torch.manual_seed((cfg.seed * 1_000_003 + step) * 64 + dist_ctx.rank)
            x, y = self.stream.batch(step, rows)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                out_ = dist_ctx.collective(net, x)  # DDP's forward may sync buckets
            loss, parts = loss_fn(out_, y)  # losses in float32 (BCE is not autocast-safe)
            self.opt.zero_grad(set_to_none=True)
            dist_ctx.collective(loss.backward)  # under torchrun DDP all-reduces the gradients in it
            self.opt.step()
            for k in run:
                run[k] += parts[k]
            n_run += 1
            done = step + 1
            if done % 10 == 0 or done == cfg.steps:  # one host sync per 10 steps
                avg = dist_ctx.mean({k: float(v) / n_run for k, v in run.items()})
                op_module("snico_loss").check_index_errors()  # the Triton SniCo kernels' deferred index check (synced above)
                for v in run.values():
                    v.zero_()
                n_run = 0
                if not math.isfinite(avg["loss"]):
                    raise self.diverged(done, f"the loss became {avg['loss']}")
                if self.main:
                    self.bar.set_postfix(loss=f"{avg['loss']:.4f}",
                                         best=f"{100 * max(self.best['average_mAP'], 0):.2f}")
                    self.metrics.log(done, "train", avg)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                if self.main:
                    self._evaluate_and_save(done)
                dist_ctx.barrier()
            if self.interrupted:
                if self.main:
                    self.checkpoint(done, "last.pt")
                    self.say(f"\ninterrupted at step {done}: state saved to {self.folder.path / 'last.pt'}; "
                             "continue with --resume")
                self.bar.close()
                raise KeyboardInterrupt

    def _evaluate_and_save(self, done: int) -> None:
        cfg, out = self.cfg, self.folder.path
        t0 = time.time()
        try:
            res, results = evaluate(self.model, self.test_ds, cfg, self.device,
                                    plot_dir=out / "plots" / f"step{done:06d}" if cfg.plot_videos else None,
                                    gt=self.test_gt)
        except ValueError:  # the proposals refuse NaN curves: a diverged model between loss checks
            if all(torch.isfinite(p).all() for p in self.model.parameters()):
                raise
            raise self.diverged(done, "the weights became non-finite") from None
        dt = time.time() - t0
        self.metrics.log(done, "eval", {"average_mAP": res["average_mAP"], "eval_seconds": dt,
                                        **{f"mAP@{t:g}": v for t, v in zip(res["tiou_thresholds"], res["mAP"])}})
        improved = res["average_mAP"] > self.best["average_mAP"]
        self.last = {"average_mAP": res["average_mAP"], "step": done, "mAP": res["mAP"],
                     "tiou_thresholds": res["tiou_thresholds"]}
        # the latest evaluation's detections: the last step's once the run is finished
        self.folder.write_text("last_results.json", json.dumps(results))
        if improved:
            self.best = dict(self.last)
            self.checkpoint(done, "best.pt")
            self.folder.write_text("best_results.json", json.dumps(results))
        self.checkpoint(done, "last.pt")
        if not self.quiet:
            self.bar.write(f"step {done}: evaluation {dt:.1f}s{'  (new best)' if improved else ''}\n"
                           + format_table(res))


def check_test_split(test_ds, gt: dict) -> None:
    """The evaluation needs the test videos under subset "test" of gt.json, with at least
    one annotation: checked before the first step, not at the first evaluation."""
    db = gt["database"]
    wrong = [v for v in test_ds.video_ids if db[v]["subset"] != "test"]
    if wrong:
        raise ValueError(f"{test_ds.gt_path}: test videos must have subset \"test\"; {wrong[0]!r} has "
                         f"{db[wrong[0]]['subset']!r} ({len(wrong)} such videos)")
    if not any(db[v]["annotations"] for v in test_ds.video_ids):
        raise ValueError(f"{test_ds.gt_path}: no video of split_test.txt has an annotation: nothing to evaluate")


def train(cfg: TrainConfig, out: Path | RunFolder, resume: bool = False, quiet: bool = False,
          deterministic: bool = False, overwrite: bool = False) -> dict:
    """Train one model into the run folder out; returns a summary dict (best mAP,
    timings). A fresh run refuses a folder holding a run unless overwrite (which moves
    it aside); resume continues from its checkpoint, or from step 0 when it has none.
    Under torchrun the global batch is split across ranks (DistributedDataParallel);
    the folder, evaluation, checkpoints and logs are rank 0's."""
    cfg.validate()
    dist_ctx = Dist(cfg.device)
    check_backend(cfg.backend, dist_ctx.device)
    preflight(cfg, dist_ctx.world)
    if cfg.batch_size % dist_ctx.world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {dist_ctx.world} processes")
    quiet = quiet or not dist_ctx.main
    say = (lambda *a, **k: None) if quiet else print

    def note(msg):  # what a user must know even with --quiet
        if dist_ctx.main:
            print(msg, file=sys.stderr)

    folder = out if isinstance(out, RunFolder) else RunFolder(out)
    restore_execution = run = None
    try:
        cfg, ck = open_run(folder, cfg, resume, overwrite, dist_ctx, note)
        restore_execution = set_execution(cfg, deterministic, dist_ctx.device)
        env = environment(cfg, dist_ctx.device)
        run = Training(cfg, folder, dist_ctx, say, quiet)
        run.catch_signals()
        run.describe()
        if ck is None and cfg.init:
            from .official import init_model
            init_model(run.model, cfg.init, say)
        if ck is not None:
            run.restore(*ck)
            folder.read_start_files(ck[1], env, note)
            say(f"resume: from step {run.start} of {ck[0].name} (best average mAP so far "
                f"{100 * max(run.best['average_mAP'], 0):.2f} at step {run.best['step']})")
        if run.start >= cfg.steps:
            note(f"resume: the run in {folder.path} is finished (step {run.start} of {cfg.steps}); "
                 "raise --steps to extend it")
            done = folder.finished_summary()
            if done is not None:  # nothing to do: its files (summary, training time) stay as they were
                return done
        if dist_ctx.main:
            folder.trim_metrics(run.start)
            folder.write_start_files(cfg, env)
        run.run()
        return finish_run(run, folder, say)
    finally:
        if run is not None:
            run.release_signals()
        if restore_execution is not None:
            restore_execution()
        folder.close()
        dist_ctx.close()


def set_execution(cfg: TrainConfig, deterministic: bool, device: torch.device):
    """The run's thread count and determinism, set process-wide; returns the function that
    puts back what was there (train() is a library call too, and leaves torch as it found it)."""
    threads, was_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    def restore() -> None:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)
    return restore


def finish_run(run: Training, folder: RunFolder, say) -> dict:
    """The end of a run: the best and the last step's results on the console, summary.json
    (rank 0). "best" is the evaluation chosen on the test set (as the published code
    keeps its checkpoint), "last" the evaluation at the run's last step."""
    summary = {"best": run.best, "last": run.last, "train_seconds": run.train_seconds,
               "steps": run.cfg.steps, "seed": run.cfg.seed, "out": str(folder.path),
               "processes": run.dist.world}
    if run.main:
        best, last = run.best, run.last
        if best["step"] >= 0:
            say(f"\nfinal: best checkpoint at step {best['step']} ({folder.path / 'best.pt'}), "
                "chosen on the test set as the published code does")
            say(format_table(best, title=f"best: step {best['step']} (chosen on the test set)"))
        if last is not None:
            say(format_table(last, title=f"last: step {last['step']} (the run's last evaluation)"))
        folder.write_text("summary.json", json.dumps(summary, indent=2))
        if run.cfg.report and best["step"] >= 0:  # out/report/index.html (evaluation/report.py)
            from .evaluation.report import report_for_run
            report_for_run(folder.path, run.test_gt, run.cfg.tiou, say, summary)
    return summary


# ======================================================================================
# the command line: flags, config files, --seeds (main)
# ======================================================================================
def _preset_defaults(name: str) -> str:
    """'thumos14 6000, anet12 100000, ...': a field's default in each preset, for --help."""
    from .config import PRESETS
    return ", ".join(f"{k} {getattr(v, name)}" for k, v in PRESETS.items())


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m cola_fast.train", description=__doc__,
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
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (step 0 when it has none yet; default: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds one, after moving the old run aside (default: off)")
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
    from .inputs import CONFIG_SCHEMA, read_json
    data = read_json(path, "--config", CONFIG_SCHEMA)  # a JSON object of field names
    data = renamed_fields(data)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"--config {path}: unknown config fields {unknown}")
    return data


def config_from_args(args, base: TrainConfig | None = None) -> TrainConfig:
    """The configuration of the command line: preset < --config FILE < --init's sizes < named
    flags < --set (or, on --resume, the run's own saved configuration, base, with the named
    flags and --set applied), validated."""
    if base is None:
        from_file = read_config_file(args.config) if args.config else {}
        preset = args.preset or from_file.get("preset") or "auto"
        if preset == "auto":
            preset = "thumos14" if torch.cuda.is_available() else "cpu"
        cfg = get_preset(preset)
        try:
            cfg = cfg.replace(**{k: v for k, v in from_file.items() if k != "preset"})
        except (TypeError, ValueError) as e:
            raise ValueError(f"--config {args.config}: {e}") from None
        if from_file:  # the file's values, checked on the preset they replace: the message names the file
            cfg.validate(f"--config {args.config}")
        if args.init:
            from .official import load_any_weights
            _, dims, _ = load_any_weights(args.init)
            cfg = cfg.replace(init=args.init, embed_dim=dims["embed_dim"], embed_kernel=dims["embed_kernel"])
    else:
        cfg = base
        if args.preset not in (None, "auto", base.preset):
            get_preset(args.preset)  # an unknown name is still an error
            print(f"resume: --preset {args.preset} ignored: the run continues with its own settings "
                  f"(preset {base.preset})", file=sys.stderr)
    named = {"data_root": args.data_root, "steps": args.steps, "eval_every": args.eval_every,
             "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
             "num_segments": args.num_segments, "modality": args.modality, "backend": args.backend,
             "device": args.device, "threads": args.threads}
    cfg = cfg.replace(**{k: v for k, v in named.items() if v is not None})
    for item in args.set:
        cfg = parse_override(cfg, item)
    return cfg.validate("settings")


def parse_seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds expects distinct non-negative integers, got {text!r}")
    from .inputs import MAX_SEEDS, within
    within(len(seeds), MAX_SEEDS, "--seeds: the number of seeds (one run each)")
    return seeds


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except KeyboardInterrupt:
        return 130
    except PeerLost as e:
        fail(e)
        return 1
    except (ValueError, FloatingPointError, OSError) as e:  # InputError (DataError, RunError) and friends
        return fail(e)


def run_command(args) -> int:
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    seeds = parse_seeds(args.seeds)
    kw = dict(resume=args.resume, overwrite=args.overwrite, quiet=args.quiet, deterministic=args.deterministic)
    if args.data_root:  # the dataset's gt.json and split files, read before the folder is touched
        from .data.dataset import check_layout
        check_layout(args.data_root)
    if not seeds:
        cfg = config_from_args(args)  # checked before the folder is touched
        folder = RunFolder(args.out or f"runs/{cfg.preset}")
        if args.resume:  # the folder reads its checkpoint once: here, and train() reuses it
            cfg = config_from_args(args, folder.saved_config())
        train(cfg, folder, **kw)
        return 0
    cfg = config_from_args(args)
    out = Path(args.out or f"runs/{cfg.preset}")
    for seed in seeds:  # every seed's settings are checked before the first one trains
        cfg.replace(seed=seed).validate("settings")
    parent = RunFolder(out)
    parent.open("resume" if args.resume else "overwrite" if args.overwrite else "new",
                note=lambda m: print(m, file=sys.stderr))
    try:
        summaries = []
        for seed in seeds:
            print(f"\n=== seed {seed} ===")
            sub = RunFolder(out / f"seed{seed}")
            base = sub.saved_config() if args.resume else None
            scfg = config_from_args(args, base).replace(seed=seed)
            summaries.append(train(scfg, sub, **dict(kw, overwrite=False)))
        table = seeds_table(summaries)
        print("\n" + table)
        parent.write_text("seeds.md", table + "\n")
        if cfg.report:  # OUT/report/index.html: the table, every seed's curves and environment
            from .evaluation.report import report_for_seeds
            report_for_seeds(out, [(seed, out / f"seed{seed}") for seed in seeds], table,
                             say=(lambda *a: None) if args.quiet else print)
    finally:
        parent.close()
    return 0


def seeds_table(summaries: list) -> str:
    """The --seeds table (markdown, percent): per seed the best evaluation (chosen on the test
    set, as the published code does) and the last step's, each at every tIoU with its
    average and step; then the mean and the std of each over the seeds. A run finished
    before the last step was recorded (no "last" in its summary.json) is marked as
    missing it and left out of the last step's mean."""
    th = summaries[0]["best"]["tiou_thresholds"]
    cols = len(th) + 1
    out = []
    for which, title in (("best", "best evaluation (chosen on the test set, as the published code does)"),
                         ("last", "last step (no selection on the test set)")):
        lines = [f"{title}:", "", "| seed | " + " | ".join(f"{t:g}" for t in th) + " | avg | step |",
                 "|" + "---|" * (cols + 2)]
        rows = []
        for s in summaries:
            r = s.get(which)
            if not r or r.get("step", -1) < 0:
                why = ("missing: its summary.json has no last step (a run finished before it was "
                       "recorded)" if which == "last" else "no evaluation")
                lines.append(f"| {s['seed']} | " + " | ".join(["-"] * cols) + f" | {why} |")
                continue
            vals = [100 * v for v in r["mAP"]] + [100 * r["average_mAP"]]
            rows.append(vals)
            lines.append(f"| {s['seed']} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {r['step']} |")
        if rows:
            a = np.asarray(rows)
            std = a.std(0, ddof=1 if len(a) > 1 else 0)
            lines.append("| mean | " + " | ".join(f"{v:.2f}" for v in a.mean(0)) + " | |")
            lines.append("| std | " + " | ".join(f"{v:.2f}" for v in std) + " | |")
            lines.append("| mean ± std | " + " | ".join(f"{m:.2f} ± {d:.2f}" for m, d in zip(a.mean(0), std))
                         + f" | n={len(a)} |")
        out.append("\n".join(lines))
    out.append(_gap_table(summaries))
    return "\n\n".join(out)


def _gap_table(summaries: list) -> str:
    """Average mAP (percent) of the best and the last evaluation per seed, and how far apart
    they are (best - last: what choosing on the test set adds), with mean and std."""
    lines = ["best against last (average mAP):", "", "| seed | best | last | best - last | best step | last step |",
             "|---|---|---|---|---|---|"]
    rows = []
    for s in summaries:
        b, last = s["best"], s.get("last")
        if not last or b.get("step", -1) < 0:
            lines.append(f"| {s['seed']} | {100 * b['average_mAP']:.2f} | - | - | {b['step']} | missing |")
            continue
        r = [100 * b["average_mAP"], 100 * last["average_mAP"]]
        rows.append(r + [r[0] - r[1]])
        lines.append(f"| {s['seed']} | {r[0]:.2f} | {r[1]:.2f} | {r[0] - r[1]:.2f} | {b['step']} | {last['step']} |")
    if rows:
        a = np.asarray(rows)
        std = a.std(0, ddof=1 if len(a) > 1 else 0)
        lines.append("| mean ± std | " + " | ".join(f"{m:.2f} ± {d:.2f}" for m, d in zip(a.mean(0), std))
                     + f" | | n={len(a)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
