/* libvgpu reads its environment once: after the first CUDA and NVML calls,
 * allocations, frees, memory queries and context retains call no getenv.
 * This program exports its own getenv (ENABLE_EXPORTS), which every
 * library's getenv calls bind to, and counts the calls made from libvgpu. */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "hook_util.h"
#include "nvml_decl.h"

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);

extern char **environ;
static int from_vgpu;

static bool called_from_vgpu(void *caller)
{
    Dl_info info;
    return dladdr(caller, &info) && info.dli_fname &&
           strstr(info.dli_fname, "libvgpu") != NULL;
}

/* Also runs before main (sanitizer runtimes, constructors): no
 * instrumentation, no libc string functions. */
__attribute__((no_sanitize_address, no_sanitize_thread, no_sanitize("undefined")))
char *getenv(const char *name)
{
    size_t n = 0;
    while (name[n])
        n++;
    for (char **e = environ; e && *e; e++) {
        size_t i = 0;
        while (i < n && (*e)[i] == name[i])
            i++;
        if (i == n && (*e)[n] == '=') {
            if (called_from_vgpu(__builtin_return_address(0)))
                __atomic_add_fetch(&from_vgpu, 1, __ATOMIC_RELAXED);
            return *e + n + 1;
        }
    }
    if (called_from_vgpu(__builtin_return_address(0)))
        __atomic_add_fetch(&from_vgpu, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void round_of_calls(nvmlDevice_t nvml)
{
    CUdeviceptr p;
    size_t free_b, total;
    CUcontext ctx;
    nvmlMemory_t m;
    CU_OK(cuMemAlloc_v2(&p, 8 * MiB));
    CU_OK(cuMemGetInfo_v2(&free_b, &total));
    CU_OK(cuMemFree_v2(p));
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(nvmlDeviceGetMemoryInfo(nvml, &m) == NVML_SUCCESS, "nvml memory");
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    fakegpu_context(0);
    nvmlDevice_t nvml;
    CHECK(nvmlInit_v2() == NVML_SUCCESS, "nvmlInit");
    CHECK(nvmlDeviceGetHandleByIndex_v2(0, &nvml) == NVML_SUCCESS, "handle");
    round_of_calls(nvml);
    int first = __atomic_load_n(&from_vgpu, __ATOMIC_RELAXED);
    CHECK(first > 0, "the counter sees libvgpu read its table (%d reads)", first);
    __atomic_store_n(&from_vgpu, 0, __ATOMIC_RELAXED);
    for (int i = 0; i < 100; i++)
        round_of_calls(nvml);
    int later = __atomic_load_n(&from_vgpu, __ATOMIC_RELAXED);
    CHECK(later == 0, "%d getenv calls from libvgpu after its first use", later);
    printf("hook_no_getenv: %d reads at start, none in 100 rounds: ok\n", first);
    return 0;
}
