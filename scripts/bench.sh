#!/bin/bash
# Benchmarks (not part of make check): the region alone, then the demo's
# start-up on the simulated GPU. Results go to stdout; BENCHMARKS.md records
# them with this command.
set -eu
cd "$(dirname "$0")/.."
echo "## Region ($(nproc) cores, $(uname -m))"
build/region_bench
echo
echo "## Start-up of 8 ranks on the simulated GPU (make demo)"
scripts/demo.sh | grep -E "^==|^start-up|one more GiB"
