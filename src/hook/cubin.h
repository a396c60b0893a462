/* The static device data a module image asks for, read from the image the
 * way the driver reads it: a cubin (an ELF file for a GPU) reserves its
 * __device__ globals (.nv.global, NOBITS, and .nv.global.init) and its
 * module-wide constant banks (.nv.constantN but bank 0, which holds each
 * kernel's parameters) when it is loaded. A fatbin container holds cubins
 * for several architectures and PTX; the driver loads one of them, so the
 * largest uncompressed cubin counts. What is not read here (compressed
 * entries, PTX compiled at load, code loaded lazily) is left to the
 * reconciliation with NVML. */
#ifndef VGPU_HOOK_CUBIN_H
#define VGPU_HOOK_CUBIN_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of static device data in an image in memory (a cubin, a fatbin
 * container, or the runtime's wrapper of one), 0 when none can be read.
 * size: the image's size if known, else 0 (then the image's own headers
 * bound the reads, as the driver trusts them). */
uint64_t cubin_static_bytes(const void *image, size_t size);

/* The same for an image in a file (cuModuleLoad, cuLibraryLoadFromFile). */
uint64_t cubin_file_static_bytes(const char *path);

#endif
