/* The boundary to the driver: one table of the real functions, resolved
 * once. Nothing else in vgpu calls dlsym. */
#ifndef VGPU_HOOK_REAL_H
#define VGPU_HOOK_REAL_H

#include <cuda.h>

#include "hook/graph_decl.h"
#include "hook/launch_decl.h"
#include "hook/symbols.h"
#include "nvml_decl.h"

enum real_id {
#define ID(name) REAL_##name,
    VGPU_CUDA_HOOKS(ID) VGPU_CUDA_USED(ID) VGPU_NVML_HOOKS(ID) VGPU_NVML_USED(ID)
#undef ID
    REAL_COUNT
};

/* NVML's prototypes for what we use (cuda.h has the driver's). */
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t, char *, unsigned int);
nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t, unsigned int *);
nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t, unsigned int *,
                                                     nvmlProcessInfo_t *);

/* The real function (NULL if the installed driver lacks it). */
void *real_fn(enum real_id id);
#define REAL(name) ((__typeof__(&name))real_fn(REAL_##name))

/* In a driver hook: a driver without name answers as one not initialized. */
#define NEED(name)                                                             \
    do {                                                                       \
        if (REAL(name) == NULL)                                                \
            return CUDA_ERROR_NOT_INITIALIZED;                                 \
    } while (0)

/* glibc's dlsym, bypassing our override: the function, and a call of it
 * (for our own lookups in libraries we opened; never for RTLD_NEXT). */
void *real_dlsym_fn(void);
void *real_dlsym(void *handle, const char *name);

/* Our hook for an exported name, if we intercept it and the driver has it. */
void *hook_for_symbol(const char *name);

/* Replace a real function pointer by our hook of it, if we have one. */
void *hook_for_real(void *fn);

#endif
