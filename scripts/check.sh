#!/bin/sh
# Build from scratch and run the whole suite, warnings as errors in every
# build: ASan/UBSan, TSan, a hardened build compiled as Ubuntu and Fedora
# compile (-O2 -D_FORTIFY_SOURCE=3, stack protector, CET), then the plain
# build, whose ctest summary is printed last.
set -eu
cd "$(dirname "$0")/.."
jobs=$(nproc)
export TMPDIR="${TMPDIR:-/tmp}"
run_suite() { # dir, cmake args...
    dir=$1; shift
    rm -rf "$dir"
    cmake -S . -B "$dir" -DVGPU_WERROR=ON "$@" >/dev/null
    if ! cmake --build "$dir" -j"$jobs" >"$dir/build.log" 2>&1; then
        cat "$dir/build.log"
        return 1
    fi
    (cd "$dir" && ctest -j"$jobs" --output-on-failure $CTEST_ARGS)
}
# The distributions' default hardening (Ubuntu's gcc enables it implicitly).
HARDENED="-U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3 -fstack-protector-strong \
-fstack-clash-protection -fcf-protection -Wformat -Wformat-security"
status=0
CTEST_ARGS="-LE nosan"
echo "== ASan/UBSan build"; run_suite build-asan -DVGPU_SANITIZE=address || status=1
echo "== TSan build";      run_suite build-tsan -DVGPU_SANITIZE=thread || status=1
# The fuzzer is left to the plain build: it is compiled apart, by clang.
CTEST_ARGS="-LE fuzz --timeout 300"
echo "== hardened build (-O2 -D_FORTIFY_SOURCE=3 -fcf-protection)"
run_suite build-hardened -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="$HARDENED" || status=1
CTEST_ARGS="--timeout 300"
echo "== plain build (-Werror)"; run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo || status=1
exit $status
