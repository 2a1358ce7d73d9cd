#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded default model: an autonomous search on
# Fashion-MNIST. Extra arguments go to `nasgraph run` (e.g. --iterations 100, --run-id X to resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/nasgraph run --dataset fashion-mnist --iterations 30 "$@"
