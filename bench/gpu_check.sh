#!/usr/bin/env bash
# The GPU checks in one call on a device machine that has torch (CUDA), nvcc and cmake but not
# nasgraph's other dependencies and no network. `bash bench/gpu_carry.sh` prepares here what it needs
# (.whl/, .devdata/, .llsrc.tgz; carry all three). Writes into $OUT: the llama.cpp build log, share.json
# (bench.gpu_share), lora.json (bench.lora_device). About 5 minutes on an H200; docs/2026-11-28-gpu-share.md.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"; REPO=$PWD
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
mkdir -p /usr/share/datasets/fashion-mnist && cp .devdata/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || find / -name nvcc -type f 2>/dev/null | head -1)
echo "nvcc: $NVCC"
# llama.cpp with CUDA for this card's architecture alone (2.5 minutes on 16 cores), and with its own C++
# runtime: linked to the shared one, loading a model beside torch 2.11+cu130 crashed (SIGSEGV in std::regex).
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
mkdir -p /tmp/ll && tar xzf .llsrc.tgz -C /tmp/ll
( export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH -DGGML_CUDA_FA=OFF -DLLAVA_BUILD=OFF -DCMAKE_CUDA_COMPILER=$NVCC"
  CMAKE_ARGS="$CMAKE_ARGS -DCMAKE_SHARED_LINKER_FLAGS='-static-libstdc++ -Wl,--exclude-libs,ALL'"
  export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
  /usr/bin/time -f "build %e s" timeout "${BUILD_LIMIT:-380}" python3 -m pip install -v --no-build-isolation --no-deps \
    --no-index --target /tmp/llama /tmp/ll/llama_cpp_python-0.3.16 ) > "$OUT/build.log" 2>&1 &
BUILD=$!
export PYTHONPATH=/tmp/llama:/tmp/site:$REPO
cd /tmp  # so that `nasgraph` is the wheel's, `bench` the checkout's
python3 -m bench.gguf_standin write "$REPO/.devdata/qwen0.5b.json.gz" /tmp/standin-0.5b.gguf
python3 -m bench.gguf_standin write "$REPO/.devdata/qwen1.5b.json.gz" /tmp/standin-1.5b.gguf
# LoRA training runs while llama.cpp compiles (GPU work against CPU work); its adapter check needs the build.
timeout "${LORA_LIMIT:-240}" python3 -m bench.lora_device --gguf /tmp/standin-0.5b.gguf --work /tmp/lora --train-only \
  > "$OUT/lora-train.log" 2>&1; tail -2 "$OUT/lora-train.log"
wait $BUILD; tail -3 "$OUT/build.log"
python3 -c "import llama_cpp; print('llama.cpp GPU offload:', llama_cpp.llama_supports_gpu_offload())"
timeout "${SHARE_LIMIT:-120}" python3 -m bench.gpu_share --gguf /tmp/standin-1.5b.gguf --rounds 3 --out "$OUT/share.json" | tail -8
timeout 60 python3 -m bench.lora_device --gguf /tmp/standin-0.5b.gguf --work /tmp/lora --out "$OUT/lora.json" | tail -22
