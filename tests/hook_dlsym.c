/* dlopen + dlsym, the way frameworks reach the driver and NVML: the symbols
 * obtained are libvgpu's hooks, and the limit holds through them. */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "hook_util.h"
#include "nvml_decl.h"

static void *hook_of(void *lib, const char *name)
{
    void *fn = dlsym(lib, name);
    CHECK(fn != NULL, "%s resolves", name);
    Dl_info info;
    CHECK(dladdr(fn, &info) && strstr(info.dli_fname, "libvgpu") != NULL,
          "%s comes from %s, not libvgpu", name, info.dli_fname);
    return fn;
}

int main(void)
{
    hook_fresh(1, "8g", "2g");
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    CHECK(cuda != NULL, "dlopen");
    CUresult (*init)(unsigned) = dlsym(cuda, "cuInit");
    CUresult (*retain)(CUcontext *, CUdevice) = dlsym(cuda, "cuDevicePrimaryCtxRetain");
    CUresult (*set)(CUcontext) = dlsym(cuda, "cuCtxSetCurrent");
    CUresult (*alloc)(CUdeviceptr *, size_t) = hook_of(cuda, "cuMemAlloc_v2");
    CUresult (*release)(CUdeviceptr) = hook_of(cuda, "cuMemFree_v2");
    CUresult (*info)(size_t *, size_t *) = hook_of(cuda, "cuMemGetInfo_v2");
    hook_of(cuda, "cuGetProcAddress_v2");
    CHECK(dlsym(cuda, "cuInit") != NULL, "unhooked symbols still resolve");
    CUcontext ctx;
    CU_OK(init(0));
    CU_OK(retain(&ctx, 0));
    CU_OK(set(ctx));
    CUdeviceptr p;
    CHECK(alloc(&p, 3 * GiB) == CUDA_ERROR_OUT_OF_MEMORY, "limit via dlsym");
    CU_OK(alloc(&p, GiB));
    size_t free_b, total;
    CU_OK(info(&free_b, &total));
    CHECK(total == 2 * GiB && free_b == GiB, "meminfo via dlsym");
    CU_OK(release(p));

    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    CHECK(nvml != NULL, "dlopen nvml");
    nvmlReturn_t (*ninit)(void) = dlsym(nvml, "nvmlInit_v2");
    nvmlReturn_t (*handle)(unsigned, nvmlDevice_t *) =
        dlsym(nvml, "nvmlDeviceGetHandleByIndex_v2");
    nvmlReturn_t (*mem)(nvmlDevice_t, nvmlMemory_t *) =
        hook_of(nvml, "nvmlDeviceGetMemoryInfo");
    nvmlDevice_t dev;
    nvmlMemory_t m;
    CHECK(ninit() == NVML_SUCCESS && handle(0, &dev) == NVML_SUCCESS, "nvml");
    CHECK(mem(dev, &m) == NVML_SUCCESS && m.total == 2 * GiB, "nvml total %llu",
          m.total);
    printf("hook_dlsym: ok\n");
    return 0;
}
