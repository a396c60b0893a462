#!/bin/bash
# Host time per kernel launch on the simulated GPU (bench/launch_bench.c):
# no preload, libvgpu.so with no compute limit, and with a 50 % cap (the
# simulated kernel takes FAKEGPU_KERNEL_NS=10 of device time, so the cap
# never holds: what is timed is the hooks' path). The three alternate
# REPEAT times (default 5) and each keeps its best, against a loaded host.
# The figures include the simulated driver's own launch: compare the rows.
# Usage: scripts/launch-bench.sh [launches per round]. BENCHMARKS.md §9.
set -eu
cd "$(dirname "$0")/.."
B=${VGPU_BUILD:-build}
N=${1:-100000}
REPEAT=${REPEAT:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export LD_LIBRARY_PATH="$B/fakegpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FAKEGPU_STATE=$dir/state FAKEGPU_KERNEL_NS=10
names=("no preload" "libvgpu.so, no limit" "libvgpu.so, CUDA_DEVICE_SM_LIMIT=50")
envs=("VGPU_BENCH=1" "LD_PRELOAD=$B/libvgpu.so"
      "LD_PRELOAD=$B/libvgpu.so CUDA_DEVICE_SM_LIMIT=50 GPU_CORE_UTILIZATION_POLICY=force")
for r in $(seq "$REPEAT"); do
    for i in 0 1 2; do
        # Each run in a region of its own: a region keeps the caps it was
        # made with.
        rm -f "$dir"/vgpu*.cache
        env CUDA_DEVICE_MEMORY_SHARED_CACHE="$dir/vgpu$i.cache" ${envs[$i]} \
            "$B/launch_bench" "$N" >>"$dir/out$i"
    done
done
for i in 0 1 2; do
    printf '%-36s %s\n' "${names[$i]}" "$(sort -n "$dir/out$i" | head -1)"
done
