#!/bin/bash
# mpi_allreduce_sim: mpirun -np 8 of tests/mpi_allreduce_sim.c on the
# simulated GPU under a 4 GiB per-container limit. Passes when every rank
# succeeds, the limit held, and the region is back to zero afterwards.
# Arguments: the rank program, libvgpu.so, the fakegpu directory, vgpuctl.
set -u
rank=$1 lib=$2 fake=$3 vgpuctl=$4
dir=$(mktemp -d /tmp/vgpu-mpi.XXXXXX)
trap 'rm -rf "$dir"' EXIT
export FAKEGPU_STATE=$dir/fakegpu.state FAKEGPU_DEVICES=1 FAKEGPU_MEMORY=80g
export CUDA_DEVICE_MEMORY_LIMIT=4g CUDA_DEVICE_MEMORY_SHARED_CACHE=$dir/region.cache
export VGPU_TEST_LIMIT_BYTES=$((4 << 30))
# Root in CI; shared-memory transport without ptrace-based single copy.
out=$(timeout 120 mpirun --allow-run-as-root --oversubscribe -np 8 \
    --mca btl self,vader --mca btl_vader_single_copy_mechanism none \
    -x LD_PRELOAD="$lib" -x LD_LIBRARY_PATH="$fake" -x FAKEGPU_STATE \
    -x FAKEGPU_DEVICES -x FAKEGPU_MEMORY -x CUDA_DEVICE_MEMORY_LIMIT \
    -x CUDA_DEVICE_MEMORY_SHARED_CACHE -x VGPU_TEST_LIMIT_BYTES "$rank" 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: mpirun exited $rc"; exit 1; }
echo "$out" | grep -qx OK || { echo "FAIL: rank 0 did not report OK"; exit 1; }
status=$("$vgpuctl" --file "$dir/region.cache" status --json)
echo "$status"
echo "$status" | grep -q '"used":0,' || { echo "FAIL: region not back to zero"; exit 1; }
echo "$status" | grep -q '"processes":\[\]' || { echo "FAIL: slots still held"; exit 1; }
echo "mpi_allreduce_sim: ok"
