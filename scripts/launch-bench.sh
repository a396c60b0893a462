#!/bin/bash
# Host time per kernel launch on the simulated GPU (bench/launch_bench.c):
# no preload, libvgpu.so with no compute limit, and with a 50 % cap (the
# simulated kernel takes FAKEGPU_KERNEL_NS=10 of device time, so the cap
# never holds: what is timed is the hooks' path). The figures include the
# simulated driver's own launch; compare the rows. BENCHMARKS.md §9.
set -eu
cd "$(dirname "$0")/.."
B=${VGPU_BUILD:-build}
N=${1:-200000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export LD_LIBRARY_PATH="$B/fakegpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FAKEGPU_STATE=$dir/state FAKEGPU_KERNEL_NS=10
i=0
run() { # each in a region of its own: a region keeps the caps it was made with
    i=$((i + 1))
    printf '%-36s' "$1"
    shift
    env CUDA_DEVICE_MEMORY_SHARED_CACHE="$dir/vgpu$i.cache" "$@" "$B/launch_bench" "$N"
}
run "no preload" VGPU_BENCH=1
run "libvgpu.so, no limit" LD_PRELOAD="$B/libvgpu.so"
run "libvgpu.so, CUDA_DEVICE_SM_LIMIT=50" LD_PRELOAD="$B/libvgpu.so" \
    CUDA_DEVICE_SM_LIMIT=50 GPU_CORE_UTILIZATION_POLICY=force
