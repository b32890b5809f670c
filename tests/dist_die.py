"""A trainer process that dies (os._exit) at its first optimizer step when its RANK is
DIE_RANK: the others must stop with one line. Run like python -m cola_fast.train."""
import os
import sys

import torch

from cola_fast.train import main

if __name__ == "__main__":
    if os.environ.get("RANK") == os.environ.get("DIE_RANK"):
        real_step = torch.optim.Adam.step

        def step(self, *a, **k):
            os._exit(9)
        torch.optim.Adam.step = step
    sys.exit(main(sys.argv[1:]))
