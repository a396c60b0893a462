#!/bin/bash
# The compute limit (CUDA_DEVICE_SM_LIMIT) on a real GPU: each tenant's
# share = its work per second / the same workload's solo work per second,
# over a WIN-second window after WARM seconds. Workloads: a spin kernel of
# 100 us on every SM (asynchronous, and synchronized after each launch),
# 5 us kernels, a CUDA graph of 10 x 20 us replayed, a PyTorch 4096x4096
# fp16 matmul loop; two containers (30 % + 70 %) together; one container of
# two processes sharing 40 %; host ns inside a launch call against no
# preload, with the GPU mostly idle. For a tenant alone, the "busy" column
# is the GPU's busy share as the host sees it (nvidia-smi's utilization,
# sampled outside the tenant over its window): the cap is a share of GPU
# time, so a workload that leaves the GPU idle part of the time when alone
# (it synchronizes, or its host is slower than its kernels) does more than
# cap % of its solo work while busy at most cap % of the time.
# HAMi-core in the same table when HAMI_LIB=/path/to/its/libvgpu.so is set.
# PAIR_RESUME_MS="2 8 32" adds the two containers together once at each of
# those resume levels (VGPU_SM_RESUME_MS; PAIR_RESUME_ROUNDS=3: three times,
# the levels interleaved), two plain processes together, and
# a 30 % container beside a process without vgpu: what switching between
# contexts costs, what longer stretches give back, and whether the GPU has
# the room a 70 % neighbour is charged for.
# PARTS="resume overhead" runs only those parts (and the solo rate they
# need); the default is every part: "table pair resume overhead".
# Needs nvcc and one GPU; no network. About 4 minutes.
# Usage: scripts/gpu-compute.sh [results-dir]
set -u
cd "$(dirname "$0")/.."
RES=${1:-/tmp/vgpu-gpu-compute}
WARM=${WARM:-1}
WIN=${WIN:-5}
B=build-gpu
CUDA=${CUDA_HOME:-/usr/local/cuda}
HAMI_LIB=${HAMI_LIB:-}
LIMIT_S=$((WARM + WIN + 40)) # per run: start-up included
PARTS=${PARTS:-table pair resume overhead}
part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
mkdir -p "$RES"
rm -f "$RES"/*.out "$RES"/*.cache

cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DVGPU_WERROR=OFF >"$RES/build.log" 2>&1 &&
  cmake --build $B -j"$(nproc)" --target vgpu vgpuctl >>"$RES/build.log" 2>&1 ||
  { tail -30 "$RES/build.log"; exit 1; }
$CUDA/bin/nvcc -O2 -arch=native bench/gpu_compute.cu -o $B/gpu_compute >>"$RES/build.log" 2>&1 ||
  $CUDA/bin/nvcc -O2 -arch=sm_90 bench/gpu_compute.cu -o $B/gpu_compute >>"$RES/build.log" 2>&1 ||
  { tail -30 "$RES/build.log"; exit 1; }
LIB=$PWD/$B/libvgpu.so
TORCH="$RES/matmul.py"
cat >"$TORCH" <<'PY'
import sys, time, torch
warm, win = float(sys.argv[1]), float(sys.argv[2])
a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
b = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
def step():
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
t0 = time.monotonic()
while time.monotonic() - t0 < warm:
    step()
n, t1 = 0, time.monotonic()
while time.monotonic() - t1 < win:
    step()
    n += 10
print("work_per_s %.1f" % (n / (time.monotonic() - t1)))
PY

workload() { # name -> the command
    case $1 in
    long)  echo "$B/gpu_compute spin 100 async $WARM $WIN" ;;
    sync)  echo "$B/gpu_compute spin 100 sync $WARM $WIN" ;;
    short) echo "$B/gpu_compute spin 5 async $WARM $WIN" ;;
    graph) echo "$B/gpu_compute graph 20 $WARM $WIN" ;;
    torch) echo "python3 $TORCH $WARM $WIN" ;;
    esac
}
# start LIB CAP REGION OUT WORKLOAD: one tenant in the background; its pid in $!
# (with VGPU_SM_RESUME_MS=$RESUME where RESUME is set, and every measured
# launch in its output where TRACE is set)
start() {
    local lib=$1 cap=$2 region=$3 out=$4 w=$5
    if [ "$lib" = none ]; then
        timeout $LIMIT_S $(workload "$w") >"$out" 2>&1 &
    else
        env LD_PRELOAD="$lib" CUDA_DEVICE_SM_LIMIT="$cap" GPU_CORE_UTILIZATION_POLICY=force \
            CUDA_DEVICE_MEMORY_SHARED_CACHE="$region" ${RESUME:+VGPU_SM_RESUME_MS=$RESUME} \
            ${TRACE:+LIBCUDA_LOG_LEVEL=3} \
            timeout $LIMIT_S $(workload "$w") >"$out" 2>&1 &
    fi
}
# The GPU's busy share as the host sees it, sampled by nvidia-smi (no
# preload) every 200 ms while a tenant runs alone: NVML's utilization.gpu,
# the share of time a kernel of any process was running. One value a line.
sampler() { # out-file; its pid in $!
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits \
        -lms 200 >"$1" 2>/dev/null &
}
one() { # lib tag cap workload: alone, in a fresh region
    local region="$RES/$2-$4-$3.cache"
    rm -f "$region"
    sampler "$RES/$2-$4-$3.util"
    local smi=$!
    start "$1" "$3" "$region" "$RES/$2-$4-$3.out" "$4"
    local pid=$!
    wait $pid
    kill $smi 2>/dev/null
    wait $smi 2>/dev/null
}

echo "== solo rates (no preload)"
if part table; then
    for w in long sync short graph torch; do one none solo 0 $w; done
else
    one none solo 0 long
fi
if part table; then
echo "== vgpu, one container"
for cap in 10 30 50 70 90; do one "$LIB" vgpu $cap long; done
for w in sync short graph torch; do for cap in 30 70; do one "$LIB" vgpu $cap $w; done; done
fi
if part table && [ -n "$HAMI_LIB" ]; then
    echo "== HAMi-core ($HAMI_LIB)"
    for cap in 30 70; do for w in long graph torch; do one "$HAMI_LIB" hami $cap $w; done; done
fi
part pair && echo "== two containers together: 30 % and 70 %, three rounds"
part pair && for round in 1 2 3; do
    rm -f "$RES"/pair$round-*.cache
    sampler "$RES/pair$round.util"; smi=$!
    start "$LIB" 30 "$RES/pair$round-a.cache" "$RES/pair$round-long-30.out" long; a=$!
    start "$LIB" 70 "$RES/pair$round-b.cache" "$RES/pair$round-long-70.out" long; b=$!
    wait $a; wait $b
    kill $smi 2>/dev/null; wait $smi 2>/dev/null
done
if part resume && [ -n "${PAIR_RESUME_MS:-}" ]; then
    echo "== two plain processes together; the pair at resume levels $PAIR_RESUME_MS ms"
    start none 0 - "$RES/plain2a-long-0.out" long; a=$!
    start none 0 - "$RES/plain2b-long-0.out" long; b=$!
    wait $a; wait $b
    rm -f "$RES/beside.cache"
    start "$LIB" 30 "$RES/beside.cache" "$RES/beside30-long-30.out" long; a=$!
    start none 0 - "$RES/beside0-long-0.out" long; b=$!
    wait $a; wait $b
    TRACE=1 # the 70 % tenant's measurements, alone and in the pair
    rm -f "$RES"/trace*.cache
    start "$LIB" 70 "$RES/trace-alone.cache" "$RES/tracealone-long-70.out" long; wait $!
    start "$LIB" 30 "$RES/trace-a.cache" "$RES/tracepair-long-30.out" long; a=$!
    start "$LIB" 70 "$RES/trace-b.cache" "$RES/tracepair-long-70.out" long; b=$!
    wait $a; wait $b
    TRACE=
    for round in $(seq "${PAIR_RESUME_ROUNDS:-1}"); do # levels interleaved
        for ms in $PAIR_RESUME_MS; do
            rm -f "$RES"/resume$ms-r$round-*.cache
            RESUME=$ms
            start "$LIB" 30 "$RES/resume$ms-r$round-a.cache" "$RES/resume$ms-r$round-long-30.out" long; a=$!
            start "$LIB" 70 "$RES/resume$ms-r$round-b.cache" "$RES/resume$ms-r$round-long-70.out" long; b=$!
            wait $a; wait $b
        done
    done
    RESUME=
fi
if part table; then
echo "== one container of two processes sharing 40 %"
rm -f "$RES/shared.cache"
start "$LIB" 40 "$RES/shared.cache" "$RES/shared1-long-40.out" long; a=$!
start "$LIB" 40 "$RES/shared.cache" "$RES/shared2-long-40.out" long; b=$!
wait $a; wait $b
fi
part overhead && echo "== launch overhead (empty kernels 20 us apart, host ns inside the call)"
# The GPU stays mostly idle, so no cap binds and no queue fills: the time
# inside cuLaunchKernel is the hook's cost. OVH_ROUNDS rounds (default 7),
# configurations alternating within each, all on one CPU (the call's time
# moved by 1 us between rounds when the process could move); what counts
# is each configuration's median call against no preload's in the same
# round, and the median of those differences over the rounds.
PIN=; command -v taskset >/dev/null && PIN="taskset -c 1"
part overhead && for round in $(seq "${OVH_ROUNDS:-7}"); do
    $PIN timeout 60 $B/gpu_compute call ${OVH_CALLS:-50000} 20 >>"$RES/ovh-plain.out" 2>&1
    rm -f "$RES/ovh.cache"
    env LD_PRELOAD="$LIB" CUDA_DEVICE_MEMORY_SHARED_CACHE="$RES/ovh.cache" \
        $PIN timeout 60 $B/gpu_compute call ${OVH_CALLS:-50000} 20 >>"$RES/ovh-nolimit.out" 2>&1
    rm -f "$RES/ovh.cache"
    env LD_PRELOAD="$LIB" CUDA_DEVICE_SM_LIMIT=90 GPU_CORE_UTILIZATION_POLICY=force \
        CUDA_DEVICE_MEMORY_SHARED_CACHE="$RES/ovh.cache" \
        $PIN timeout 60 $B/gpu_compute call ${OVH_CALLS:-50000} 20 >>"$RES/ovh-cap90.out" 2>&1
    # Held should stay near 0: a hold here is the limit, not the hook.
    $B/vgpuctl --file "$RES/ovh.cache" status --json 2>/dev/null |
        python3 -c 'import json,sys; print("held_ns", json.load(sys.stdin)["devices"][0]["sm_waited_ns"])' \
        >>"$RES/ovh-cap90.out"
done

python3 - "$RES" "$WARM" "$WIN" <<'PY'
import glob, os, re, statistics, sys
res = sys.argv[1]
WARM, WIN = float(sys.argv[2]), float(sys.argv[3])
def values(path, key):
    try:
        return [float(x) for x in re.findall(r"^%s ([0-9.]+)" % key, open(path).read(), re.M)]
    except OSError:
        return []
def val(path, key):
    v = values(path, key)
    return v[0] if v else None
def busy(path):
    """The GPU's busy % over the measured window. A run ends when its
    window does, so the window is the samples before its last busy one
    (which the exit cuts short); its start is no anchor, as a context's
    creation shows a busy sample seconds before PyTorch's first kernel."""
    try:
        u = [float(x) for x in open(path).read().split() if x.replace(".", "").isdigit()]
    except OSError:
        return None
    per_s = 5  # samples a second (-lms 200)
    last = max((i for i, x in enumerate(u) if x > 0), default=None)
    if last is None:
        return None
    w = u[max(0, last - int(WIN * per_s)):last]
    return sum(w) / len(w) if w else None
solo = {w: val(f"{res}/solo-{w}-0.out", "work_per_s") for w in
        ("long", "sync", "short", "graph", "torch")}
solo_busy = {w: busy(f"{res}/solo-{w}-0.util") for w in solo}
print("%-10s %-8s %5s %7s %7s %7s %s" % ("tenant", "workload", "cap", "share", "error",
                                         "busy", "note"))
errs = {"vgpu": [], "hami": []}
def pct(x):
    return "%6.1f%%" % x if x is not None else "%7s" % "-"
def row(tag, w, cap, rate, note="", gpu=None):
    base = solo.get(w)
    if rate is None or not base:
        print("%-10s %-8s %5d %7s %7s %7s %s" % (tag, w, cap, "-", "-", "-", "no result " + note))
        return
    share = 100 * rate / base
    print("%-10s %-8s %5d %6.1f%% %+6.1f  %s %s" % (tag, w, cap, share, share - cap, pct(gpu), note))
    errs.setdefault(tag.split("-")[0], []).append(abs(share - cap))
    if gpu is not None:
        busy_errs.setdefault(tag.split("-")[0], []).append(abs(gpu - cap))
busy_errs = {}
for w in solo:
    print("%-10s %-8s %5s %7s %7s %s solo %s/s" % ("solo", w, "-", "-", "-",
                                                   pct(solo_busy[w]), solo[w]))
for tag in ("vgpu", "hami"):
    for path in sorted(glob.glob(f"{res}/{tag}-*.out"),
                       key=lambda p: (p.split("-")[-2], int(p.split("-")[-1][:-4]))):
        _, w, cap = os.path.basename(path)[:-4].split("-")
        row(tag, w, int(cap), val(path, "work_per_s"),
            "first 1 s: %.0f%%" % (100 * (val(path, "first_s_work_per_s") or 0) /
                                  max(solo.get(w) or 1, 1)),
            busy(path[:-4] + ".util"))
for r in (1, 2, 3):
    for cap in (30, 70):
        row("vgpu-pair", "long", cap, val(f"{res}/pair{r}-long-{cap}.out", "work_per_s"),
            "together with the other, round %d (GPU busy %s in all)" %
            (r, pct(busy(f"{res}/pair{r}.util")).strip()))
def together(tag, runs, note):
    """Tenants run together as an experiment: printed, outside the spread.
    runs: (out-file, cap or None) pairs."""
    for path, cap in runs:
        rate, base = val(path, "work_per_s"), solo["long"]
        if rate is None or not base:
            print("%-10s %-8s %5s %7s %7s %7s no result %s" % (tag, "long", cap or "-",
                  "-", "-", "-", note))
            continue
        share = 100 * rate / base
        print("%-10s %-8s %5s %6.1f%% %7s %7s %s" % (tag, "long", cap or "-", share,
              "%+6.1f" % (share - cap) if cap else "-", "-", note))
if os.path.exists(f"{res}/plain2a-long-0.out"):
    together("plain-two", [(f"{res}/plain2a-long-0.out", None),
                           (f"{res}/plain2b-long-0.out", None)], "no preload, both at once")
    together("beside", [(f"{res}/beside30-long-30.out", 30),
                        (f"{res}/beside0-long-0.out", None)],
             "a 30 % container beside a process without vgpu")
def measurements(path):
    """The measured launches a LIBCUDA_LOG_LEVEL=3 run printed: how far
    above the shortest they ran, and how many the estimator set aside."""
    try:
        text = open(path).read()
    except OSError:
        return
    ns = [int(x) for x in re.findall(r" measured (\d+) ns", text)]
    if not ns:
        return
    low, n = min(ns), len(ns)
    kept = [x for x in ns if x <= 2 * low]
    print("  %s: %d measured, shortest %.1f us, median %.1f us; 1.1-2x the "
          "shortest %.1f %%, over 2x %.1f %%; set aside as stretched %d; "
          "mean of those within 2x %.1f us" % (
              os.path.basename(path), n, low / 1e3, statistics.median(ns) / 1e3,
              100 * sum(1.1 * low < x <= 2 * low for x in ns) / n,
              100 * sum(x > 2 * low for x in ns) / n, text.count("(stretched"),
              statistics.mean(kept) / 1e3))
for name in ("tracealone-long-70", "tracepair-long-70", "tracepair-long-30"):
    measurements(f"{res}/{name}.out")
def level(path):
    """resume<ms>-r<round>-long-30.out -> (ms, round)"""
    ms, rnd = os.path.basename(path)[6:].split("-")[:2]
    return (int(ms) if ms.isdigit() else -1, int(rnd[1:]) if rnd[1:].isdigit() else 0)
for path in sorted(glob.glob(f"{res}/resume*-r*-long-30.out"), key=level):
    ms, rnd = level(path)
    together("resume-%d" % ms, [(path, 30), (path.replace("-30.out", "-70.out"), 70)],
             "together, VGPU_SM_RESUME_MS=%d, round %d" % (ms, rnd))
r1 = val(f"{res}/shared1-long-40.out", "work_per_s")
r2 = val(f"{res}/shared2-long-40.out", "work_per_s")
row("vgpu-2proc", "long", 40, (r1 + r2) if r1 and r2 else None, "two processes, one cap")
def spread(what, tag, e):
    if e:
        e = sorted(e)
        p95 = e[min(len(e) - 1, int(round(0.95 * (len(e) - 1))))]
        print("%s: median |%s - cap| %.1f points, p95 %.1f (%d runs)" %
              (tag, what, statistics.median(e), p95, len(e)))
for tag, e in errs.items():
    spread("share", tag, e)
for tag, e in busy_errs.items():
    spread("busy", tag, e)
o = {k: values(f"{res}/ovh-{k}.out", "ns_per_call_median")
     for k in ("plain", "nolimit", "cap90")}
rounds = min(len(v) for v in o.values())
if rounds:
    med = {k: statistics.median(v[:rounds]) for k, v in o.items()}
    print("ns inside a launch call, median call, median of %d rounds: no preload %.0f, "
          "vgpu no limit %.0f, vgpu cap 90 %.0f" % (rounds, med["plain"], med["nolimit"], med["cap90"]))
    for k in ("nolimit", "cap90"):
        d = sorted(a - b for a, b in zip(o[k], o["plain"]))
        print("  %s - no preload, each round: %s ns; median %+.0f" %
              (k, " ".join("%+.0f" % x for x in d), statistics.median(d)))
    held = values(f"{res}/ovh-cap90.out", "held_ns")
    print("  cap 90's launches held, ns a round: %s" % " ".join("%.0f" % h for h in held))
PY
