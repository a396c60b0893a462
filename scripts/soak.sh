#!/bin/bash
# Soak (not part of make check, about 20 minutes): the invariant tests,
# longer. The strict limit under 8 processes x 4 threads for
# VGPU_SOAK_SECONDS (default 300); VGPU_SOAK_KILLS (default 20000) SIGKILLs
# while others charge; the file faults of issue 10: a killed creator with
# 480 waiters (VGPU_SOAK_FAULT_ROUNDS rounds, default 10), a stopped one
# with 64, truncation, deletion and replacement repeated; VGPU_SOAK_EXITS
# (default 2000, a quarter of it through libvgpu) exits while other threads
# charge; VGPU_SOAK_FORKS (default 1000) forks while other threads
# allocate. Each fails as in make check.
set -eu
cd "$(dirname "$0")/.."
export VGPU_SOAK_SECONDS=${VGPU_SOAK_SECONDS:-300} VGPU_SOAK_KILLS=${VGPU_SOAK_KILLS:-20000}
export VGPU_SOAK_EXITS=${VGPU_SOAK_EXITS:-2000} VGPU_SOAK_FORKS=${VGPU_SOAK_FORKS:-1000}
export TMPDIR=${TMPDIR:-/tmp}
build=$PWD/build

# A hook test as ctest runs it: libvgpu.so preloaded on the simulated GPU.
hook() {
    env LD_LIBRARY_PATH="$build/fakegpu:$build" LD_PRELOAD="$build/libvgpu.so" \
        FAKEGPU_STATE="$TMPDIR/soak-$1.state" \
        CUDA_DEVICE_MEMORY_SHARED_CACHE="$TMPDIR/soak-$1.cache" \
        "${@:2}" "$build/tests/$1"
}

echo "== region_strict_limit for $VGPU_SOAK_SECONDS s"
build/tests/region_strict_limit
echo "== region_crash_reclaim with $VGPU_SOAK_KILLS kills"
build/tests/region_crash_reclaim
for t in region_killed_initializer region_stopped_initializer region_truncate \
         region_delete region_replace; do
    echo "== $t, longer"
    VGPU_SOAK_WAITERS=$([ $t = region_stopped_initializer ] && echo 64 || echo 480) \
    VGPU_SOAK_ROUNDS=${VGPU_SOAK_FAULT_ROUNDS:-10} build/tests/$t >/dev/null
done
echo "== region_exit_threads: $VGPU_SOAK_EXITS exits while threads charge"
build/tests/region_exit_threads
echo "== hook_exit_threads: $((VGPU_SOAK_EXITS / 4)) exits while threads allocate"
hook hook_exit_threads VGPU_SOAK_EXITS=$((VGPU_SOAK_EXITS / 4))
echo "== hook_fork_threads: $VGPU_SOAK_FORKS forks while threads allocate"
hook hook_fork_threads
echo "== hook_raw_fork, region_uncharge_clamp, 20 times"
for i in $(seq 20); do
    hook hook_raw_fork >/dev/null
    build/tests/region_uncharge_clamp >/dev/null 2>&1
done
echo "soak: ok"
