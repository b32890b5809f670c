#!/usr/bin/env bash
# Install (scripts/install.sh) and run the default training on the built-in synthetic data.
# Extra arguments go to `python -m cola_fast.train` (e.g. --preset tiny, --out DIR, --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m cola_fast.train "$@"
