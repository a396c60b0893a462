#!/bin/sh
# Install what building and testing vgpu needs, if missing (Debian, as root).
set -eu
need=""
command -v cmake >/dev/null 2>&1 || need="$need cmake"
command -v gcc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
command -v clang >/dev/null 2>&1 || need="$need clang"
# libFuzzer and the sanitizer runtimes for clang
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-"$(uname -m)".a >/dev/null 2>&1 ||
    need="$need libclang-rt-dev"
command -v mpirun >/dev/null 2>&1 || need="$need openmpi-bin"
multiarch=$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")
[ -e /usr/include/$multiarch/openmpi/mpi.h ] || [ -e /usr/lib/$multiarch/openmpi/include/mpi.h ] ||
    need="$need libopenmpi-dev"
command -v python3 >/dev/null 2>&1 || need="$need python3"
command -v curl >/dev/null 2>&1 || need="$need curl"   # the metrics test scrapes with it
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
if [ ! -e "${CUDA_INCLUDE_DIR:-/usr/local/cuda/include}/cuda.h" ]; then
    echo "vgpu: CUDA headers not found in /usr/local/cuda/include (cuda.h);" \
         "install the CUDA toolkit headers or set CUDA_INCLUDE_DIR" >&2
    exit 1
fi
