# Thin front door over CMake. `make demo` runs the main job, `make check`
# runs every test (ASan/UBSan, TSan, hardened and plain builds); both install
# what is missing first (Debian packages, as root).
.PHONY: all deps configure build quiet-build check check-aarch64 demo bench soak install package clean

# cmake --build runs make again: without this, every level of it prints
# "Entering directory" lines.
export MAKEFLAGS += --no-print-directory

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: configure
	@cmake --build build -j$$(nproc)

# The demo's first screen is the demo: the build's lines go to a log,
# shown only if the build fails.
quiet-build: configure
	@echo "building vgpu (log in build/build.log)"
	@cmake --build build -j$$(nproc) >build/build.log 2>&1 || \
	    { cat build/build.log; exit 1; }

check: deps
	@scripts/check.sh

# The suite cross-built for aarch64 and run under qemu-user (CI runs it
# after make check).
check-aarch64: deps
	@scripts/check-aarch64.sh

demo: quiet-build
	@scripts/demo.sh

bench: build
	@scripts/bench.sh

# Longer runs of the invariant tests (not part of make check).
soak: build
	@scripts/soak.sh

# The node layout HAMi expects: PREFIX/vgpu/{libvgpu.so,vgpuctl,ld.so.preload},
# links in PREFIX/lib and PREFIX/bin. DESTDIR stages it elsewhere.
PREFIX ?= /usr/local
install: build
	@DESTDIR="$(DESTDIR)" cmake --install build --prefix "$(PREFIX)"

# A Debian package of that layout under /usr/local: build/vgpu_*.deb.
package: build
	@cd build && cpack -G DEB

clean:
	rm -rf build build-asan build-tsan build-hardened build-aarch64
