"""The P-MIL evaluation (31,587 detections: read + check + mAP) timed under two checkouts,
side by side in one run: each round runs both, alternating, in fresh processes.

    python bench/evaluate_ab.py BASE_ROOT NEW_ROOT [--rounds 5]

Each process times 7 calls of evaluate_detection(gt, results path) after a warm-up and
prints its median; the table gives the median over rounds and the ratio NEW / BASE.
"""
import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CHILD = f"""
import time
import cola_fast
assert cola_fast.__file__.startswith({{root!r}}), cola_fast.__file__
from cola_fast.evaluation import evaluate_detection, load_gt
gt = load_gt({str(DATA / 'gt.json')!r})
res = {str(DATA / 'thumos14_test_pmil.json')!r}
evaluate_detection(gt, res)
ts = []
for _ in range(7):
    t = time.perf_counter(); evaluate_detection(gt, res); ts.append(time.perf_counter() - t)
print(sorted(ts)[3])
"""


def once(root: str) -> float:
    env = dict(os.environ, PYTHONPATH=root)  # and cwd=root: "python -c" puts the cwd first on sys.path
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=os.path.abspath(root))], env=env, cwd=root, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    times = {"base": [], "new": []}
    for _ in range(a.rounds):
        times["base"].append(once(a.base))
        times["new"].append(once(a.new))
    b, n = statistics.median(times["base"]), statistics.median(times["new"])
    print("| checkout | median s (P-MIL file, evaluate_detection) |\n|---|---|")
    print(f"| base {a.base} | {b:.4f} |\n| new {a.new} | {n:.4f} |")
    print(f"new / base = {n / b:.3f}  (rounds: base {['%.3f' % t for t in times['base']]}, "
          f"new {['%.3f' % t for t in times['new']]})")


if __name__ == "__main__":
    main()
