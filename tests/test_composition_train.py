"""Trainer invariants, through the trainer's stable interfaces only: the CLI / train(),
the files a run writes (last.pt, best.pt, summary.json, metrics.jsonl), and the model and
ops it calls (observed with spies that call the real functions).

- a training step hands the model and the loss the spec's settings (COLA_SPEC 2-4);
- a checkpoint holds every piece of the run's state;
- resume restores every piece, `best` included, and a resumed run stops on the same best;
- under torchrun the ranks' batch shares partition the global batch, ranks draw
  different masks, and (where the spec allows it: no dropout, no SniCo term) a 2-process
  run equals the 1-process run with the same global batch.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cola_fast.ops as cf_ops
from cola_fast.config import get_preset
from cola_fast.train import main, train

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import ddp_probe  # noqa: E402

TINY_T = get_preset("tiny").num_segments  # 128


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _tiny(**kw):
    return get_preset("tiny").replace(**kw)


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------
# one training step: the spec's settings reach the model and the loss
# --------------------------------------------------------------------------------------
def test_training_step_uses_the_spec_settings(cache, tmp_path, monkeypatch):
    seen = {"dropout": [], "mine": [], "snico": []}
    real_drop, real_mine, real_snico = cf_ops.dropout, cf_ops.mine_snippets, cf_ops.snico_loss

    def drop(x, p, training=True, backend=None):
        seen["dropout"].append((p, training))
        return real_drop(x, p, training, backend=backend)

    def mine(actionness, keep, k_easy, k_hard, m=3, M=6, backend=None):
        seen["mine"].append((keep.clone(), k_easy, k_hard, m, M))
        return real_mine(actionness, keep, k_easy, k_hard, m, M, backend=backend)

    def snico(emb, ea, eb, ha, hb, tau=0.07, backend=None):
        seen["snico"].append(tau)
        return real_snico(emb, ea, eb, ha, hb, tau, backend=backend)

    monkeypatch.setattr(cf_ops, "dropout", drop)
    monkeypatch.setattr(cf_ops, "mine_snippets", mine)
    monkeypatch.setattr(cf_ops, "snico_loss", snico)
    out = tmp_path / "run"
    train(_tiny(steps=2, eval_every=2, backend="native"), out, quiet=True)

    assert seen["dropout"][:2] == [(0.7, True), (0.7, True)]
    train_mining = seen["mine"][:2]  # evaluation runs without mining
    assert len(seen["mine"]) == 2
    for keep, k_easy, k_hard, m, M in train_mining:
        assert (k_easy, k_hard, m, M) == (TINY_T // 5, TINY_T // 20, 3, 6)
        assert keep.shape == (16, TINY_T) and set(keep.unique().tolist()) <= {0.0, 1.0}
    rate = torch.stack([k for k, *_ in train_mining]).double().mean().item()
    assert abs(rate - 0.4) < 0.03  # 4096 draws: sd 0.008
    assert not torch.equal(train_mining[0][0], train_mining[1][0]), "each step draws a new keep mask"
    assert seen["snico"] == [0.07, 0.07]
    # the logged losses: total = action + 0.01 * SniCo (a linear relation, so it holds for averages)
    rec = [r for r in _records(out) if r["kind"] == "train"][-1]
    assert rec["loss"] == pytest.approx(rec["loss_action"] + 0.01 * rec["loss_snico"], rel=1e-5)


# --------------------------------------------------------------------------------------
# checkpoints and resume
# --------------------------------------------------------------------------------------
def test_checkpoint_holds_every_piece(cache, tmp_path):
    cfg = _tiny(steps=2, eval_every=1)
    out = tmp_path / "run"
    summary = train(cfg, out, quiet=True)
    last, best_ck = _load(out / "last.pt"), _load(out / "best.pt")
    assert {"model", "optimizer", "step", "best", "config", "class_names", "feature_dim"} <= set(last)
    assert last["step"] == 2
    assert last["config"] == json.loads((out / "config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))
    assert len(last["class_names"]) == 20 and last["feature_dim"] == 2 * cfg.synthetic_feature_dim
    assert set(last["model"]) == {"embed_weight", "embed_bias", "classifier.weight"}
    # Adam with L2 in the gradient (not AdamW), betas (0.9, 0.999), the run's lr and decay
    (group,) = last["optimizer"]["param_groups"]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (cfg.lr, (0.9, 0.999), 5e-4)
    assert not group.get("decoupled_weight_decay", False)
    state = last["optimizer"]["state"]
    assert len(state) == 3 and all(float(s["step"]) == 2 for s in state.values())
    assert all({"exp_avg", "exp_avg_sq"} <= set(s) for s in state.values())
    # best: the evaluation with the highest average mAP (first one on a tie), as logged
    evals = [r for r in _records(out) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    top = max(evals, key=lambda r: (r["average_mAP"], -r["step"]))
    b = last["best"]
    assert b["step"] == top["step"] and b["average_mAP"] == top["average_mAP"]
    assert b["tiou_thresholds"] == cfg.tiou and b["mAP"] == [top[f"mAP@{t:g}"] for t in cfg.tiou]
    assert b["average_mAP"] == pytest.approx(sum(b["mAP"]) / len(b["mAP"]), rel=1e-12)
    assert best_ck["step"] == b["step"] and best_ck["best"] == b
    assert summary["best"] == b == json.loads((out / "summary.json").read_text())["best"]


def _stop_early(src: Path, dst: Path, steps: int, best=None):
    """A copy of run src whose last.pt belongs to a longer run of `steps` steps (the
    state of an interrupted run), optionally with another `best` written in."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    ck = _load(dst / "last.pt")
    ck["config"]["steps"] = steps
    if best is not None:
        ck["best"] = best
    torch.save(ck, dst / "last.pt")
    return ck


