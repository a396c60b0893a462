#!/bin/bash
# Soak (not part of make check, about 10 minutes): the region's invariant
# tests, longer: the strict limit under 8 processes x 4 threads for
# VGPU_SOAK_SECONDS (default 300), then VGPU_SOAK_KILLS (default 20000)
# SIGKILLs while others charge. Each fails as in make check.
set -eu
cd "$(dirname "$0")/.."
export VGPU_SOAK_SECONDS=${VGPU_SOAK_SECONDS:-300} VGPU_SOAK_KILLS=${VGPU_SOAK_KILLS:-20000}
export TMPDIR=${TMPDIR:-/tmp}
echo "== region_strict_limit for $VGPU_SOAK_SECONDS s"
build/tests/region_strict_limit
echo "== region_crash_reclaim with $VGPU_SOAK_KILLS kills"
build/tests/region_crash_reclaim
