#!/usr/bin/env bash
# Idempotent setup: a virtualenv in .venv with torch, the project and its test tools, plus the
# offline datasets this machine's package registries can give. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # Pinned pairs that import together (a mismatched torchvision fails with 'torchvision::nms').
  case "$(uname -m)" in
    x86_64) "${PIP[@]}" install torch==2.14.1 torchvision==0.29.1 ;;
    *)      "${PIP[@]}" install torch==2.9.1 torchvision==0.24.1 ;;
  esac
fi

# llama-cpp-python compiles from source the first time (about 9 minutes on 2 cores); pip caches the wheel.
"${PIP[@]}" install -e '.[test]'
# animal-mnist's declared dependencies would drag in a second torch; its data needs none of them.
.venv/bin/python -c "import animal_mnist" 2>/dev/null || "${PIP[@]}" install --no-deps animal-mnist

# Real Fashion-MNIST ships as a Debian package; without apt the evaluator names the folder to use.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 \
    || echo "setup: could not install dataset-fashion-mnist with apt; fashion-mnist will need its files placed by hand" >&2
fi
