"""Helper of tests/test_composition_train.py (not a test module): runs `python -m
cola_fast.train` with the given arguments and records, at every training forward of the
model, the input batch, the keep mask the model hands to the mining op and the gradients
the optimizer steps with (after DDP's all-reduce). Written to
$PROBE_DIR/rank<RANK>.pt when the run ends. Works alone and under torchrun."""
import os
import sys

import torch

import cola_fast.ops as cf_ops
from cola_fast import model as cf_model
from cola_fast.train import main


def install(record: dict) -> None:
    """Wrap CoLA.forward, cola_fast.ops.mine_snippets and torch.optim.Adam.step so that they
    fill record["x"], record["keep"] and record["grad"] (one entry per training step); the
    real functions still run."""
    real_forward, real_mine, real_step = cf_model.CoLA.forward, cf_ops.mine_snippets, torch.optim.Adam.step

    def forward(self, x, mine=None):
        if self.training:
            record["x"].append(x.detach().cpu().clone())
        return real_forward(self, x, mine)

    def mine_snippets(actionness, keep, *args, **kwargs):
        record["keep"].append(keep.detach().cpu().clone())
        return real_mine(actionness, keep, *args, **kwargs)

    def step(self, *args, **kwargs):
        record["grad"].append([p.grad.detach().cpu().clone() for g in self.param_groups for p in g["params"]])
        return real_step(self, *args, **kwargs)

    cf_model.CoLA.forward = forward
    cf_ops.mine_snippets = mine_snippets
    torch.optim.Adam.step = step


if __name__ == "__main__":
    rec = {"x": [], "keep": [], "grad": []}
    install(rec)
    rc = main(sys.argv[1:])
    torch.save(rec, os.path.join(os.environ["PROBE_DIR"], f"rank{os.environ.get('RANK', '0')}.pt"))
    sys.exit(rc)
