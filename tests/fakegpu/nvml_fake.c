/* The simulated libnvidia-ml.so.1. Like the real NVML it ignores
 * CUDA_VISIBLE_DEVICES and reports every device of the machine, with the
 * memory every process uses, from the shared state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakegpu.h"
#include "nvml_decl.h"

#define EXPORT __attribute__((visibility("default")))

static int device_index(nvmlDevice_t d)
{
    int i = (int)((uintptr_t)d - 1);
    return i >= 0 && i < (int)fg_state()->device_count ? i : -1;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { fg_state(); return NVML_SUCCESS; }
EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int f) { (void)f; return nvmlInit_v2(); }
EXPORT nvmlReturn_t nvmlShutdown(void) { return NVML_SUCCESS; }

EXPORT const char *nvmlErrorString(nvmlReturn_t r)
{
    return r == NVML_SUCCESS ? "Success" : "Fake NVML error";
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    *count = fg_state()->device_count;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count)
{
    return nvmlDeviceGetCount_v2(count);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d)
{
    if (i >= fg_state()->device_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *d = (nvmlDevice_t)(uintptr_t)(i + 1);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, nvmlDevice_t *d)
{
    return nvmlDeviceGetHandleByIndex_v2(i, d);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *d)
{
    struct fg_state *s = fg_state();
    for (uint32_t i = 0; i < s->device_count; i++)
        if (strcmp(s->dev[i].uuid, uuid) == 0)
            return nvmlDeviceGetHandleByIndex_v2(i, d);
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index)
{
    int i = device_index(d);
    if (i < 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned int)i;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int n)
{
    int i = device_index(d);
    if (i < 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(uuid, n, "%s", fg_state()->dev[i].uuid);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int n)
{
    int i = device_index(d);
    if (i < 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(name, n, "%s", fg_state()->dev[i].name);
    return NVML_SUCCESS;
}

static nvmlReturn_t memory(nvmlDevice_t d, uint64_t *total, uint64_t *used)
{
    int i = device_index(d);
    if (i < 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    fg_reap();
    *total = fg_state()->dev[i].total;
    *used = __atomic_load_n(&fg_state()->dev[i].used, __ATOMIC_RELAXED);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m)
{
    if (m == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    uint64_t total, used;
    nvmlReturn_t r = memory(d, &total, &used);
    if (r == NVML_SUCCESS) {
        m->total = total;
        m->used = used;
        m->free = used > total ? 0 : total - used;
    }
    return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m)
{
    if (m == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (m->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    uint64_t total, used;
    nvmlReturn_t r = memory(d, &total, &used);
    if (r == NVML_SUCCESS) {
        m->total = total;
        m->reserved = 0;
        m->used = used;
        m->free = used > total ? 0 : total - used;
    }
    return r;
}

/* Fill up to *count entries of `size` bytes (v1 or v2/v3 layout). */
static nvmlReturn_t processes(nvmlDevice_t d, unsigned int *count, void *out,
                              size_t size)
{
    int dev = device_index(d);
    if (dev < 0 || count == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    /* Counted, refused ones too: how often vgpu reads the list (a test of
     * who measures a context). Relaxed: a statistic. */
    __atomic_add_fetch(&fg_state()->nvml_process_lists, 1, __ATOMIC_RELAXED);
    if (fg_should_fail("nvmlDeviceGetComputeRunningProcesses"))
        return NVML_ERROR_UNKNOWN;
    fg_reap();
    /* FAKEGPU_NVML_PID_OFFSET: report pids as a host would see the
     * processes of a container with its own pid namespace. */
    const char *offset_text = getenv("FAKEGPU_NVML_PID_OFFSET");
    unsigned int pid_offset = offset_text ? (unsigned int)atoi(offset_text) : 0;
    struct fg_state *s = fg_state();
    unsigned int n = 0, room = out ? *count : 0;
    for (int i = 0; i < FG_MAX_PROCS; i++) {
        struct fg_proc *p = &s->procs[i];
        /* Acquire: what the process did before its allocation (fg_reserve) */
        uint64_t used = __atomic_load_n(&p->used[dev], __ATOMIC_ACQUIRE);
        if (!__atomic_load_n(&p->busy, __ATOMIC_ACQUIRE) || used == 0)
            continue;
        if (n < room) {
            nvmlProcessInfo_t info = {(unsigned int)p->pid + pid_offset, used,
                                      0xffffffffu, 0xffffffffu};
            memcpy((char *)out + n * size, &info, size);
        }
        n++;
    }
    nvmlReturn_t r = n > room ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    *count = n;
    return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(
    nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos)
{
    return processes(d, count, infos, sizeof *infos);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(
    nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos)
{
    return processes(d, count, infos, sizeof *infos);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(
    nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_v1_t *infos)
{
    return processes(d, count, infos, sizeof *infos);
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *v, unsigned int n)
{
    snprintf(v, n, "580.00.00-fake");
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v)
{
    *v = 13000;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v)
{
    return nvmlSystemGetCudaDriverVersion(v);
}
