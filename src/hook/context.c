/* Primary contexts take device memory too (about 400 MiB on an H100): the
 * first retain on a device charges it, the last release (or a reset)
 * returns it. Its size is measured after the driver made the context, as
 * this process's usage in NVML less what it has charged already, by the
 * first process of the region; the others take that size from the region
 * (NVML's start-up is kept off their first CUDA call); where
 * NVML cannot name this process (another pid namespace), VGPU_CONTEXT_BYTES
 * gives the size, and without it the context is not counted (one warning).
 * A context that does not fit under the limit is released again and the
 * retain fails with CUDA_ERROR_OUT_OF_MEMORY. Contexts of cuCtxCreate are
 * not counted. */
#include <pthread.h>
#include <unistd.h>

#include "atomic.h"
#include "hook/account.h"
#include "hook/charge.h"
#include "hook/real.h"
#include "log.h"
#include "vgpu/config.h"

#define EXPORT __attribute__((visibility("default")))

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct primary {
    unsigned retains;
    uint64_t charged;
} primaries[VGPU_MAX_DEVICES];

/* This process's device memory on dev as NVML reports it (caller holds
 * `lock`, which also guards nvml_up). */
static bool nvml_process_usage(int dev, uint64_t *used)
{
    static bool nvml_up;
    char uuid[48];
    if (REAL(nvmlInit_v2) == NULL || REAL(nvmlDeviceGetHandleByUUID) == NULL ||
        REAL(nvmlDeviceGetComputeRunningProcesses_v3) == NULL ||
        !account_uuid_text(dev, uuid))
        return false;
    if (!nvml_up)
        nvml_up = REAL(nvmlInit_v2)() == NVML_SUCCESS;
    nvmlDevice_t h;
    nvmlProcessInfo_t infos[256];
    unsigned int n = 256;
    if (!nvml_up || REAL(nvmlDeviceGetHandleByUUID)(uuid, &h) != NVML_SUCCESS ||
        REAL(nvmlDeviceGetComputeRunningProcesses_v3)(h, &n, infos) != NVML_SUCCESS)
        return false;
    unsigned int host = (unsigned int)vgpu_host_pid(), self = (unsigned int)getpid();
    for (unsigned int i = 0; i < n; i++)
        if (infos[i].pid == host || infos[i].pid == self) {
            *used = infos[i].usedGpuMemory;
            return true;
        }
    return false;
}

static uint64_t context_bytes(int dev)
{
    /* Another process of the region measured it: no NVML on this path. */
    uint64_t known = vgpu_region_context_bytes(account_region(), dev);
    if (known > 0)
        return known;
    uint64_t used;
    if (nvml_process_usage(dev, &used)) {
        uint64_t mine = vgpu_region_process_used(account_region(), dev);
        uint64_t bytes = used > mine ? used - mine : 0;
        vgpu_region_set_context_bytes(account_region(), dev, bytes);
        return bytes;
    }
    uint64_t configured = 0;
    const char *text = vgpu_env(VGPU_ENV_CONTEXT_BYTES);
    if (text == NULL || !vgpu_parse_size(text, &configured)) {
        static int warned;
        if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: only picks who logs */
            log_warn("the primary context's memory cannot be measured here and "
                     "VGPU_CONTEXT_BYTES is not set: it is not counted");
    }
    return configured;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    if (REAL(cuDevicePrimaryCtxRetain) == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult rc = REAL(cuDevicePrimaryCtxRetain)(pctx, dev);
    if (rc != CUDA_SUCCESS || dev < 0 || dev >= VGPU_MAX_DEVICES ||
        account_region() == NULL)
        return rc;
    pthread_mutex_lock(&lock);
    struct primary *p = &primaries[dev];
    p->retains++;
    if (p->charged == 0) {
        uint64_t bytes = context_bytes(dev);
        if (bytes > 0 && !vgpu_region_try_charge(account_region(), dev, bytes,
                                                 VGPU_CHARGE_CONTEXT)) {
            p->retains--;
            REAL(cuDevicePrimaryCtxRelease_v2)(dev);
            rc = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            p->charged = bytes;
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

static void released(CUdevice dev, bool reset)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES)
        return;
    pthread_mutex_lock(&lock);
    struct primary *p = &primaries[dev];
    if (!reset && p->retains > 0)
        p->retains--;
    if ((reset || p->retains == 0) && p->charged > 0) {
        vgpu_region_uncharge(account_region(), dev, p->charged, VGPU_CHARGE_CONTEXT);
        p->charged = 0;
    }
    pthread_mutex_unlock(&lock);
    if (reset) /* the driver freed every allocation of the context */
        charge_drop_device(dev);
}

/* Call the driver's release or reset, then account for it if it worked. */
static CUresult after(CUresult (*real)(CUdevice), CUdevice dev, bool reset)
{
    if (real == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult rc = real(dev);
    if (rc == CUDA_SUCCESS)
        released(dev, reset);
    return rc;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    return after(REAL(cuDevicePrimaryCtxRelease_v2), dev, false);
}

EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    return after(REAL(cuDevicePrimaryCtxRelease), dev, false);
}

EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
    return after(REAL(cuDevicePrimaryCtxReset_v2), dev, true);
}

EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice dev)
{
    return after(REAL(cuDevicePrimaryCtxReset), dev, true);
}
