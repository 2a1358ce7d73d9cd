#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: unit tests, then integration tests on real
# data and the real embedded 0.5B model (pulled into the model cache on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/nasgraph models pull qwen2.5-coder-0.5b
.venv/bin/nasgraph lemur pull   # the LEMUR corpus (103 MB wheel, ~40 s to index) for its integration tests
# The 30 slowest tests are printed at the end, to keep the suite under 30 minutes.
exec .venv/bin/python -m pytest -q --durations=30 "$@"
