"""The reading boundary: every file cola_fast reads from outside comes in through here.

Ground truth, results, split files, feature .npy files, checkpoints, official weights,
--config files, the W-TALC arrays, autotune.json and metrics.jsonl are all opened,
decoded, parsed and checked by the functions below, and every failure is one
InputError whose one-line message names the file and, inside a document, the path to
the bad value:

    gt.json: database.video_test_0000004.annotations[3].segment: expected [start, end], got a string '1,2'

Code behind the boundary may assume valid data. The command-line tools print an
InputError (a ValueError, like every user error they report) as one line with exit
status 2; anything else that escapes them is a bug and keeps its traceback.

    read_text(path, what)                 bytes -> str: UTF-8 (a byte-order mark is dropped)
    read_json(path, what, schema=None)    str -> JSON value, checked against schema
    read_jsonl(path, what, schema=None)   one JSON value per line; a torn last line is dropped
    read_npy(path, what, ...)             a numeric array (no pickles unless allowed)
    read_torch(path, what, schema=None)   torch.load(weights_only=True), checked against schema
    check(value, schema, source)          a value already in memory, against a schema

A schema (Obj, Map, List, Num, Str, Bool, Tensor, Json, Either) declares a document's
shape once; see the SCHEMAS section at the end, and the limits (LIMITS) that bound the
grids and tables built from a user's numbers.
"""
from __future__ import annotations

import gc
import gzip
import json
import math
import numbers
import os
import zlib

from .data.errors import DataError

# --------------------------------------------------------------------------------------
# limits: every size a user's numbers or files can set, bounded with a clear message
# --------------------------------------------------------------------------------------
MAX_JSON_DEPTH = 64            # nesting of a document checked against a schema
MAX_TIOU_THRESHOLDS = 1000     # evaluate --tiou, TrainConfig.tiou
MAX_SEEDS = 100                # train --seeds: one run each
MAX_PLOTS = 1000               # plots drawn per evaluation (plot_videos)


class InputError(DataError):
    """A file or value from outside is missing or malformed. A ValueError (through
    DataError) whose one-line message names the file and the path to the bad value."""


def at(source, where: str, problem: str) -> InputError:
    """The error for the value at where (a document path, '' for the whole file)."""
    return InputError(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


def within(n: int, limit: int, what: str) -> int:
    """n, when it is at most limit; InputError naming what otherwise."""
    if n > limit:
        raise InputError(f"{what}: {n:,} is more than the limit of {limit:,}")
    return n


# --------------------------------------------------------------------------------------
# files: open, decode, parse
# --------------------------------------------------------------------------------------
def _name(path, what: str) -> str:
    return f"{what} {os.fspath(path)}" if what else os.fspath(path)


def _not_found(path, what: str) -> InputError:
    p = os.fspath(path)
    return InputError(f"{what} not found: {p}" if what else f"{p}: file not found")


def _existing_file(path, what: str) -> tuple[str, str]:
    """(path, its name in messages) of a file that exists and is no folder, else InputError."""
    p, name = os.fspath(path), _name(path, what)
    if os.path.isdir(p):
        raise InputError(f"{name}: is a directory, not a file")
    if not os.path.exists(p):
        raise _not_found(p, what)
    return p, name


def read_bytes(path, what: str = "") -> bytes:
    """The bytes of a file (a .gz file decompressed). InputError: not found, a folder,
    unreadable, a broken .gz."""
    p, name = os.fspath(path), _name(path, what)
    if os.path.isdir(p):
        raise InputError(f"{name}: is a directory, not a file")
    try:
        with open(p, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise _not_found(p, what) from None
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror or e})") from None
    if p.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # EOFError: a truncated .gz
            raise InputError(f"{name}: cannot read as gzip ({e})") from None
    return data


