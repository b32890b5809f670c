#!/usr/bin/env bash
# Install (scripts/install.sh) and run the test suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# When nvcc is present the CUDA kernels must have been compiled and linked: tests/test_build.py checks it.
if command -v nvcc >/dev/null 2>&1 && [ -z "${FORCE_ONLY_CPU:-}" ]; then export COLA_FAST_EXPECT_CUDA_BUILD=1; fi
exec .venv/bin/python -m pytest -q tests "$@"
