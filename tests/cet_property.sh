#!/bin/sh
# libvgpu built with -fcf-protection (x86-64: IBT, SHSTK) or
# -mbranch-protection (aarch64: BTI, PAC) keeps the CPU's control-flow
# protection. The linker marks a library only if every object linked into
# it is marked: each of libvgpu's objects must be (the dlsym trampoline
# included), and then libvgpu.so itself, unless the C library's own start
# files (crti.o, crtn.o) are unmarked, as Debian 12's are: no library
# linked there can be marked, and the test says so.
# Arguments: libvgpu.so, the feature readelf -n shows, its objects
# (';'-separated, as CMake lists them), the C compiler.
set -u
lib=$1 feature=$2 objects=$(echo "$3" | tr ';' ' ') cc=$4
marked() { readelf -n "$1" 2>/dev/null | grep -qF "$feature"; }
for o in $objects; do
    marked "$o" || { echo "FAIL: $o lacks '$feature'"; exit 1; }
done
echo "every object of libvgpu: $feature"
for start in crti.o crtn.o; do
    f=$($cc -print-file-name=$start)
    if ! marked "$f"; then
        echo "cet_property: ok; $f is not marked, so the linker marks no" \
             "library here (libvgpu.so's own objects are)"
        exit 0
    fi
done
readelf -n "$lib" | grep -i "feature"
marked "$lib" || { echo "FAIL: $lib lacks '$feature'"; exit 1; }
echo "cet_property: ok (libvgpu.so: $feature)"