def decode(data: bytes, name: str) -> str:
    """UTF-8 text; a byte-order mark (as some editors write) is dropped."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{name}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); "
                         "save it as UTF-8") from None


def read_text(path, what: str = "") -> str:
    return decode(read_bytes(path, what), _name(path, what))


def parse_json(text: str, name: str, schema=None):
    """A JSON document from text, checked against schema; InputError naming name."""
    if not text.strip():
        raise InputError(f"{name}: empty file, not valid JSON")
    gc_was_on = gc.isenabled()
    gc.disable()  # json creates no cycles; with torch loaded, collections during a 3 MB parse triple its time
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{name}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except RecursionError:  # deeper than the parser's stack allows (about 1000 levels)
        raise InputError(f"{name}: JSON nested too deeply to parse (a document of cola_fast's has at "
                         f"most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise InputError(f"{name}: not valid JSON ({' '.join(str(e).split())[:120]})") from None
    finally:
        if gc_was_on:
            gc.enable()
    if schema is not None:  # None: the caller checks (results: in bulk first, for speed)
        schema.check_at(value, name)
    return value


def read_json(path, what: str = "", schema=None):
    """The JSON document in path (.json or .json.gz), checked against schema (None: parsed
    only; the caller checks it, as results_arrays does in bulk before the schema)."""
    return parse_json(read_text(path, what), _name(path, what), schema)


def read_jsonl(path, what: str = "", schema=None, torn_tail_ok: bool = True) -> list:
    """One JSON value per line, each checked against schema. A last line cut short (a
    process killed mid-write) is dropped when torn_tail_ok; any other bad line is an
    InputError naming the file and the line."""
    data = read_bytes(path, what)
    name = _name(path, what)
    lines = data.split(b"\n")
    torn = torn_tail_ok and not data.endswith(b"\n")
    out = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            out.append(parse_json(decode(raw, f"{name} line {i + 1}"), f"{name} line {i + 1}", schema))
        except InputError:
            if torn and i == len(lines) - 1:
                break
            raise
    return out


def read_npy(path, what: str = "", mmap: bool = False, allow_pickle: bool = False):
    """The array in a .npy file (memory-mapped if mmap). Object arrays only with
    allow_pickle (unpickling can run code); numeric ones only otherwise."""
    import numpy as np
    p, name = _existing_file(path, what)
    try:
        if allow_pickle:
            x = np.load(p, allow_pickle=True, encoding="bytes")
        else:
            x = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError, UnicodeError) as e:  # bad header, object array, truncated
        raise InputError(f"{name}: cannot read as a numeric .npy array ({' '.join(str(e).split())[:200]})") from None
    # a broken pickle (allowed only for trusted W-TALC files) fails in many types, all of them
    # about this file's bytes
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{name}: cannot unpickle ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    if not isinstance(x, np.ndarray):
        raise InputError(f"{name}: expected a single .npy array, got {type(x).__name__}")
    return x


def read_torch(path, what: str = "", schema=None):
    """torch.load(path, weights_only=True): tensors and plain containers only, never
    arbitrary pickled objects; checked against schema."""
    import torch
    p, name = _existing_file(path, what)
    try:
        value = torch.load(p, map_location="cpu", weights_only=True)
    # truncated, empty, not a torch file, an unsafe pickle: torch raises many types, all
    # of them about this file's bytes (a bug of ours would not come from torch.load)
    except Exception as e:  # noqa: BLE001
        why = " ".join(str(e).split())[:160]
        raise InputError(f"{name}: not a readable checkpoint: could not be read as tensors "
                         f"(torch.load, weights_only=True: {why})") from None
    if schema is not None:
        schema.check_at(value, name)
    return value


def check(value, schema, source: str):
    """value (already in memory: a dict a caller passed) checked against schema."""
    schema.check_at(value, source)
    return value


# --------------------------------------------------------------------------------------
# schemas: a document's shape, declared once, with path-aware messages
# --------------------------------------------------------------------------------------
class _Invalid(Exception):
    """Raised inside a check; carries the path to the bad value."""

    def __init__(self, path: tuple, problem: str):
        super().__init__(problem)
        self.path, self.problem = path, problem


def path_text(path: tuple) -> str:
    """('database', 'v1', 'annotations', 3, 'segment') -> database.v1.annotations[3].segment
    (a path deeper than 12 keys is shortened in the middle)."""
    if len(path) > 12:
        return f"{path_text(path[:4])}...{len(path) - 8} more...{path_text(path[-4:])}"
    out = ""
    for k in path:
        if isinstance(k, int):
            out += f"[{k}]"
        else:
            k = str(k)
            plain = k and not any(c in k for c in ".[]\"' ") and k.isprintable()
            out += (("." if out else "") + k) if plain else f"[{json.dumps(k)}]"
    return out


def describe(v) -> str:
    """'a string '1,2'', 'a list of 3', 'null': what a value is, short."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"a string {v[:40]!r}" + ("..." if len(v) > 40 else "")
    if isinstance(v, numbers.Number):
        return f"the number {v!r}"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)}"
    return f"a {type(v).__name__}"


