# Thin front door over CMake. `make demo` runs the main job, `make check`
# runs every test (plain, ASan/UBSan and TSan builds); both install what is
# missing first (Debian packages, as root).
.PHONY: all deps build check demo bench soak clean

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

# Longer runs of the invariant tests (not part of make check).
soak: build
	@scripts/soak.sh

clean:
	rm -rf build build-asan build-tsan build-hardened
