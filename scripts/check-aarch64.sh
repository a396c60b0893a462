#!/bin/sh
# The suite for aarch64 (Grace Hopper, Grace Blackwell): cross-built with
# Debian's gcc-aarch64-linux-gnu, warnings as errors and branch protection
# on (-mbranch-protection=standard), and run under qemu-user with the
# simulated GPU, through binfmt_misc so that tests that fork and exec run
# as they do natively. Installs what is missing (Debian, as root). Tests
# that cannot run there are excluded by label, and named.
set -eu
usage="usage: scripts/check-aarch64.sh [-h|--help]
Cross-builds vgpu for aarch64 in build-aarch64/ and runs its tests under
qemu-user (make check-aarch64)."
case "${1-}" in
    "") ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "check-aarch64.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
jobs=$(nproc)
export TMPDIR="${TMPDIR:-/tmp}"

need=""
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need="$need gcc-aarch64-linux-gnu"
[ -e /usr/aarch64-linux-gnu/include/stdio.h ] || need="$need libc6-dev-arm64-cross"
command -v qemu-aarch64-static >/dev/null 2>&1 || need="$need qemu-user-static"
command -v update-binfmts >/dev/null 2>&1 || need="$need binfmt-support"
if [ -n "$need" ]; then
    echo "installing:$need"
    if [ "$(id -u)" != 0 ]; then
        echo "vgpu: missing packages ($need); run as root or install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $need >/dev/null
fi
# aarch64 programs run by the kernel through qemu (binfmt_misc), so that
# fork+exec in tests and scripts works; qemu finds the aarch64 libraries
# through QEMU_LD_PREFIX.
binfmt=/proc/sys/fs/binfmt_misc
[ -e $binfmt/status ] || mount -t binfmt_misc binfmt_misc $binfmt 2>/dev/null || true
[ -e $binfmt/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
if [ ! -e $binfmt/qemu-aarch64 ]; then
    echo "vgpu: cannot register qemu-aarch64 with binfmt_misc (needs root and" \
         "a mountable $binfmt)" >&2
    exit 1
fi
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu

dir=build-aarch64
rm -rf "$dir"
cmake -S . -B "$dir" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVGPU_WERROR=ON \
    -DCMAKE_C_FLAGS="-mbranch-protection=standard" >/dev/null
if ! cmake --build "$dir" -j"$jobs" >"$dir/build.log" 2>&1; then
    cat "$dir/build.log"
    exit 1
fi
echo "== aarch64 build under qemu-user ($(qemu-aarch64-static --version | head -1))"
echo "not run under qemu: the ASan/UBSan and TSan suites (under qemu-user 7.2" \
     "ASan's leak checker dies and TSan hangs), region_fuzz_validate (libFuzzer," \
     "a host clang build), mpi_allreduce_sim (no Open MPI for aarch64 here);" \
     "excluded by label 'native' (installs a host package):" \
     $(cd "$dir" && ctest -N -L native | sed -n 's/^ *Test *#[0-9]*: //p')
cd "$dir" && ctest -j"$jobs" --output-on-failure -LE native --timeout 600
