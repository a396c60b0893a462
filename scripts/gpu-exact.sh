#!/bin/bash
# Issue 9's proof on a real GPU: does the limit hold on what the GPU holds?
# For each probe, a sampler WITHOUT vgpu (tests/gpu/nvml_sampler.c) sums
# NVML's per-process used memory over every process on GPU 0 every 20 ms
# (the machine runs nothing else, so that is the container's processes) and
# records the peak; the probe runs under vgpu with a 4 GiB limit in a fresh
# region. Prints a table last: probe | peak MiB (NVML) | limit | vgpu's peak.
# Usage: scripts/gpu-exact.sh [results-dir] (builds into build-gpu, as
# scripts/gpu-check.sh does; run that first or let this build).
# VGPU_EXACT_BASELINE=1 runs the same probes without vgpu (the "before").
set -u
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
RES=${1:-/tmp/vgpu-gpu-exact}
mkdir -p "$RES"
B=build-gpu
CUDA=${CUDA_HOME:-/usr/local/cuda}
LIMIT_MIB=4096
TABLE=$RES/exact.txt
: > "$TABLE"

if [ ! -e $B/libvgpu.so ]; then
    cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release >"$RES/build.log" 2>&1 &&
      cmake --build $B -j"$(nproc)" --target vgpu vgpuctl >>"$RES/build.log" 2>&1 ||
      { tail -30 "$RES/build.log"; exit 1; }
fi
gcc -O2 -Isrc tests/gpu/nvml_sampler.c -o $B/nvml_sampler -ldl || exit 1
gcc -O2 -I$CUDA/include tests/gpu/exact_probe.c -o $B/exact_probe \
    -L$CUDA/lib64/stubs -lcuda || exit 1
$CUDA/bin/nvcc -cubin -arch=native tests/gpu/module_static.cu \
    -o $B/module_static.cubin 2>"$RES/nvcc.log" ||
  $CUDA/bin/nvcc -cubin -arch=sm_90 tests/gpu/module_static.cu \
    -o $B/module_static.cubin 2>>"$RES/nvcc.log" || { cat "$RES/nvcc.log"; exit 1; }

LIB=$PWD/$B/libvgpu.so
REGION=$RES/region.cache
SAMPLER=0
start_sampler() {
    rm -f "$RES/stop" "$RES/sample.txt"
    $B/nvml_sampler "$RES/sample.txt" "$RES/stop" &
    SAMPLER=$!
    for _ in $(seq 1 100); do [ -e "$RES/sample.txt" ] && break; sleep 0.02; done
}
stop_sampler() { touch "$RES/stop"; wait $SAMPLER; }
sample() { awk -v k="$1" '$1 == k {print $2}' "$RES/sample.txt"; }
region_mib() { # used or peak of device 0, MiB
    $B/vgpuctl --file "$REGION" status --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["devices"][0][sys.argv[1]] >> 20)' "$1"
}
vg() { # VGPU_EXACT_BASELINE=1: the same probes without vgpu ("before")
    if [ "${VGPU_EXACT_BASELINE:-0}" = 1 ]; then
        "$@"
        return
    fi
    env LD_PRELOAD="$LIB" CUDA_DEVICE_MEMORY_LIMIT=${LIMIT_MIB}m \
        CUDA_DEVICE_MEMORY_SHARED_CACHE="$REGION" "$@"
}
report() { # name, extra
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$(sample peak_mib)" "$LIMIT_MIB" \
        "$(region_mib peak)" "${2:-}" | tee -a "$TABLE"
}
probe() { # name, command...: one process under vgpu
    local name=$1; shift
    rm -f "$REGION"
    start_sampler
    vg timeout 120 "$@" >"$RES/$name.log" 2>&1
    stop_sampler
    report "$name" "$(tr '\n' ' ' <"$RES/$name.log" | cut -c1-90)"
}
race() { # name, chunk MiB: 8 processes start together
    local name=$1 mib=$2 pids=""
    rm -f "$REGION" "$RES/release" "$RES"/race.*
    start_sampler
    for i in 0 1 2 3 4 5 6 7; do
        vg timeout 120 $B/exact_probe race "$mib" "$RES" >"$RES/race.$i" 2>&1 &
        pids="$pids $!"
    done
    for _ in $(seq 1 600); do
        [ "$(cat "$RES"/race.* 2>/dev/null | grep -c -E 'race_chunks|context_error')" -ge 8 ] && break
        sleep 0.1
    done
    sleep 0.5
    touch "$RES/release"
    wait $pids
    stop_sampler
    report "$name" "chunks $(cat "$RES"/race.* | awk '/race_chunks/ {s += $2} END {print s + 0}'), refused at context $(cat "$RES"/race.* | grep -c context_error)"
}
gap() { # name, wrapper...: PyTorch holds 2 GiB at rest; region vs NVML now
    local name=$1; shift
    rm -f "$REGION" "$RES/ready" "$RES/release"
    start_sampler
    vg timeout 120 "$@" python3 tests/gpu/torch_hold.py 2048 "$RES/ready" "$RES/release" \
        >"$RES/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do [ -e "$RES/ready" ] && break; sleep 0.1; done
    sleep 1 # a reconciliation interval and a few samples at rest
    local nvml region
    nvml=$(sample now_mib); region=$(region_mib used)
    touch "$RES/release"
    wait $pid
    stop_sampler
    report "$name" "at rest: NVML $nvml MiB, region $region MiB, gap $((nvml - region)) MiB"
}

echo "| probe | peak MiB held (NVML) | limit MiB | vgpu's peak MiB | notes |" | tee -a "$TABLE"
echo "|---|---|---|---|---|" | tee -a "$TABLE"
race race_8procs_256MiB 256
race race_8procs_64MiB 64
probe cuCtxCreate_x12 $B/exact_probe ctx 12
probe module_2GiB_static_then_3GiB $B/exact_probe module $B/module_static.cubin 3072
probe graph_5GiB_alloc_node $B/exact_probe graph 5120 0
probe graph_3GiB_alloc_node_then_2GiB $B/exact_probe graph 3072 2048
probe graph_3GiB_freed_to_cache_then_2GiB $B/exact_probe graph 3072 2048 free
if [ -x scripts/gpu-pool-probes.sh ] || [ -e scripts/gpu-pool-probes.sh ]; then
    while IFS=$'\t' read -r name cmd; do
        # shellcheck disable=SC2086
        probe "$name" $cmd
    done < <(bash scripts/gpu-pool-probes.sh $B 2>"$RES/pool-build.log")
fi
probe torch_default python3 tests/gpu/torch_check.py torch
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True probe torch_expandable python3 tests/gpu/torch_check.py torch_vmm
PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync probe torch_cudaMallocAsync python3 tests/gpu/torch_check.py torch_async
PIDNS="unshare --pid --fork --mount-proc"
probe torch_default_own_pidns $PIDNS python3 tests/gpu/torch_check.py torch
gap torch_2GiB_at_rest
gap torch_2GiB_at_rest_own_pidns $PIDNS
echo
cat "$TABLE"
