"""The run folder of a training run: what it holds, who may write it, how it resumes.

Everything about --resume lives here: open_run (lock the folder, read the checkpoint
once, reconcile_resumed_config: which settings a resumed run may change), and
pin_recorded_choices (the backend choices a checkpoint recorded, used by the trainer
on resume and by infer).

    folder = RunFolder(Path("runs/t14"))
    folder.open("new")          # or "resume", "overwrite"; takes the folder's lock
    ck = folder.resume_checkpoint()        # (path, state) of the newest checkpoint, or None
    folder.save_checkpoint("last.pt", state)
    folder.close()              # releases the lock

A folder "holds a run" when it has one of RUN_FILES, or a seed<N> subfolder that holds
one (python -m cola_fast.train --seeds). A fresh run refuses such a folder: the user
adds --resume to continue it, or --overwrite to move it aside (renamed to
<folder>.replaced-<time>, never deleted). A folder that is not empty but holds no run
is refused in every mode: --out pointed at the wrong folder must not be moved or
mixed with a run.

One trainer at a time: open() takes an exclusive flock on <folder>/.lock. The kernel
drops the lock when its process dies, so a lock left by a killed trainer never blocks.

Files of a run, and where they are written:
    config.json          at start (write_start_files), the settings in use
    env.json             at start (write_start_files), where the run runs (cola_fast/env.py);
                         compared on --resume, every changed field one line (a note)
    metrics.jsonl        one JSON object per line; on resume cut back to the checkpoint's step
    last.pt, best.pt     checkpoints (save_checkpoint: temporary file, then rename)
    crash.pt             the state at a non-finite loss
    best_results.json    the detections of the best evaluation (chosen on the test set)
    last_results.json    the detections of the latest evaluation (the last step's at the end)
    summary.json         "best" and "last" (a run finished before "last" was recorded has none)
    seeds.md             (--seeds, in the parent folder) both, per seed, with mean and std
    autotune.json        backend="auto"'s choices so far (cola_fast.ops._autotune), rewritten with
                         every checkpoint; each checkpoint holds the same list ("auto_choices"),
                         and --resume pins the list of the checkpoint it resumes from
A file that a run writes when it starts and reads back on --resume belongs in
write_start_files() and read_start_files().

Every problem a user can cause or meet (a folder in use, a bad checkpoint, a full disk,
a read-only folder) raises RunError: a ValueError whose one-line message names the file.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path

import torch

from .config import EVALUATION_FIELDS, TrainConfig
from .env import ENV_FILE, environment_changes, read_environment
from .inputs import CHECKPOINT_SCHEMA, CONFIG_SCHEMA, METRICS_LINE, InputError, read_json, read_jsonl, read_torch

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "crash.pt", "best_results.json",
             "summary.json", "seeds.md")
LOCK_FILE = ".lock"


class RunError(InputError):
    """A run folder or checkpoint problem; the message is one line naming the file."""


def _why(e: BaseException) -> str:
    """One line for an exception from I/O or torch.load."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(text.split()) or type(e).__name__


# --------------------------------------------------------------------------------------
# atomic writes: temporary file, then rename; the temporary file never outlives a failure
# --------------------------------------------------------------------------------------
def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        # a full disk, a read-only folder: torch reports them as RuntimeError ("unexpected pos")
        if isinstance(e, (OSError, RuntimeError)):
            raise RunError(f"cannot write {path}: {_why(e)}") from None
        raise


def atomic_torch_save(obj, path: Path) -> None:
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------
def load_checkpoint(path: Path) -> dict:
    """A trainer checkpoint, checked at the reading boundary (inputs.CHECKPOINT_SCHEMA)
    and its config validated. RunError otherwise."""
    hint = "move it away to resume from an earlier state, or start again with --overwrite"
    try:
        state = read_torch(path, "checkpoint", CHECKPOINT_SCHEMA)
        TrainConfig.from_dict(state["config"], f"{path} config")
    except ValueError as e:  # InputError, or a config TrainConfig refuses
        raise RunError(f"{e}; {hint}") from None
    return state