class Schema:
    """The shape of a value. check(v, path) raises _Invalid; check_at(v, source) raises
    InputError naming source and the path."""

    def check(self, v, path: tuple) -> None:
        raise NotImplementedError

    def check_at(self, v, source: str) -> None:
        try:
            self.check(v, ())
        except _Invalid as e:
            raise at(source, path_text(e.path), e.problem) from None

    def _depth(self, path):
        if len(path) > MAX_JSON_DEPTH:
            raise _Invalid(path, f"nested more than {MAX_JSON_DEPTH} levels deep")


class Json(Schema):
    """Any JSON value (null, bool, number, string, list, object) of bounded depth."""

    def __init__(self, max_depth: int = MAX_JSON_DEPTH):
        self.max_depth = max_depth

    def check(self, v, path):
        stack = [(v, path)]
        while stack:  # iterative: a deep value must not exhaust Python's stack here
            x, p = stack.pop()
            if isinstance(x, (list, tuple, dict)):
                if len(p) - len(path) >= self.max_depth:
                    raise _Invalid(p, f"nested more than {self.max_depth} levels deep")
                items = x.items() if isinstance(x, dict) else enumerate(x)
                stack.extend((y, p + (k,)) for k, y in items)
            elif not (x is None or isinstance(x, (bool, str, numbers.Real))):
                raise _Invalid(p, f"expected a JSON value, got {describe(x)}")


class Num(Schema):
    """A finite number (not a bool), optionally an integer, optionally within [lo, hi];
    from_str also takes a number written as a string ("12.5"), as some ground truths do."""

    def __init__(self, lo=None, hi=None, integer=False, from_str=False, finite=True):
        self.lo, self.hi, self.integer, self.from_str, self.finite = lo, hi, integer, from_str, finite

    def value(self, v, path) -> float:
        if isinstance(v, str) and self.from_str:
            try:
                f = float(v)
            except ValueError:
                raise _Invalid(path, f"expected a number, got {describe(v)}") from None
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            f = v
        else:
            raise _Invalid(path, f"expected {'an integer' if self.integer else 'a number'}, got {describe(v)}")
        if self.finite and not math.isfinite(f):
            raise _Invalid(path, f"expected a finite number, got {v!r}")
        if self.integer and not isinstance(f, numbers.Integral):
            raise _Invalid(path, f"expected an integer, got {v!r}")
        if self.lo is not None and f < self.lo:
            raise _Invalid(path, f"expected a number >= {self.lo}, got {v!r}")
        if self.hi is not None and f > self.hi:
            raise _Invalid(path, f"expected a number <= {self.hi}, got {v!r}")
        return f

    def check(self, v, path):
        self.value(v, path)


class Str(Schema):
    def __init__(self, nonempty=False, max_len=None):
        self.nonempty, self.max_len = nonempty, max_len

    def check(self, v, path):
        if not isinstance(v, str):
            raise _Invalid(path, f"expected a string, got {describe(v)}")
        if self.nonempty and not v.strip():
            raise _Invalid(path, "expected a non-empty string")
        if self.max_len is not None and len(v) > self.max_len:
            raise _Invalid(path, f"a string of {len(v):,} characters, more than {self.max_len:,}")


class Bool(Schema):
    def check(self, v, path):
        if not isinstance(v, bool):
            raise _Invalid(path, f"expected true or false, got {describe(v)}")


class Tensor(Schema):
    """A torch tensor (in a checkpoint), optionally of a given number of dimensions."""

    def __init__(self, ndim=None, min_ndim=0):
        self.ndim, self.min_ndim = ndim, min_ndim

    def check(self, v, path):
        import torch
        if not isinstance(v, torch.Tensor):
            raise _Invalid(path, f"expected a tensor, got {describe(v)}")
        if (self.ndim is not None and v.dim() != self.ndim) or v.dim() < self.min_ndim:
            want = f"{self.ndim}-D" if self.ndim is not None else f"at least {self.min_ndim}-D"
            raise _Invalid(path, f"expected a {want} tensor, got shape {tuple(v.shape)}")


class Either(Schema):
    """One of several shapes; the message is the first's when none fits."""

    def __init__(self, *options):
        self.options = options

    def check(self, v, path):
        first = None
        for s in self.options:
            try:
                s.check(v, path)
                return
            except _Invalid as e:
                first = first or e
        raise first


