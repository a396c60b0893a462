#!/bin/bash
# Spatial mode (VGPU_SM_MODE=spatial) on a real GPU: does the runtime's work
# run on the green context's SMs, and what share does it get?
#  1. tests/gpu/green_probe.cu (no vgpu): which ways of making a green
#     context current confine the runtime's launches (before the runtime
#     starts, after it, pushed, on another thread, after a retain);
#  2. tests/gpu/spatial_smid.cu under vgpu, limit 30 %: the SMs the NULL,
#     legacy, created-stream and graph launches ran on (40 of 132 on an
#     H100 if confined) and vgpu's lines (a launch found outside the green
#     context is charged in full and says so);
#  3. a PyTorch 4096x4096 fp16 matmul loop and a 100 us spin kernel: solo,
#     spatial 30 %, time 30 %: work per second, the SM clock and power
#     (nvidia-smi, 200 ms) and the GPU time the budget charged (vgpuctl).
# Needs nvcc, PyTorch and one GPU; no network. About 1 minute.
# Usage: scripts/gpu-spatial.sh [results-dir]
set -u
cd "$(dirname "$0")/.."
RES=${1:-/tmp/vgpu-gpu-spatial}
B=build-gpu
CUDA=${CUDA_HOME:-/usr/local/cuda}
LIB=$PWD/$B/libvgpu.so
mkdir -p "$RES"
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DVGPU_WERROR=OFF >"$RES/build.log" 2>&1 &&
  cmake --build $B -j"$(nproc)" --target vgpu vgpuctl >>"$RES/build.log" 2>&1 ||
  { tail -30 "$RES/build.log"; exit 1; }
for p in tests/gpu/green_probe.cu:-lcuda tests/gpu/spatial_smid.cu: bench/gpu_compute.cu:; do
    src=${p%%:*}; name=$(basename "$src" .cu)
    $CUDA/bin/nvcc -O2 -arch=native "$src" -o $B/"$name" ${p#*:} >>"$RES/build.log" 2>&1 ||
      $CUDA/bin/nvcc -O2 -arch=sm_90 "$src" -o $B/"$name" ${p#*:} >>"$RES/build.log" 2>&1 ||
      { tail -30 "$RES/build.log"; exit 1; }
done
cat >"$RES/mm.py" <<'PY'
import time, torch
a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16); b = torch.randn_like(a)
def step():
    for _ in range(10): a @ b
    torch.cuda.synchronize()
t = time.monotonic()
while time.monotonic() - t < 1: step()
n, t = 0, time.monotonic()
while time.monotonic() - t < 5: step(); n += 10
print("work_per_s %.1f" % (n / (time.monotonic() - t)))
PY
clock_start() { # name: samples SM clock and power into $RES/clk.name
    nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits \
        -lms 200 >"$RES/clk.$1" 2>/dev/null &
    CLK=$!
}
clock_stop() { # name
    kill $CLK 2>/dev/null; wait $CLK 2>/dev/null
    awk -F, -v n="$1" 'NR > 5 && $1 + 0 > 0 {c += $1; p += $2; k++}
        END {if (k) printf "  %s: SM clock %.0f MHz, power %.0f W (%d samples)\n", n, c / k, p / k, k}' "$RES/clk.$1"
}
under() { # mode region command...: under vgpu at 30 %, then its budget
    local mode=$1 region=$RES/$2.cache; shift 2
    rm -f "$region"
    env LD_PRELOAD="$LIB" VGPU_SM_MODE="$mode" CUDA_DEVICE_SM_LIMIT=30 \
        GPU_CORE_UTILIZATION_POLICY=force CUDA_DEVICE_MEMORY_SHARED_CACHE="$region" \
        timeout 60 "$@"
    $B/vgpuctl --file "$region" status 2>&1 | grep compute
}
echo "== which ways of making a green context current confine the runtime (no vgpu)"
for w in before retain after push thread; do timeout 30 $B/green_probe $w; done
echo "== the runtime's SMs: alone, then spatial 30 %"
timeout 30 $B/spatial_smid
under spatial smid $B/spatial_smid
for w in "python3 $RES/mm.py" "$B/gpu_compute spin 100 async 1 5"; do
    echo "== $w: solo, spatial 30 %, time 30 %"
    clock_start solo; timeout 60 $w; clock_stop solo
    clock_start spatial; under spatial sp $w; clock_stop spatial
    clock_start time; under time tm $w; clock_stop time
done
