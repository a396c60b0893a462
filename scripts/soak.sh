#!/bin/bash
# Soak (not part of make check, about 10 minutes): the region's invariant
# tests, longer: the strict limit under 8 processes x 4 threads for
# VGPU_SOAK_SECONDS (default 300), then VGPU_SOAK_KILLS (default 20000)
# SIGKILLs while others charge; then the file faults of issue 10, longer:
# a killed creator with 480 waiters (VGPU_SOAK_FAULT_ROUNDS rounds, default
# 10), a stopped one with 64, truncation, deletion and replacement repeated.
# Each fails as in make check.
set -eu
cd "$(dirname "$0")/.."
export VGPU_SOAK_SECONDS=${VGPU_SOAK_SECONDS:-300} VGPU_SOAK_KILLS=${VGPU_SOAK_KILLS:-20000}
export TMPDIR=${TMPDIR:-/tmp}
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
