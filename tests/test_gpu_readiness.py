"""Checks, without a GPU, of what would otherwise only show on the first GPU run: tests that
quietly become GPU tests are pinned to the device they need, and every Triton launch runs
under a device guard (Triton launches on the current CUDA device, not on the tensors')."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _functions(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]


def _strings(node) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _decorator_names(fn: ast.FunctionDef) -> set[str]:
    return {ast.unparse(d) for d in fn.decorator_list}


def test_torchrun_tests_pin_their_device():
    """Under torchrun the trainer picks cuda:<local_rank> whenever CUDA is there, so on a
    one-GPU machine a 2-process test fails on rank 1. Each torchrun test passes --device:
    "cpu" (gloo), or a CUDA device under the needs_two_gpus mark."""
    found = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        for fn in _functions(path):
            strings = _strings(fn)
            if "torch.distributed.run" not in strings:
                continue
            found.append(fn.name)
            assert "--device" in strings, f"{path.name}::{fn.name} runs torchrun without --device"
            device = strings[strings.index("--device") + 1]
            if device != "cpu":
                assert "needs_two_gpus" in _decorator_names(fn), \
                    f"{path.name}::{fn.name} runs torchrun on {device} without @needs_two_gpus"
    assert {"test_torchrun_shares_masks_and_equivalence", "test_torchrun_two_processes_nccl"} <= set(found), found


def _launches(tree: ast.AST):
    """(call, guarded) for every kernel[grid](...) launch: a call of a subscript."""
    out = []

    def visit(node, guarded):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            guarded = guarded or any(isinstance(i.context_expr, ast.Call)
                                     and ast.unparse(i.context_expr.func) == "on_device" for i in node.items)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):
            out.append((node, guarded))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return out


def test_every_triton_launch_runs_under_the_device_guard():
    launches = []
    for path in sorted((ROOT / "kernels").glob("*.py")):
        for call, guarded in _launches(ast.parse(path.read_text())):
            launches.append(ast.unparse(call.func))
            assert guarded, f"{path.name}: {ast.unparse(call.func)}(...) launches outside `with on_device(...)`"
    assert len(launches) >= 9, launches  # mining 1, snico 5, conv 3: none slipped past the search


def test_device_guard_makes_the_tensors_device_current(monkeypatch):
    """on_device(t) is torch.cuda.device(t.device) for a CUDA tensor (checked with a stand-in,
    no GPU needed) and nothing for a CPU tensor."""
    import torch

    from cola_fast.ops._triton import kernels_module

    kernels_module("snico_loss")  # loads the checkout's kernels package
    import cola_fast.kernels as k

    seen = []

    class FakeCuda:
        is_cuda = True
        device = torch.device("cuda", 1)

    monkeypatch.setattr(torch.cuda, "device", lambda d: seen.append(d) or "guard")
    assert k.on_device(FakeCuda()) == "guard" and seen == [torch.device("cuda", 1)]
    with k.on_device(torch.zeros(1)):
        pass
    assert seen == [torch.device("cuda", 1)]
