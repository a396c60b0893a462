/* Entry points obtained the way the CUDA runtime obtains them: dlopen of
 * libcuda.so.1, cuGetProcAddress(_v2) with a CUDA version and flags. */
#include <dlfcn.h>

#include "fakegpu_util.h"

typedef CUresult (*getproc_v2_t)(const char *, void **, int, cuuint64_t,
                                 CUdriverProcAddressQueryResult *);
typedef CUresult (*getproc_t)(const char *, void **, int, cuuint64_t);

static void *lib;
static getproc_v2_t getproc_v2;

static void *resolve(const char *name, int version, cuuint64_t flags,
                     CUdriverProcAddressQueryResult *status)
{
    void *fn = (void *)1;
    CU_OK(getproc_v2(name, &fn, version, flags, status));
    return fn;
}

static void expect(const char *name, int version, cuuint64_t flags,
                   const char *symbol)
{
    CUdriverProcAddressQueryResult st;
    void *got = resolve(name, version, flags, &st);
    void *want = dlsym(lib, symbol);
    CHECK(want != NULL, "libcuda exports %s", symbol);
    CHECK(got == want && st == CU_GET_PROC_ADDRESS_SUCCESS,
          "%s at %d flags %llu should be %s", name, version,
          (unsigned long long)flags, symbol);
}

int main(void)
{
    fakegpu_fresh(2, "2g");
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    CHECK(lib != NULL, "dlopen libcuda.so.1: %s", dlerror());
    getproc_v2 = (getproc_v2_t)dlsym(lib, "cuGetProcAddress_v2");
    CHECK(getproc_v2 != NULL, "cuGetProcAddress_v2 exported");

    expect("cuMemAlloc", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuMemAlloc_v2");
    expect("cuMemAlloc", 3020, CU_GET_PROC_ADDRESS_DEFAULT, "cuMemAlloc_v2");
    expect("cuMemAlloc", 3010, CU_GET_PROC_ADDRESS_DEFAULT, "cuMemAlloc");
    expect("cuMemFree", 12000, CU_GET_PROC_ADDRESS_LEGACY_STREAM, "cuMemFree_v2");
    expect("cuMemGetInfo", 12000, 0, "cuMemGetInfo_v2");
    expect("cuCtxCreate", 13000, 0, "cuCtxCreate_v4");
    expect("cuCtxCreate", 11040, 0, "cuCtxCreate_v3");
    expect("cuCtxCreate", 11000, 0, "cuCtxCreate_v2");
    expect("cuMemAllocAsync", 13000, CU_GET_PROC_ADDRESS_LEGACY_STREAM, "cuMemAllocAsync");
    expect("cuMemAllocAsync", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
           "cuMemAllocAsync_ptsz");
    expect("cuMemFreeAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
           "cuMemFreeAsync_ptsz");
    /* Per-thread asked, none exists: the legacy variant. */
    expect("cuMemCreate", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuMemCreate");
    expect("cuGetProcAddress", 13000, 0, "cuGetProcAddress_v2");
    expect("cuGetProcAddress", 11030, 0, "cuGetProcAddress");

    CUdriverProcAddressQueryResult st;
    CHECK(resolve("cuNoSuchThing", 13000, 0, &st) == NULL &&
          st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, "unknown symbol");
    CHECK(resolve("cuMemCreate", 10000, 0, &st) == NULL &&
          st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT, "version too low");
    getproc_t getproc_v1 = (getproc_t)dlsym(lib, "cuGetProcAddress");
    void *fn;
    CHECK(getproc_v1("cuNoSuchThing", &fn, 12000, 0) == CUDA_ERROR_NOT_FOUND,
          "v1 reports unknown symbols as an error");

    /* Use what was resolved, as the runtime would. */
    CUresult (*init)(unsigned) = resolve("cuInit", 13000, 0, NULL);
    CUresult (*version)(int *) = resolve("cuDriverGetVersion", 13000, 0, NULL);
    CUresult (*retain)(CUcontext *, CUdevice) =
        resolve("cuDevicePrimaryCtxRetain", 13000, 0, NULL);
    CUresult (*set_current)(CUcontext) = resolve("cuCtxSetCurrent", 13000, 0, NULL);
    CUresult (*alloc)(CUdeviceptr *, size_t) = resolve("cuMemAlloc", 13000, 0, NULL);
    CUresult (*release)(CUdeviceptr) = resolve("cuMemFree", 13000, 0, NULL);
    int v = 0;
    CU_OK(version(&v));
    CHECK(v == 13000, "driver version %d", v);
    CUcontext ctx;
    CU_OK(init(0));
    CU_OK(retain(&ctx, 0));
    CU_OK(set_current(ctx));
    CUdeviceptr p;
    CU_OK(alloc(&p, 1ull << 30));
    CHECK(fakegpu_process_used(0) == 1ull << 30, "allocated through the table");
    CU_OK(release(p));
    CHECK(fakegpu_process_used(0) == 0, "freed through the table");
    printf("fakegpu_getprocaddress: ok\n");
    return 0;
}