class List(Schema):
    """A list (a tuple too, for values built in memory) of items of one shape. rule:
    (predicate(list) -> bool, problem) for a relation between items."""

    def __init__(self, item: Schema, length=None, min_len=0, max_len=None, rule=None, what="a list"):
        self.item, self.length, self.min_len, self.max_len = item, length, min_len, max_len
        self.rule, self.what = rule, what

    def check(self, v, path):
        if not isinstance(v, (list, tuple)):
            raise _Invalid(path, f"expected {self.what}, got {describe(v)}")
        self._depth(path)
        if self.length is not None and len(v) != self.length:
            raise _Invalid(path, f"expected {self.what}, got {describe(v)}")
        if len(v) < self.min_len:
            raise _Invalid(path, f"expected at least {self.min_len} item(s), got {len(v)}")
        if self.max_len is not None and len(v) > self.max_len:
            raise _Invalid(path, f"{len(v):,} items, more than the limit of {self.max_len:,}")
        for i, x in enumerate(v):
            self.item.check(x, path + (i,))
        if self.rule is not None and not self.rule[0](v):
            raise _Invalid(path, self.rule[1].format(v=v))


class Obj(Schema):
    """An object with these keys (required) and those (optional); other keys are
    allowed unless extra=False."""

    def __init__(self, required: dict, optional: dict | None = None, extra: bool = True, what="an object"):
        self.required, self.optional, self.extra, self.what = required, optional or {}, extra, what

    def check(self, v, path):
        if not isinstance(v, dict):
            raise _Invalid(path, f"expected {self.what}, got {describe(v)}")
        self._depth(path)
        for k, s in self.required.items():
            if k not in v:
                raise _Invalid(path, f"missing {k!r}")
            s.check(v[k], path + (k,))
        for k, s in self.optional.items():
            if k in v:
                s.check(v[k], path + (k,))
        if not self.extra:
            unknown = sorted(str(k) for k in v if k not in self.required and k not in self.optional)
            if unknown:
                raise _Invalid(path, f"unknown keys {unknown[:5]}")


class Map(Schema):
    """An object whose keys are names (strings) and whose values share one shape."""

    def __init__(self, value: Schema, key: Schema | None = None, what="an object"):
        self.value, self.key, self.what = value, key or Str(), what

    def check(self, v, path):
        if not isinstance(v, dict):
            raise _Invalid(path, f"expected {self.what}, got {describe(v)}")
        self._depth(path)
        for k, x in v.items():
            self.key.check(k, path + (k,))
            self.value.check(x, path + (k,))


# --------------------------------------------------------------------------------------
# SCHEMAS: the documents cola_fast reads
# --------------------------------------------------------------------------------------
def _ordered(seg) -> bool:
    return float(seg[1]) >= float(seg[0])


SEGMENT = List(Num(from_str=True), length=2, what="[start, end]",
               rule=(_ordered, "segment end {v[1]} is before its start {v[0]}"))
GT_ANNOTATION = Obj({"label": Str(), "segment": SEGMENT})
GT_SCHEMA = Obj({"database": Map(Obj({"subset": Str(), "annotations": List(GT_ANNOTATION)}))},
                optional={"classes": List(Str(nonempty=True))},
                what='an object {"database": {video: {"subset", "annotations"}}}')
DETECTION = Obj({"label": Str(), "score": Num(from_str=True), "segment": SEGMENT})
RESULTS_SCHEMA = Obj({"results": Map(List(DETECTION))},
                     what='an object {"results": {video: [{"label", "score", "segment"}]}}')
# a --config file or a run's config.json: field names to JSON values (TrainConfig.from_dict
# checks each field's type and range)
CONFIG_SCHEMA = Map(Json(max_depth=4), what="a JSON object of config fields")
# one line of metrics.jsonl (the trainer writes more keys; resume needs the step)
METRICS_LINE = Obj({"step": Num(integer=True, lo=0)})
# a checkpoint as infer reads it (the model and what describes it), and as a resumed run
# reads it (also the optimizer, the step and the best result so far)
_MODEL_KEYS = {
    "model": Map(Tensor(), what="a state dict (parameter name -> tensor)"),
    "config": CONFIG_SCHEMA,
    "class_names": List(Str(nonempty=True), min_len=1, what="a list of class names"),
    "feature_dim": Num(integer=True, lo=1),
}
_OPTIONAL = {"auto_choices": List(Json(max_depth=4), what="a list of backend choices")}
MODEL_CHECKPOINT_SCHEMA = Obj(_MODEL_KEYS, optional=_OPTIONAL, what="a cola_fast checkpoint (a dict)")
CHECKPOINT_SCHEMA = Obj({
    **_MODEL_KEYS,
    "optimizer": Obj({}, what="an optimizer state dict"),
    "step": Num(integer=True, lo=0),
    "best": Obj({"average_mAP": Num(finite=False)}, what="a best-result record"),
}, optional=_OPTIONAL, what="a cola_fast checkpoint (a dict)")