def restore_training_state(path: Path, state: dict, model, optimizer) -> None:
    """Load a checkpoint's weights and optimizer state; RunError when they do not fit."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"{path}: its weights or optimizer state do not fit this model "
                       f"({_why(e)[:200]})") from None


# --------------------------------------------------------------------------------------
# the folder
# --------------------------------------------------------------------------------------
class RunFolder:
    def __init__(self, path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._checkpoint = None  # (file identity, state) of the last checkpoint read

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    # ---------------------------------------------------------------- what it holds
    def holds_run(self) -> bool:
        p = self.path
        if not p.is_dir():
            return False
        if any((p / f).exists() for f in RUN_FILES):
            return True
        return any(RunFolder(d).holds_run() for d in p.glob("seed*") if d.is_dir())

    def is_empty(self) -> bool:
        return not self.path.exists() or not [f for f in self.path.iterdir() if f.name != LOCK_FILE]

    def describe(self) -> str:
        """A few words on the run in the folder, for messages."""
        for name in ("last.pt", "best.pt"):
            try:
                step = torch.load(self.path / name, map_location="cpu", weights_only=True, mmap=True)["step"]
                return f"a run with {name} at step {step}"
            except Exception:  # noqa: BLE001 - only for a message
                continue
        return "a run"

    # ---------------------------------------------------------------- open / close
    def open(self, mode: str, note=print) -> None:
        """Create the folder if needed, lock it, and check it fits the mode:
        "new" (refuses a folder holding a run), "resume" (continues it, or starts one),
        "overwrite" (moves a run aside first)."""
        if mode not in ("new", "resume", "overwrite"):
            raise ValueError(f"unknown run folder mode {mode!r}")
        self._mkdir()
        self._lock()
        try:
            if not self.holds_run():
                if not self.is_empty():
                    raise RunError(f"{self.path} is not empty and holds no cola_fast run: "
                                   "choose a new or empty folder for --out")
                return
            if mode == "new":
                raise RunError(f"{self.path} holds {self.describe()}: add --resume to continue it, "
                               "or --overwrite to move it aside and start again")
            if mode == "overwrite":
                aside = self._move_aside()
                note(f"overwrite: the previous run in {self.path} was moved to {aside}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _mkdir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create the run folder {self.path}: {_why(e)}") from None

    def _lock(self) -> None:
        lock = self.path / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"cannot write in the run folder {self.path}: {_why(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise RunError(f"{self.path} is in use by another trainer (pid {holder}): "
                               "wait for it to end, or choose another --out") from None
            raise RunError(f"cannot lock {lock}: {_why(e)}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.replaced-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.replaced-{stamp}-{n}")
        old_fd = self._lock_fd
        try:
            os.rename(self.path, aside)
        except OSError as e:
            raise RunError(f"cannot move {self.path} aside to {aside}: {_why(e)}") from None
        self._lock_fd = None
        try:
            self._mkdir()
            self._lock()
        finally:
            os.close(old_fd)  # held until the new folder is locked
        return aside

    # ---------------------------------------------------------------- files of a run
    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def save_checkpoint(self, name: str, state: dict) -> None:
        atomic_torch_save(state, self.path / name)

    def write_start_files(self, cfg: TrainConfig, env: dict | None = None) -> None:
        """The files a run writes when it starts (and rewrites when it resumes): config.json,
        and env.json when env (cola_fast.env.environment) is given: where the run runs now (a
        resume elsewhere is noted first, one line per changed field: read_start_files)."""
        self.write_text("config.json", json.dumps(cfg.recorded(), indent=2))
        if env is not None:
            self.write_text(ENV_FILE, json.dumps(env, indent=2))

    def read_start_files(self, state: dict, env: dict | None = None, note=None) -> None:
        """Read back, on --resume, what write_start_files() wrote; state is the checkpoint
        resumed from (config.json itself is not read: the checkpoint's config rules). The
        backend choices recorded in the checkpoint are pinned (pin_recorded_choices). With
        env (the present environment) and note, every field that differs from the run's
        env.json is one note: a changed environment is reported, never refused."""
        pin_recorded_choices(state, self.path)
        if env is None or note is None:
            return
        recorded = read_environment(self.path)
        if recorded is None:
            note(f"resume: {self.path / ENV_FILE} is missing or unreadable (a run started before it was "
                 "recorded): the present environment is recorded now")
            return
        for line in environment_changes(recorded, env):
            note(line)

    def save_checkpoint_with_choices(self, name: str, state: dict) -> None:
        """A checkpoint holding backend="auto"'s choices so far, and autotune.json beside it."""
        from .ops import _autotune

        record = _autotune.run_record()
        self.save_checkpoint(name, {**state, "auto_choices": record["decisions"]})
        self.write_text(_autotune.RUN_RECORD, json.dumps(record, indent=1))

    def resume_checkpoint(self):
        """(path, checked state) of the checkpoint to resume from: last.pt, else best.pt
        (a run killed between writing them at its first evaluation), else None. Read from
        disk once: asked again, it returns the same state while the file is unchanged."""
        for name in ("last.pt", "best.pt"):
            path = self.path / name
            if path.exists():
                return path, self._read_checkpoint(path)
        return None

    def _read_checkpoint(self, path: Path) -> dict:
        st = path.stat()
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if self._checkpoint is None or self._checkpoint[0] != key:
            self._checkpoint = (key, load_checkpoint(path))
        return self._checkpoint[1]

    def saved_config(self) -> TrainConfig | None:
        """The configuration of the run in the folder: its checkpoint's, else config.json's."""
        ck = self.resume_checkpoint()
        if ck is not None:
            return TrainConfig.from_dict(ck[1]["config"], f"{ck[0]} config")
        path = self.path / "config.json"
        if not path.exists():
            return None
        return TrainConfig.from_dict(read_json(path, "", CONFIG_SCHEMA), str(path))

    def finished_summary(self) -> dict | None:
        """summary.json of a finished run, when it is there and readable."""
        try:
            summary = read_json(self.path / "summary.json")
        except InputError:
            return None
        return summary if isinstance(summary, dict) and "best" in summary else None

    def trim_metrics(self, step: int) -> None:
        """Cut metrics.jsonl back to the records up to step (a resumed run writes the
        rest again); a line torn by a kill is dropped."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return
        keep = [json.dumps(rec) + "\n" for rec in read_jsonl(path, "", METRICS_LINE) if rec["step"] <= step]
        atomic_write_text(path, "".join(keep))


# --------------------------------------------------------------------------------------
# resume: the settings a resumed run continues with, the backend choices it keeps
# --------------------------------------------------------------------------------------
# settings a resumed run takes from the command line; every other one keeps the run's own
# value (changing lr or seed halfway would make a different run under the same name)
RESUME_MAY_CHANGE = ("steps", "eval_every", "plot_videos", "threads", "device", "check_durations")


def reconcile_resumed_config(cfg: TrainConfig, saved: TrainConfig, source: Path, note) -> TrainConfig:
    """The configuration a resumed run continues with: the saved one, with the settings
    of RESUME_MAY_CHANGE taken from cfg. Every difference is reported through note."""
    new, kept = {}, []
    for k, v in cfg.to_dict().items():
        old = getattr(saved, k)
        if v == old:
            continue
        if k in RESUME_MAY_CHANGE:
            new[k] = v
            note(f"resume: {k} changed from {old!r} to {v!r}")
        else:
            kept.append(f"{k}={old!r} (given {v!r})")
    if kept:
        note(f"resume: kept the run's own {', '.join(kept)}: a run continues with its settings "
             f"(start a new run to change them); saved in {source}")
        evaluation = [k.split("=")[0] for k in kept if k.split("=")[0] in EVALUATION_FIELDS]
        if evaluation:
            note(f"resume: {', '.join(evaluation)} only change(s) the evaluation: python -m cola_fast.evaluate "
                 f"--run {source.parent} --set {evaluation[0]}=... evaluates the run's checkpoints again with it")
    return saved.replace(**new)


def open_run(folder: RunFolder, cfg: TrainConfig, resume: bool, overwrite: bool, dist_ctx, note):
    """Open (rank 0: lock, refuse or move aside) the run folder; on resume, find the
    checkpoint and the configuration to continue with. dist_ctx: the trainer's process
    group (.main, .agree()): a refusal on rank 0 is raised on every rank. Returns (cfg, (path, state) or None)."""
    error = None
    if dist_ctx.main:
        try:
            folder.open("resume" if resume else "overwrite" if overwrite else "new", note=note)
        except InputError as e:  # RunError: every rank must stop with this line, not wait for rank 0
            error = str(e)
    error = dist_ctx.agree(error)  # a collective: also the barrier before the others read the folder
    if error is not None:
        raise RunError(error)
    if not resume:
        return cfg, None
    ck = folder.resume_checkpoint()
    if ck is None:
        note(f"resume: {folder.path} holds no checkpoint yet: starting from step 0")
        return cfg, None
    return reconcile_resumed_config(cfg, TrainConfig.from_dict(ck[1]["config"]), ck[0], note), ck


def pin_recorded_choices(state: dict, source) -> None:
    """backend="auto" takes the implementations a run recorded in its checkpoint
    (state["auto_choices"]), so that a resumed run runs the same kernels (bit-identical
    weights) and infer reproduces the run's evaluations, whatever this machine would
    measure now. source names the checkpoint's folder or file in the error."""
    from .ops import _autotune

    choices = state.get("auto_choices", [])
    if not isinstance(choices, list):
        raise RunError(f"{source}: the checkpoint's auto_choices is not a list of backend choices")
    _autotune.pin(choices)
