#!/bin/bash
# Start-up of N processes started together on one GPU, with and without
# vgpu, alternating rounds: each process reports its time from start to its
# first cudaMalloc (tests/gpu/runtime_check.c startup); prints p50 and max.
# Usage: scripts/gpu-startup.sh [N] [rounds] (after scripts/gpu-check.sh built build-gpu)
# MEASURED=1: one process runs in the region first, so that the context's
# size is known before the N start (a container's later starts).
set -u
cd "$(dirname "$0")/.."
N=${1:-32}; ROUNDS=${2:-2}
B=build-gpu
CUDA=${CUDA_HOME:-/usr/local/cuda}
RES=$(mktemp -d)
[ -e $B/runtime_check ] || gcc -O2 -I$CUDA/include tests/gpu/runtime_check.c -o $B/runtime_check \
    -L$CUDA/lib64 -lcudart -Wl,-rpath,$CUDA/lib64 || exit 1
round() { # label, env...
    local label=$1 pids="" i; shift
    rm -f "$RES"/s.* "$RES/region.cache"
    [ "${MEASURED:-0}" = 1 ] && env "$@" $B/runtime_check startup >/dev/null 2>&1
    for i in $(seq 1 "$N"); do
        env "$@" timeout 120 $B/runtime_check startup >"$RES/s.$i" 2>&1 &
        pids="$pids $!"
    done
    wait $pids
    cat "$RES"/s.* | awk '/startup_s/ {print $2}' | sort -n |
        awk -v l="$label" -v n="$N" '{v[NR] = $1} END {printf "%s %d processes: p50 %.3f s, max %.3f s (%d reported)\n", l, n, v[int((NR + 1) / 2)], v[NR], NR}'
}
for r in $(seq 1 "$ROUNDS"); do
    round plain X=1
    round vgpu LD_PRELOAD=$PWD/$B/libvgpu.so CUDA_DEVICE_MEMORY_LIMIT=40g \
        CUDA_DEVICE_MEMORY_SHARED_CACHE="$RES/region.cache"
done
rm -rf "$RES"
