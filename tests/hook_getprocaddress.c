/* cuGetProcAddress(_v2) with every CUDA version and flag combination the
 * runtime uses (and cudaGetDriverEntryPoint* build on): each versioned
 * variant that allocates or frees comes back as libvgpu's hook of that very
 * variant, and the limit holds through it. */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "hook_util.h"

typedef CUresult (*getproc_v2_t)(const char *, void **, int, cuuint64_t,
                                 CUdriverProcAddressQueryResult *);
typedef CUresult (*getproc_v1_t)(const char *, void **, int, cuuint64_t);

static getproc_v2_t getproc;

static const char *origin(void *fn)
{
    Dl_info info;
    return fn && dladdr(fn, &info) ? info.dli_fname : "?";
}

static void *hooked(const char *name, int version, cuuint64_t flags,
                    void *expected_hook)
{
    void *fn = NULL;
    CUdriverProcAddressQueryResult st;
    CU_OK(getproc(name, &fn, version, flags, &st));
    CHECK(fn != NULL && st == CU_GET_PROC_ADDRESS_SUCCESS, "%s@%d found", name, version);
    CHECK(strstr(origin(fn), "libvgpu") != NULL, "%s@%d flags %llu from %s",
          name, version, (unsigned long long)flags, origin(fn));
    CHECK(fn == expected_hook, "%s@%d flags %llu: the hook of the right variant",
          name, version, (unsigned long long)flags);
    return fn;
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    getproc = (getproc_v2_t)dlsym(cuda, "cuGetProcAddress_v2");
    CHECK(strstr(origin((void *)getproc), "libvgpu"), "cuGetProcAddress_v2 hooked");
    void *vgpu = dlopen("libvgpu.so", RTLD_NOW | RTLD_NOLOAD);
    CHECK(vgpu != NULL, "libvgpu.so is loaded");
#define HOOK(name) dlsym(vgpu, #name)
    const cuuint64_t flags[] = {CU_GET_PROC_ADDRESS_DEFAULT,
                                CU_GET_PROC_ADDRESS_LEGACY_STREAM,
                                CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM};
    const int versions[] = {12000, 12080, 13000};
    for (int f = 0; f < 3; f++) {
        bool pt = flags[f] == CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
        for (int v = 0; v < 3; v++) {
            int ver = versions[v];
            hooked("cuMemAlloc", ver, flags[f], HOOK(cuMemAlloc_v2));
            hooked("cuMemFree", ver, flags[f], HOOK(cuMemFree_v2));
            hooked("cuMemAllocPitch", ver, flags[f], HOOK(cuMemAllocPitch_v2));
            hooked("cuMemAllocManaged", ver, flags[f], HOOK(cuMemAllocManaged));
            hooked("cuMemGetInfo", ver, flags[f], HOOK(cuMemGetInfo_v2));
            hooked("cuDeviceTotalMem", ver, flags[f], HOOK(cuDeviceTotalMem_v2));
            hooked("cuMemAllocAsync", ver, flags[f],
                   pt ? HOOK(cuMemAllocAsync_ptsz) : HOOK(cuMemAllocAsync));
            hooked("cuMemFreeAsync", ver, flags[f],
                   pt ? HOOK(cuMemFreeAsync_ptsz) : HOOK(cuMemFreeAsync));
            hooked("cuMemAllocFromPoolAsync", ver, flags[f],
                   pt ? HOOK(cuMemAllocFromPoolAsync_ptsz)
                      : HOOK(cuMemAllocFromPoolAsync));
            hooked("cuMemCreate", ver, flags[f], HOOK(cuMemCreate));
            hooked("cuMemRelease", ver, flags[f], HOOK(cuMemRelease));
            hooked("cuArrayCreate", ver, flags[f], HOOK(cuArrayCreate_v2));
            hooked("cuArray3DCreate", ver, flags[f], HOOK(cuArray3DCreate_v2));
            hooked("cuArrayDestroy", ver, flags[f], HOOK(cuArrayDestroy));
            hooked("cuMipmappedArrayCreate", ver, flags[f], HOOK(cuMipmappedArrayCreate));
            hooked("cuGetProcAddress", ver, flags[f], HOOK(cuGetProcAddress_v2));
        }
    }
    /* Old ABI versions get the old variants, hooked too. */
    hooked("cuMemAlloc", 3010, 0, HOOK(cuMemAlloc));
    hooked("cuMemFree", 3010, 0, HOOK(cuMemFree));
    hooked("cuMemGetInfo", 3010, 0, HOOK(cuMemGetInfo));
    hooked("cuGetProcAddress", 11030, 0, HOOK(cuGetProcAddress));
    hooked("cuCtxSetCurrent", 4000, 0, HOOK(cuCtxSetCurrent));
    hooked("cuCtxPushCurrent", 4000, 0, HOOK(cuCtxPushCurrent_v2));

    /* The v1 query, and a symbol we do not hook, pass through. */
    getproc_v1_t v1 = (getproc_v1_t)HOOK(cuGetProcAddress);
    void *fn;
    CU_OK(v1("cuMemAlloc", &fn, 13000, 0));
    CHECK(fn == HOOK(cuMemAlloc_v2), "v1 query hooked");
    CU_OK(getproc("cuCtxGetCurrent", &fn, 13000, 0, NULL));
    CHECK(strstr(origin(fn), "libcuda"), "unhooked symbol is the driver's");

    /* Use the table the way the runtime does. */
    CUresult (*init)(unsigned);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*set)(CUcontext);
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*afree)(CUdeviceptr, CUstream);
    CU_OK(getproc("cuInit", (void **)&init, 13000, 0, NULL));
    CU_OK(getproc("cuDevicePrimaryCtxRetain", (void **)&retain, 13000, 0, NULL));
    CU_OK(getproc("cuCtxSetCurrent", (void **)&set, 13000, 0, NULL));
    CU_OK(getproc("cuMemAllocAsync", (void **)&alloc, 13000,
                  CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, NULL));
    CU_OK(getproc("cuMemFreeAsync", (void **)&afree, 13000,
                  CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, NULL));
    CUcontext ctx;
    CU_OK(init(0));
    CU_OK(retain(&ctx, 0));
    CU_OK(set(ctx));
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream) = (void *)alloc;
    CUdeviceptr p;
    CHECK(alloc_async(&p, 2 * GiB, CU_STREAM_PER_THREAD) == CUDA_ERROR_OUT_OF_MEMORY,
          "limit through cuGetProcAddress");
    CU_OK(alloc_async(&p, 512 * MiB, CU_STREAM_PER_THREAD));
    CHECK(region_used(0) == 512 * MiB, "charged through cuGetProcAddress");
    CU_OK(afree(p, CU_STREAM_PER_THREAD));
    CHECK(region_used(0) == 512 * MiB, "freed into the pool's cache: held");
    CU_OK(cuCtxSynchronize()); /* release threshold 0: the cache goes back */
    CHECK(region_used(0) == 0, "returned");
    printf("hook_getprocaddress: ok\n");
    return 0;
}
