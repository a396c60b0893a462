#!/bin/bash
# The main job: 8 ranks start together (mpirun -np 8 if Open MPI is there,
# else fork), each initializing CUDA and allocating under a 4 GiB limit for
# the container; first without vgpu, then with it. With no GPU the simulated
# one is used, with a 300 ms context creation as real drivers take.
# Prints a table per run, the region's table, and the refusal; whatever
# vgpu or the ranks write to stderr is shown after the run, so a warning is
# never hidden and never expected.
set -u
usage="usage: scripts/demo.sh [-h|--help]
Runs 8 ranks on one GPU without and with vgpu (the simulated GPU if there is
no /dev/nvidia0, or with VGPU_DEMO_FAKE=1). Build directory: \$VGPU_BUILD
(default build)."
case "${1-}" in
    "") ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
B=$(realpath "${VGPU_BUILD:-build}")
DIR=$(mktemp -d /tmp/vgpu-demo.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
LIMIT=4g SHARE=448
echo "vgpu demo: 8 ranks start together on one GPU, each allocates $SHARE MiB;"
echo "then rank 0 asks for 2 GiB more."
if [ -e /dev/nvidia0 ] && [ "${VGPU_DEMO_FAKE:-0}" != 1 ]; then
    # Each rank's context counts too (about 0.5 GiB on an H100): 8 of them
    # and 8 x 448 MiB do not fit in 4 GiB.
    LIMIT=8g
    echo "GPU found: the real driver; limit $LIMIT, as each rank's context counts"
else
    echo "No GPU found: the simulated one (80 GiB, 300 ms to create a context)"
    export LD_LIBRARY_PATH="$B/fakegpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export FAKEGPU_STATE="$DIR/fakegpu.state" FAKEGPU_CTX_DELAY_MS=300 \
           FAKEGPU_DEVICES=1 FAKEGPU_MEMORY=80g
fi
export CUDA_DEVICE_MEMORY_LIMIT=$LIMIT CUDA_DEVICE_MEMORY_SHARED_CACHE="$DIR/region.cache"
export VGPU_DEMO_DIR="$DIR" VGPU_DEMO_SHARE=$SHARE

launch() { # preload (or empty): 8 ranks at once
    rm -f "$DIR"/ready.* "$DIR"/tried.* "$DIR"/release.* "$DIR/out" "$DIR/err"
    export VGPU_DEMO_T0=$(date +%s.%N)
    if command -v mpirun >/dev/null 2>&1; then
        mpirun --allow-run-as-root --oversubscribe -np 8 \
            -x LD_PRELOAD="$1" -x LD_LIBRARY_PATH -x VGPU_DEMO_T0 \
            "$B/demo_rank" >"$DIR/out" 2>"$DIR/err" &
    else
        for r in 0 1 2 3 4 5 6 7; do
            VGPU_DEMO_RANK=$r LD_PRELOAD="$1" "$B/demo_rank" \
                >>"$DIR/out" 2>>"$DIR/err" &
        done
    fi
    for i in $(seq 1 600); do
        [ -e "$DIR/tried.0" ] || [ -z "$(jobs -r)" ] && break
        sleep 0.1
    done
}
# One key=value line per rank (demo/rank.c) -> a table, sorted by rank.
field() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p"; }
finish() {
    touch "$DIR/release.0"
    wait
    echo "rank      pid  start-up  $SHARE MiB"
    grep "^rank=" "$DIR/out" | sort -t= -k2,2n | while read -r line; do
        printf '%4s %8s  %8s  %s\n' "$(echo "$line" | field rank)" \
            "$(echo "$line" | field pid)" \
            "$(echo "$line" | field startup | sed 's/.$/& s/')" \
            "$(echo "$line" | field result)"
    done
    grep "^extra=" "$DIR/out" | while read -r line; do
        echo "rank 0 asks for 2 GiB more (cuMemGetInfo:" \
             "$(echo "$line" | field free) MiB free of" \
             "$(echo "$line" | field total) MiB): $(echo "$line" | field result)"
    done
    grep "^rank=" "$DIR/out" | field startup | sort -n |
        awk '{v[NR]=$1} END {if (NR) printf "start-up: p50 %.3f s, max %.3f s over %d ranks\n", v[int((NR+1)/2)], v[NR], NR}'
    if [ -s "$DIR/err" ]; then
        echo "-- the ranks' messages (stderr):"
        sed 's/^/   /' "$DIR/err"
    fi
}

echo
echo "== without vgpu: no limit"
launch ""
finish
echo
echo "== with vgpu: CUDA_DEVICE_MEMORY_LIMIT=$LIMIT LD_PRELOAD=${VGPU_BUILD:-build}/libvgpu.so"
rm -f "$DIR/region.cache"
launch "$B/libvgpu.so"
echo "-- the region while the 8 ranks hold their memory (vgpuctl status):"
"$B/vgpuctl" --file "$DIR/region.cache" status | sed 's/^/   /'
echo "--"
finish
