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
    if (REAL(cuGetProcAddress_v2) == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult rc = REAL(cuGetProcAddress_v2)(symbol, pfn, version, flags, status);
    if (rc == CUDA_SUCCESS && pfn)
        *pfn = swapped(symbol, version, flags, *pfn);
    return rc;
}

EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version,
                                 cuuint64_t flags)
{
    if (REAL(cuGetProcAddress) == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult rc = REAL(cuGetProcAddress)(symbol, pfn, version, flags);
    if (rc == CUDA_SUCCESS && pfn)
        *pfn = swapped(symbol, version, flags, *pfn);
    return rc;
}

EXPORT void *dlsym(void *handle, const char *name)
{
    void *hook = hook_for_symbol(name);
    if (hook == NULL)
        return real_dlsym(handle, name);
    log_debug("dlsym(%s): hooked", name);
    return hook;
}
