#!/bin/bash
# make demo's first screen on the simulated GPU: a table of the 8 ranks for
# each run, the region's table, the refusal past the limit, start-up lines,
# and nothing else (no make noise; a stderr section only if something was
# said). Its --help and unknown arguments follow the CLI conventions.
# Arguments: the source directory, the build directory.
set -u
src=$1 build=$2
fail() { echo "FAIL: $*"; exit 1; }
out=$(VGPU_BUILD=$build VGPU_DEMO_FAKE=1 "$src/scripts/demo.sh" 2>&1) || fail "demo exited $?"
echo "$out"
echo "$out" | grep -q "Entering directory" && fail "make noise"
[ "$(echo "$out" | grep -c '^rank      pid  start-up  448 MiB$')" = 2 ] || fail "two rank tables"
[ "$(echo "$out" | grep -Ec '^ +[0-7] +[0-9]+ +[0-9.]+ s  granted$')" = 16 ] ||
    fail "16 rank rows, all granted"
echo "$out" | sed -n '/^== without/,/^== with/p' |
    grep -q "^rank 0 asks for 2 GiB more .*: granted$" || fail "granted without vgpu"
echo "$out" | sed -n '/^== with vgpu/,$p' |
    grep -q "^rank 0 asks for 2 GiB more (cuMemGetInfo: [0-9]* MiB free of 4096 MiB): CUDA_ERROR_OUT_OF_MEMORY$" ||
    fail "refused with vgpu, 4096 MiB seen"
echo "$out" | grep -q "^   mode default, 8 process(es)$" || fail "the region's table"
[ "$(echo "$out" | grep -c '^start-up: p50')" = 2 ] || fail "start-up lines"
# The simulated GPU reports per-process usage as NVML does: contexts are
# measured as on a real GPU, and nothing is expected on stderr.
echo "$out" | grep -q "messages (stderr)" && fail "a message on the first screen"
"$src/scripts/demo.sh" --help | grep -q "^usage:" || fail "demo --help"
"$src/scripts/demo.sh" --bogus 2>/dev/null; [ $? = 2 ] || fail "demo --bogus: exit 2"
echo "demo_first_screen: ok"
