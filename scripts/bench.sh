#!/bin/bash
# Benchmarks (not part of make check; several minutes): the region alone,
# the demo's start-up on the simulated GPU, then every synchronization mode
# side by side (bench/modes_bench.c), with a plot of start-up time against
# process count. Results: stdout and bench/results/. BENCHMARKS.md records
# them with this command.
set -eu
cd "$(dirname "$0")/.."
B=${VGPU_BUILD:-build}
mkdir -p bench/results
echo "## Region ($(nproc) cores, $(uname -m))"
$B/region_bench
echo
echo "## Start-up of 8 ranks on the simulated GPU (make demo)"
VGPU_BUILD=$B scripts/demo.sh | grep -E "^==|^start-up|GiB more"
echo
echo "## Synchronization modes (simulated GPU, context creation 300 ms, cudaMalloc 50 us,"
echo "## 300 ms of start-up work under the seed modes' lock file)"
$B/modes_bench $B bench/results "$@"
if ! command -v gnuplot >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
fi
if command -v gnuplot >/dev/null 2>&1; then
    cols=$(head -2 bench/results/startup.dat | tail -1 | wc -w)
    gnuplot <<GP
set terminal pngcairo size 900,560
set output 'bench/results/startup.png'
set title 'Start-up: launch to first allocation, slowest process (simulated GPU)'
set xlabel 'processes started at the same instant'
set ylabel 'seconds (log)'
set logscale y
set key outside right
set xtics (8, 32, 64, 128)
names = system("sed -n 2p bench/results/startup.dat | cut -c3-")
plot for [i=2:$cols] 'bench/results/startup.dat' using 1:i with linespoints title word(names, i-1)
GP
    echo "plot: bench/results/startup.png"
fi
