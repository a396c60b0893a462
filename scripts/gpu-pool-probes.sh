#!/bin/bash
# The stream-ordered pool probes of issue 9 on a real GPU, for a sampler of
# NVML per-process usage (scripts/gpu-check.sh). Builds pool_probe next to
# the other GPU programs, then prints, one per line, "name<TAB>command" for
# each probe; the sampler runs each command under vgpu (and without it for
# the "before" figure) and records the peak MiB NVML attributes to it.
#   scripts/gpu-pool-probes.sh BUILD_DIR
# Each command prints "key value" lines and holds its memory 1 s at the end.
set -eu
cd "$(dirname "$0")/.."
B=${1:-build-gpu}
CUDA=${CUDA_HOME:-/usr/local/cuda}
mkdir -p "$B"
gcc -O2 -I"$CUDA/include" tests/gpu/pool_probe.c -o "$B/pool_probe" \
    -L"$CUDA/lib64" -lcudart -Wl,-rpath,"$CUDA/lib64"
printf 'pool_cache_then_cudaMalloc\t%s\n' "$B/pool_probe cache 1000"
printf 'pool_live_then_cudaMalloc\t%s\n' "$B/pool_probe live 1000"
printf 'pool_first_growth_near_limit\t%s\n' "$B/pool_probe first 1000"
printf 'torch_cudaMallocAsync_free_then_other_library\t%s\n' \
    "env PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync python3 tests/gpu/torch_pool_probe.py torch_pool 1000"
