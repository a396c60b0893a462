/* Modules and libraries: their static device data (__device__ globals and
 * constant banks, read from the image by cubin.c) is reserved on the
 * current context's device before the driver loads the image, refused with
 * CUDA_ERROR_OUT_OF_MEMORY when it does not fit, and returned at unload.
 * A library (cuLibrary*, through which the runtime registers its fatbins)
 * loaded with no current context is not charged here. Code, images that
 * cannot be read (compressed, PTX) and what the driver loads lazily are
 * left to the reconciliation with NVML. */
#include "hook/account.h"
#include "hook/charge.h"
#include "hook/cubin.h"
#include "hook/real.h"

#define EXPORT __attribute__((visibility("default")))

/* Load `out` of `space` with `call`, `bytes` of static data charged. */
#define CHARGED_LOAD(space, out, bytes, call)                                  \
    CHARGED_CALL(VGPU_CHARGE_MODULE, bytes, call, space, (uintptr_t)*(out))

/* Nothing to read inside a nested driver call: it is not charged. */
static uint64_t image_bytes(const void *image)
{
    return charge_nested() ? 0 : cubin_static_bytes(image, 0);
}

static uint64_t file_bytes(const char *path)
{
    return charge_nested() ? 0 : cubin_file_static_bytes(path);
}

EXPORT CUresult cuModuleLoad(CUmodule *module, const char *fname)
{
    NEED(cuModuleLoad);
    CHARGED_LOAD(SPACE_MODULE, module, file_bytes(fname),
                 REAL(cuModuleLoad)(module, fname));
}

EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
    NEED(cuModuleLoadData);
    CHARGED_LOAD(SPACE_MODULE, module, image_bytes(image),
                 REAL(cuModuleLoadData)(module, image));
}

EXPORT CUresult cuModuleLoadDataEx(CUmodule *module, const void *image,
                                   unsigned int n, CUjit_option *options,
                                   void **values)
{
    NEED(cuModuleLoadDataEx);
    CHARGED_LOAD(SPACE_MODULE, module, image_bytes(image),
                 REAL(cuModuleLoadDataEx)(module, image, n, options, values));
}

EXPORT CUresult cuModuleLoadFatBinary(CUmodule *module, const void *fatbin)
{
    NEED(cuModuleLoadFatBinary);
    CHARGED_LOAD(SPACE_MODULE, module, image_bytes(fatbin),
                 REAL(cuModuleLoadFatBinary)(module, fatbin));
}

static CUresult real_unload(uint64_t module, void *unused)
{
    (void)unused;
    return REAL(cuModuleUnload)((CUmodule)(uintptr_t)module);
}

EXPORT CUresult cuModuleUnload(CUmodule module)
{
    NEED(cuModuleUnload);
    return charge_free(SPACE_MODULE, (uint64_t)(uintptr_t)module, real_unload,
                       NULL);
}

EXPORT CUresult cuLibraryLoadData(CUlibrary *library, const void *code,
                                  CUjit_option *jit, void **jit_values,
                                  unsigned int njit, CUlibraryOption *options,
                                  void **values, unsigned int noptions)
{
    NEED(cuLibraryLoadData);
    CHARGED_LOAD(SPACE_LIBRARY, library, image_bytes(code),
                 REAL(cuLibraryLoadData)(library, code, jit, jit_values, njit,
                                         options, values, noptions));
}

EXPORT CUresult cuLibraryLoadFromFile(CUlibrary *library, const char *path,
                                      CUjit_option *jit, void **jit_values,
                                      unsigned int njit,
                                      CUlibraryOption *options, void **values,
                                      unsigned int noptions)
{
    NEED(cuLibraryLoadFromFile);
    CHARGED_LOAD(SPACE_LIBRARY, library, file_bytes(path),
                 REAL(cuLibraryLoadFromFile)(library, path, jit, jit_values,
                                             njit, options, values, noptions));
}

static CUresult real_library_unload(uint64_t library, void *unused)
{
    (void)unused;
    return REAL(cuLibraryUnload)((CUlibrary)(uintptr_t)library);
}

EXPORT CUresult cuLibraryUnload(CUlibrary library)
{
    NEED(cuLibraryUnload);
    return charge_free(SPACE_LIBRARY, (uint64_t)(uintptr_t)library,
                       real_library_unload, NULL);
}
