#!/bin/bash
# The main job: 8 ranks start together (mpirun -np 8 if Open MPI is there,
# else fork), each initializing CUDA and allocating under a 4 GiB limit for
# the container; first without vgpu, then with it. With no GPU the simulated
# one is used, with a 300 ms context creation as real drivers take.
set -u
cd "$(dirname "$0")/.."
B=${VGPU_BUILD:-build}
DIR=$(mktemp -d /tmp/vgpu-demo.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
LIMIT=4g
if [ -e /dev/nvidia0 ] && [ "${VGPU_DEMO_FAKE:-0}" != 1 ]; then
    # Each rank's context counts too (about 0.5 GiB on an H100): 8 of them
    # and 8 x 448 MiB do not fit in 4 GiB.
    LIMIT=8g
    echo "GPU found: using the real driver; limit $LIMIT, as contexts count"
else
    echo "No GPU: using the simulated one ($B/fakegpu), context creation 300 ms"
    export LD_LIBRARY_PATH="$PWD/$B/fakegpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export FAKEGPU_STATE="$DIR/fakegpu.state" FAKEGPU_CTX_DELAY_MS=300 \
           FAKEGPU_DEVICES=1 FAKEGPU_MEMORY=80g
fi
export CUDA_DEVICE_MEMORY_LIMIT=$LIMIT CUDA_DEVICE_MEMORY_SHARED_CACHE="$DIR/region.cache"
export VGPU_DEMO_DIR="$DIR" VGPU_DEMO_SHARE=448

launch() { # preload (or empty): 8 ranks at once
    rm -f "$DIR"/ready.* "$DIR"/tried.* "$DIR"/release.*
    export VGPU_DEMO_T0=$(date +%s.%N)
    if command -v mpirun >/dev/null 2>&1; then
        mpirun --allow-run-as-root --oversubscribe -np 8 \
            -x LD_PRELOAD="$1" -x LD_LIBRARY_PATH -x VGPU_DEMO_T0 \
            $B/demo_rank >"$DIR/out" 2>&1 &
    else
        for r in 0 1 2 3 4 5 6 7; do
            VGPU_DEMO_RANK=$r LD_PRELOAD="$1" $B/demo_rank >>"$DIR/out" 2>&1 &
        done
    fi
    for i in $(seq 1 600); do
        [ -e "$DIR/tried.0" ] || [ -z "$(jobs -r)" ] && break
        sleep 0.1
    done
}
finish() {
    touch "$DIR/release.0"
    wait
    sort -t' ' -k2,2n "$DIR/out" | grep -v "^rank 0: cuMem"
    grep "^rank 0: cuMem" "$DIR/out"
    awk '/after launch/ {print $(NF-3)}' "$DIR/out" | sort -n |
        awk '{v[NR]=$1} END {printf "start-up: p50 %.3f s, max %.3f s over %d ranks\n", v[int((NR+1)/2)], v[NR], NR}'
    rm -f "$DIR/out"
}

echo
echo "== without vgpu (no limit)"
launch ""
finish
echo
echo "== with vgpu: CUDA_DEVICE_MEMORY_LIMIT=$LIMIT, LD_PRELOAD=$B/libvgpu.so"
rm -f "$DIR/region.cache"
launch "$PWD/$B/libvgpu.so"
echo "-- the region while all 8 ranks hold their memory (vgpuctl status):"
$B/vgpuctl --file "$DIR/region.cache" status
finish
