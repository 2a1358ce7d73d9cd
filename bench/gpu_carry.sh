#!/usr/bin/env bash
# Prepares, on this machine, what bench/gpu_check.sh needs on a device machine that has torch but no
# network (git ignores all three; about 52 MB together, under a device call's 64 MiB):
#   .whl/        nasgraph's wheel and the dependencies the checks import that the device lacks (cp312)
#   .devdata/    Fashion-MNIST's four .gz files; stand-in specs of the embedded models (bench.gguf_standin)
#   .llsrc.tgz   the llama-cpp-python sdist without what a build does not read (5 MB instead of 50)
# Needs the embedded models pulled (nasgraph models pull qwen2.5-coder-0.5b / -1.5b) and .venv set up.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || printf '/.whl/\n/.devdata/\n/.llsrc.tgz\n' >> .git/info/exclude
PY=.venv/bin/python
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
rm -rf .whl && mkdir -p .whl .devdata/fashion-mnist
# The versions this checkout runs with, for what the device's python lacks (its list: the device README).
WANT="annotated-types diskcache distro gguf httpcore2 httpx2 jsonpatch jsonpointer langchain-core langchain-ollama
      langchain-protocol langsmith ollama orjson pydantic pydantic-core pydantic-settings python-dotenv
      requests-toolbelt sniffio tenacity truststore typing-inspection uuid-utils websockets zstandard"
PINS=$($PY -m pip freeze 2>/dev/null | tr 'A-Z_' 'a-z-' | grep -E "^($(echo $WANT | tr ' ' '|'))==")
$PY -m pip download -q --no-deps "${PLAT[@]}" -d .whl $PINS
$PY -m pip wheel -q --no-deps --no-build-isolation -w .whl .
for size in 0.5b 1.5b; do
  $PY -m bench.gguf_standin header "${NASGRAPH_HOME:-$HOME/.nasgraph}/models/qwen2.5-coder-$size-instruct-q4_k_m.gguf" \
    ".devdata/qwen$size.json.gz"
done
cp /usr/share/datasets/fashion-mnist/*.gz .devdata/fashion-mnist/
tmp=$(mktemp -d)
$PY -m pip download -q --no-deps --no-binary=:all: -d "$tmp" llama-cpp-python==0.3.16
tar xzf "$tmp"/llama_cpp_python-0.3.16.tar.gz -C "$tmp"
src="$tmp/llama_cpp_python-0.3.16"
rm -rf "$src"/{.git,docs,examples,tests,docker} "$src"/vendor/llama.cpp/{models,docs,media,examples,tests,tools/server/public}
tar czf .llsrc.tgz -C "$tmp" llama_cpp_python-0.3.16
rm -rf "$tmp"
du -sh .whl .devdata .llsrc.tgz