def test_resume_restores_model_optimizer_step_and_best(cache, tmp_path):
    """An uninterrupted 4-step run and a 2-step run resumed to 4 steps end with equal
    weights, optimizer state, step and best."""
    full = tmp_path / "full"
    train(_tiny(steps=4, eval_every=2), full, quiet=True)
    train(_tiny(steps=2, eval_every=2), tmp_path / "half", quiet=True)
    _stop_early(tmp_path / "half", tmp_path / "resumed", steps=4)
    assert main(["--preset", "tiny", "--steps", "4", "--eval-every", "2", "--out", str(tmp_path / "resumed"),
                 "--resume", "--quiet"]) == 0
    a, b = _load(full / "last.pt"), _load(tmp_path / "resumed" / "last.pt")
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"]["state"].items():
        for k in s:
            assert torch.equal(torch.as_tensor(s[k]), torch.as_tensor(b["optimizer"]["state"][i][k])), (i, k)
    assert a["best"] == b["best"]


def test_resumed_run_stops_on_the_same_best(cache, tmp_path):
    """The state at step 1 of a 2-step run is resumed twice, with two `best` written in:
    - best 0.0 (at step 1): the step-2 evaluation, X > 0, replaces it (best.pt, best step 2);
    - best X + 0.001 (at step 1): the step-2 evaluation (X again: the resumed runs are
      equal) is not higher, so best stays, best.pt and best_results.json are not
      replaced, and the run reports that best."""
    first = tmp_path / "first"
    train(_tiny(steps=1, eval_every=1), first, quiet=True)
    tiou = get_preset("tiny").tiou

    def resume(name, best):
        out = tmp_path / name
        _stop_early(first, out, steps=2, best=best)
        before = {f: (out / f).read_bytes() for f in ("best.pt", "best_results.json")}
        assert main(["--preset", "tiny", "--steps", "2", "--eval-every", "1", "--out", str(out),
                     "--resume", "--quiet"]) == 0
        step2 = [r for r in _records(out) if r["kind"] == "eval"][-1]
        assert step2["step"] == 2
        return out, step2["average_mAP"], before

    out, x, _ = resume("worse", {"average_mAP": 0.0, "step": 1, "mAP": [0.0] * 7, "tiou_thresholds": tiou})
    assert x > 0
    best = _load(out / "last.pt")["best"]
    assert best["step"] == 2 and best["average_mAP"] == x
    assert _load(out / "best.pt")["step"] == 2

    better = {"average_mAP": x + 0.001, "step": 1, "mAP": [x + 0.001] * 7, "tiou_thresholds": tiou}
    out, x2, before = resume("better", better)
    assert x2 == x
    assert _load(out / "last.pt")["best"] == better
    assert json.loads((out / "summary.json").read_text())["best"] == better
    for f, content in before.items():
        assert (out / f).read_bytes() == content, f"{f} was replaced by a worse evaluation"


