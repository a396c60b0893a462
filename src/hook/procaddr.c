/* Every way a program reaches the driver's functions leads to our hooks:
 *  - direct calls: libvgpu.so exports the hooked names (memory.c & co);
 *  - dlsym(libcuda handle, "cuMemAlloc_v2"): our dlsym answers with the hook;
 *  - cuGetProcAddress(_v2), and the runtime's cudaGetDriverEntryPoint built
 *    on it: the driver picks the variant for the asked version and flags,
 *    and we swap the function it picked for our hook of that very variant. */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "hook/real.h"
#include "log.h"

#define EXPORT __attribute__((visibility("default")))

static void *swapped(const char *symbol, int version, cuuint64_t flags, void *fn)
{
    void *hook = hook_for_real(fn);
    if (hook != fn)
        log_debug("cuGetProcAddress(%s, %d, %llu): hooked", symbol, version,
                  (unsigned long long)flags);
    return hook;
}

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version,
                                    cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *status)
{
    NEED(cuGetProcAddress_v2);
    CUresult rc = REAL(cuGetProcAddress_v2)(symbol, pfn, version, flags, status);
    if (rc == CUDA_SUCCESS && pfn)
        *pfn = swapped(symbol, version, flags, *pfn);
    return rc;
}

EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version,
                                 cuuint64_t flags)
{
    NEED(cuGetProcAddress);
    CUresult rc = REAL(cuGetProcAddress)(symbol, pfn, version, flags);
    if (rc == CUDA_SUCCESS && pfn)
        *pfn = swapped(symbol, version, flags, *pfn);
    return rc;
}

/* dlsym itself. glibc resolves dlsym(RTLD_NEXT, name) relative to the
 * object that called it, found from the return address: a plain wrapper
 * would make every RTLD_NEXT lookup relative to libvgpu (and sanitizer
 * runtimes, which resolve their interceptors so, would then find
 * themselves). On x86-64 and aarch64, arch/<cpu>/dlsym.S answers hooked
 * names through vgpu_dlsym_hook and otherwise branches to glibc's dlsym
 * with the caller's return address intact; on other CPUs this C version
 * stands in, and RTLD_NEXT lookups are then relative to libvgpu (CMake
 * warns). */
void *vgpu_dlsym_hook(const char *name)
{
    void *hook = hook_for_symbol(name);
    if (hook != NULL)
        log_debug("dlsym(%s): hooked", name);
    return hook;
}

__attribute__((no_sanitize_address, no_sanitize_thread,
               no_sanitize("undefined")))
void *vgpu_dlsym_next(void)
{
    return real_dlsym_fn();
}

#ifndef VGPU_HAVE_DLSYM_TRAMPOLINE
EXPORT void *dlsym(void *handle, const char *name)
{
    void *hook = vgpu_dlsym_hook(name);
    return hook ? hook : real_dlsym(handle, name);
}
#endif
