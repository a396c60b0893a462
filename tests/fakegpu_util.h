/* Helpers for tests on the simulated GPU. */
#ifndef FAKEGPU_UTIL_H
#define FAKEGPU_UTIL_H

#include <cuda.h>
#include <stdbool.h>
#include <stdint.h>

#include "testutil.h"

#define CU_OK(call)                                                            \
    do {                                                                       \
        CUresult rc_ = (call);                                                 \
        CHECK(rc_ == CUDA_SUCCESS, "%s returned %d", #call, (int)rc_);         \
    } while (0)

/* The ledger of the simulated driver (exported by the fake libcuda). */
uint64_t fakegpu_device_used(int physical);
CUresult fakegpu_primary_current_unhooked(CUdevice dev);
uint64_t fakegpu_device_peak(int physical);
uint64_t fakegpu_process_used(int physical);
/* How many times any process asked NVML for a device's process list. */
uint64_t fakegpu_nvml_process_lists(void);
/* The execution model (fakegpu/exec.c): ns of work this process queued on
 * a device (what it takes on all the SMs), and all processes' busy time on
 * it. */
uint64_t fakegpu_launched_ns(int physical);
uint64_t fakegpu_work_end_ns(void);
uint64_t fakegpu_device_busy_ns(int physical);
/* Event calls this process made: records only, or all of them. */
uint64_t fakegpu_event_calls(bool records_only);
/* cuStreamIsCapturing calls this process made. */
uint64_t fakegpu_capture_queries(void);
/* A capture begun by a way no hook sees (a runtime's private entry). */
CUresult fakegpu_begin_capture_unseen(CUstream s);

/* Start from a fresh simulated machine: its state file removed, its size
 * and device count set, before the first driver call of this process. */
static inline void fakegpu_fresh(int devices, const char *memory)
{
    const char *state = getenv("FAKEGPU_STATE");
    CHECK(state != NULL, "FAKEGPU_STATE must be set");
    unlink(state);
    char n[16];
    snprintf(n, sizeof n, "%d", devices);
    setenv("FAKEGPU_DEVICES", n, 1);
    setenv("FAKEGPU_MEMORY", memory, 1);
}

static inline CUcontext fakegpu_context(int ordinal)
{
    CUdevice dev;
    CUcontext ctx;
    CU_OK(cuInit(0));
    CU_OK(cuDeviceGet(&dev, ordinal));
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CU_OK(cuCtxSetCurrent(ctx));
    return ctx;
}

#endif
