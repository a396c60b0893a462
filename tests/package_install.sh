#!/bin/bash
# make package's .deb holds the layout HAMi expects (/usr/local/vgpu:
# libvgpu.so, vgpuctl, ld.so.preload naming the library; links in
# /usr/local/lib and /usr/local/bin). As root, where no vgpu package is
# installed already, it is installed with dpkg -i: the library, at the path
# ld.so.preload names, limits a CUDA program on the simulated GPU and the
# installed vgpuctl reads its region; then the package is purged. Without
# root or dpkg only the package's contents are checked (said so).
# Before that, make install's staging (PREFIX, DESTDIR) is checked too.
# Arguments: build directory, installed_alloc helper, fakegpu directory.
set -u
build=$1 prog=$2 fake=$3
dir=$(mktemp -d /tmp/vgpu-package.XXXXXX)
pid= installed=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    [ -n "$installed" ] && dpkg_retry --purge vgpu
    rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
# dpkg refuses at once while another dpkg or apt runs: try again for a while.
dpkg_retry() {
    for i in $(seq 1 120); do
        dpkg "$@" >"$dir/dpkg.log" 2>&1 && return 0
        grep -qi "lock" "$dir/dpkg.log" || break
        sleep 1
    done
    cat "$dir/dpkg.log"
    return 1
}

# make install PREFIX=/opt/vgpu DESTDIR=stage: the same layout, and
# ld.so.preload names the library where it will be, not where it is staged.
DESTDIR=$dir/stage cmake --install "$build" --prefix /opt/vgpu >"$dir/install.log" 2>&1 ||
    fail "cmake --install: $(cat "$dir/install.log")"
s=$dir/stage/opt/vgpu
[ -f "$s/vgpu/libvgpu.so" ] && [ -x "$s/vgpu/vgpuctl" ] || fail "staged vgpu/"
[ "$(readlink "$s/lib/libvgpu.so")" = ../vgpu/libvgpu.so ] || fail "staged lib/libvgpu.so"
[ "$(readlink "$s/bin/vgpuctl")" = ../vgpu/vgpuctl ] || fail "staged bin/vgpuctl"
[ "$(cat "$s/vgpu/ld.so.preload")" = /opt/vgpu/vgpu/libvgpu.so ] ||
    fail "staged ld.so.preload: $(cat "$s/vgpu/ld.so.preload")"
"$s/bin/vgpuctl" --help >/dev/null || fail "staged vgpuctl runs"

(cd "$build" && cpack -G DEB -B "$dir/pkg") >"$dir/cpack.log" 2>&1 ||
    fail "cpack: $(cat "$dir/cpack.log")"
deb=$(ls "$dir"/pkg/vgpu_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no vgpu_*.deb: $(cat "$dir/cpack.log")"
echo "package: $(basename "$deb")"
dpkg-deb -c "$deb" >"$dir/contents" || fail "dpkg-deb -c"
for f in "./usr/local/vgpu/libvgpu.so" "./usr/local/vgpu/vgpuctl" \
         "./usr/local/vgpu/ld.so.preload" \
         "./usr/local/lib/libvgpu.so -> ../vgpu/libvgpu.so" \
         "./usr/local/bin/vgpuctl -> ../vgpu/vgpuctl"; do
    grep -qF " $f" "$dir/contents" || fail "the package lacks $f"
done
grep -Eq "/(fakegpu|tests)/|libcuda|libnvidia-ml" "$dir/contents" &&
    fail "the package holds test files: $(grep -E 'fakegpu|tests|libcuda|nvidia-ml' "$dir/contents")"
dpkg-deb -x "$deb" "$dir/x" || fail "dpkg-deb -x"
[ "$(cat "$dir/x/usr/local/vgpu/ld.so.preload")" = /usr/local/vgpu/libvgpu.so ] ||
    fail "ld.so.preload names /usr/local/vgpu/libvgpu.so"

if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null; then
    echo "package_install: contents checked; not installed (needs root and dpkg)"
    exit 0
fi
# One install at a time on this machine (parallel test runs).
exec 9>/tmp/vgpu-package-test.lock
flock 9
if dpkg -s vgpu >/dev/null 2>&1; then
    echo "package_install: contents checked; a vgpu package is installed here, left alone"
    exit 0
fi
installed=1
dpkg_retry -i "$deb" || fail "dpkg -i"
lib=$(cat /usr/local/vgpu/ld.so.preload)
[ -f "$lib" ] || fail "$lib installed"
export LD_LIBRARY_PATH=$fake FAKEGPU_STATE=$dir/fakegpu.state \
       CUDA_DEVICE_MEMORY_SHARED_CACHE=$dir/region.cache CUDA_DEVICE_MEMORY_LIMIT=1g
LD_PRELOAD=$lib "$prog" 300 "$dir/ready" & pid=$!
for i in $(seq 1 200); do
    [ -e "$dir/ready" ] && break
    kill -0 $pid 2>/dev/null || fail "the program failed under the installed library"
    sleep 0.05
done
[ -e "$dir/ready" ] || fail "the program did not get ready"
/usr/local/bin/vgpuctl status || fail "installed vgpuctl status"
/usr/local/bin/vgpuctl status --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["devices"][0]["used"] == 300 << 20, d
assert d["devices"][0]["limit"] == 1 << 30, d
assert [p["pid"] for p in d["processes"]] == [int(sys.argv[1])], d
' $pid || fail "the installed vgpuctl reads the region: 300 MiB of 1 GiB, one process"
/usr/local/vgpu/vgpuctl metrics | grep -q "^hami_vgpu_memory_used_bytes{.*} $((300 << 20))$" ||
    fail "installed vgpuctl metrics"
kill $pid; wait $pid 2>/dev/null; pid=
dpkg_retry --purge vgpu || fail "dpkg --purge"
installed=
[ ! -e /usr/local/vgpu/libvgpu.so ] && [ ! -e /usr/local/bin/vgpuctl ] || fail "purged"
echo "package_install: ok (installed, used, purged)"
