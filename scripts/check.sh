#!/bin/sh
# Build from scratch and run the whole suite: ASan/UBSan, TSan, then the
# plain -Werror build, whose ctest summary is printed last.
set -eu
cd "$(dirname "$0")/.."
jobs=$(nproc)
export TMPDIR="${TMPDIR:-/tmp}"
run_suite() { # dir, cmake args...
    dir=$1; shift
    rm -rf "$dir"
    cmake -S . -B "$dir" "$@" >/dev/null
    if ! cmake --build "$dir" -j"$jobs" >"$dir/build.log" 2>&1; then
        cat "$dir/build.log"
        return 1
    fi
    (cd "$dir" && ctest -j"$jobs" --output-on-failure $CTEST_ARGS)
}
status=0
CTEST_ARGS="-LE nosan"
echo "== ASan/UBSan build"; run_suite build-asan -DVGPU_SANITIZE=address || status=1
echo "== TSan build";      run_suite build-tsan -DVGPU_SANITIZE=thread || status=1
CTEST_ARGS="--timeout 300"
echo "== plain build (-Werror)"; run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo || status=1
exit $status
