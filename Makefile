# Thin front door over CMake. `make demo` runs the main job, `make check`
# runs every test (plain, ASan/UBSan and TSan builds); both install what is
# missing first (Debian packages, as root).
.PHONY: all deps build check demo bench gpu-check clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j$$(nproc)

check: deps
	@scripts/check.sh

demo: build
	@scripts/demo.sh

bench: build
	@scripts/bench.sh

clean:
	rm -rf build build-asan build-tsan