# --------------------------------------------------------------------------------------
# torchrun: batch shares, masks per rank, 2 processes == 1 process
# --------------------------------------------------------------------------------------
DDP_ARGS = ["--preset", "tiny", "--steps", "3", "--eval-every", "3", "--threads", "1", "--quiet",
            "--set", "dropout=0", "--set", "lambda_snico=0"]


def test_torchrun_shares_masks_and_equivalence(cache, tmp_path, monkeypatch):
    """2 gloo processes, global batch 16, 3 steps; then the same run in 1 process.
    - the ranks' shares of every step partition the global batch (16 rows, 8 each);
    - the ranks' keep masks differ at every step, and each rank's differ between steps;
    - with dropout 0 and lambda_snico 0 (the masks then change nothing: COLA_SPEC's
      losses are means over the batch, and DDP averages the ranks' gradients) the
      gradient every rank steps with equals the 1-process run's full-batch gradient."""
    ddp_out, probe = tmp_path / "ddp", tmp_path / "probe"
    probe.mkdir()
    env = dict(os.environ, COLA_FAST_CACHE=str(cache), PROBE_DIR=str(probe),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           str(Path(__file__).with_name("ddp_probe.py"))] + DDP_ARGS + ["--device", "cpu", "--out", str(ddp_out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((ddp_out / "summary.json").read_text())["processes"] == 2
    ranks = [torch.load(probe / f"rank{i}.pt", weights_only=True) for i in (0, 1)]

    one = {"x": [], "keep": [], "grad": []}
    monkeypatch.setattr(ddp_probe.cf_model.CoLA, "forward", ddp_probe.cf_model.CoLA.forward)
    monkeypatch.setattr(cf_ops, "mine_snippets", cf_ops.mine_snippets)
    monkeypatch.setattr(torch.optim.Adam, "step", torch.optim.Adam.step)
    ddp_probe.install(one)  # undone by monkeypatch at teardown
    assert main(DDP_ARGS + ["--device", "cpu", "--out", str(tmp_path / "one")]) == 0

    assert len(one["x"]) == 3 and all(len(rk["x"]) == 3 for rk in ranks)
    for s in range(3):
        glob = one["x"][s]
        assert glob.shape[0] == 16 and all(rk["x"][s].shape[0] == 8 for rk in ranks)
        rows = []  # the global-batch row of each row of each rank's share
        for rk in ranks:
            for row in rk["x"][s]:
                hits = [j for j in range(16) if j not in rows and torch.equal(glob[j], row)]
                assert hits, f"step {s}: a rank trained on a row outside the global batch"
                rows.append(hits[0])
        assert sorted(rows) == list(range(16)), f"step {s}: the shares do not partition the batch: {rows}"
        assert not torch.equal(ranks[0]["keep"][s], ranks[1]["keep"][s]), f"ranks drew the same masks at step {s}"
    for rk in ranks:
        assert not torch.equal(rk["keep"][0], rk["keep"][1])

    # DDP's job is the gradient: the one each rank steps with equals the full-batch one.
    # Step 0 starts from equal weights: equal to float32 rounding. Later steps start from
    # weights that differ by rounding that Adam can amplify (it divides by sqrt(v), so a
    # weight whose gradient is near 0 moves by up to lr on noise): a looser bound.
    for s in range(3):
        tol = 1e-5 if s == 0 else 1e-3
        for i, gb in enumerate(one["grad"][s]):
            scale = gb.abs().max().item()
            assert scale > 0
            for rk in ranks:
                torch.testing.assert_close(rk["grad"][s][i], gb, rtol=1e-3, atol=tol * scale, msg=f"step {s} param {i}")
    # and the run's state agrees: Adam's moments (running means of those gradients)
    a, b = _load(ddp_out / "last.pt"), _load(tmp_path / "one" / "last.pt")
    for i, sb in b["optimizer"]["state"].items():
        sa = a["optimizer"]["state"][i]
        assert float(sa["step"]) == float(sb["step"]) == 3
        for k in ("exp_avg", "exp_avg_sq"):
            scale = sb[k].abs().max().item()
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-3, atol=1e-3 * scale, msg=f"param {i} {k}")
