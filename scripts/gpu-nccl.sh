#!/bin/bash
# The scenario that started vgpu: 8 MPI ranks, one GPU each, starting NCCL
# and running an allreduce of 1 GiB, with and without vgpu, with
# NCCL_CUMEM_ENABLE=0 and 1. Needs a machine with 8 GPUs (nvidia-h200-x8);
# with fewer GPUs it runs as many ranks as there are GPUs.
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0). Usage: scripts/gpu-nccl.sh [dir]
set -u
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
RES=${1:-/tmp/vgpu-nccl}
mkdir -p "$RES"
B=build-gpu
CUDA=${CUDA_HOME:-/usr/local/cuda}
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DVGPU_WERROR=OFF >/dev/null &&
    cmake --build $B -j"$(nproc)" --target vgpu vgpuctl >/dev/null || exit 1
inc=$(dirname "$(find / -name nccl.h -path '*include*' 2>/dev/null | head -1)")
lib=$(dirname "$(find / -name 'libnccl.so*' 2>/dev/null | head -1)")
mpicc -O2 -I$CUDA/include -I"$inc" tests/gpu/nccl_allreduce.c -o $B/nccl_allreduce \
    -L$CUDA/lib64 -lcudart -L"$lib" -l:$(basename "$(ls "$lib"/libnccl.so* | head -1)") \
    -Wl,-rpath,$CUDA/lib64 -Wl,-rpath,"$lib" || exit 1
ngpu=$(nvidia-smi -L | wc -l)
np=$(( ngpu < 8 ? ngpu : 8 ))
LIB=$PWD/$B/libvgpu.so
for cumem in 0 1; do
    for mode in plain vgpu; do
        rm -f "$RES/region.cache"
        pre=(); [ $mode = vgpu ] && pre=(-x LD_PRELOAD="$LIB")
        echo "== NCCL_CUMEM_ENABLE=$cumem, $mode, $np ranks"
        VGPU_NCCL_T0=$(date +%s.%N) mpirun --allow-run-as-root -np $np "${pre[@]}" \
            -x NCCL_NVLS_ENABLE -x NCCL_CUMEM_ENABLE=$cumem -x VGPU_NCCL_T0 \
            -x CUDA_DEVICE_MEMORY_LIMIT=8g -x CUDA_DEVICE_MEMORY_SHARED_CACHE="$RES/region.cache" \
            -x VGPU_NCCL_OVER_BYTES=$((12 << 30)) \
            $B/nccl_allreduce 2>&1 | tee "$RES/nccl-$cumem-$mode.txt"
    done
done
