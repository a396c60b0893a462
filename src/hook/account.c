/* Glue between the hooks and the region: lazy attach (no lock or sleep on
 * the program's first CUDA call beyond the region's own attach), devices
 * and limits. The charge itself is charge.c's. */
#include "hook/account.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include "atomic.h"
#include "hook/charge.h"
#include "hook/ledger.h"
#include "hook/real.h"
#include "log.h"
#include "vgpu/config.h"

static struct vgpu_region *region;
static int attach_started; /* set once attach() has begun in this process */
static pthread_once_t attached = PTHREAD_ONCE_INIT;

bool account_uuid_text(int dev, char text[48])
{
    CUuuid u;
    if (REAL(cuDeviceGetUuid_v2) == NULL ||
        REAL(cuDeviceGetUuid_v2)(&u, dev) != CUDA_SUCCESS)
        return false;
    const unsigned char *b = (const unsigned char *)u.bytes;
    snprintf(text, 48,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5],
             b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    return true;
}

/* The container's number of the GPU with this UUID: NVML's index (NVML
 * ignores CUDA_VISIBLE_DEVICES and numbers the container's GPUs as CUDA
 * does without it). -1 when NVML cannot say. */
static int nvml_index(const char *uuid)
{
    nvmlDevice_t h;
    unsigned int index;
    if (REAL(nvmlInit_v2) == NULL || REAL(nvmlDeviceGetHandleByUUID) == NULL ||
        REAL(nvmlDeviceGetIndex) == NULL || REAL(nvmlInit_v2)() != NVML_SUCCESS ||
        REAL(nvmlDeviceGetHandleByUUID)(uuid, &h) != NVML_SUCCESS ||
        REAL(nvmlDeviceGetIndex)(h, &index) != NVML_SUCCESS)
        return -1;
    return (int)index;
}

/* Bind each CUDA ordinal to the region's device of its GPU (by UUID), so
 * that processes numbering the GPUs differently share one counter and one
 * limit per GPU. Without CUDA_VISIBLE_DEVICES the ordinal is the
 * container's number; with it, the region's record of the UUID, else NVML
 * (only then, keeping NVML off the first CUDA call of most processes). */
static void record_devices(struct vgpu_region *r)
{
    int count = 0;
    if (REAL(cuDeviceGetCount) == NULL || REAL(cuDeviceGetCount)(&count) != CUDA_SUCCESS)
        return;
    bool renumbered = vgpu_env_is_set(VGPU_ENV_VISIBLE_DEVICES);
    char text[48];
    for (int d = 0; d < count && d < VGPU_MAX_DEVICES; d++) {
        if (!account_uuid_text(d, text))
            continue;
        int index = d;
        if (renumbered) {
            index = vgpu_region_uuid_index(r, text);
            if (index < 0)
                index = nvml_index(text);
        }
        vgpu_region_bind_device(r, d, text, index);
    }
}

/* A process that only asks (nvidia-smi) reads the file through this view. */
static pthread_mutex_t view_lock = PTHREAD_MUTEX_INITIALIZER;

static void after_fork_child(void)
{
    /* Single-threaded here, but other parent threads may have held these
     * locks at the fork: they are made anew, never taken. */
    ledger_reset_after_fork(); /* the parent's allocations are not the child's */
    releases_reset_after_fork();
    pthread_mutex_init(&view_lock, NULL);
}

static bool control_disabled(void)
{
    const char *off = vgpu_env(VGPU_ENV_DISABLE_CONTROL);
    return off && strcmp(off, "true") == 0;
}

static void attach(void)
{
    atomic_store_n(&attach_started, 1, RELEASE); /* region is ours from now on */
    if (control_disabled()) {
        log_info("CUDA_DISABLE_CONTROL=true: no limit is enforced");
        return;
    }
    struct vgpu_attach_options opts;
    vgpu_attach_options_from_env(&opts);
    int count = 0;
    if (REAL(cuDeviceGetCount) && REAL(cuDeviceGetCount)(&count) == CUDA_SUCCESS)
        opts.device_count = count;
    region = vgpu_region_attach(&opts);
    pthread_atfork(NULL, NULL, after_fork_child);
    if (region != NULL)
        record_devices(region);
}

struct vgpu_region *account_region(void)
{
    pthread_once(&attached, attach);
    return region;
}

struct vgpu_region *account_region_view(void)
{
    /* Acquire: pairs with the release in attach(). */
    if (atomic_load_n(&attach_started, ACQUIRE))
        return account_region();
    if (control_disabled())
        return NULL;
    /* A process that only asks (nvidia-smi): read the file if it exists,
     * without taking a slot; try again on later calls if it does not yet. */
    static struct vgpu_region *view;
    pthread_mutex_lock(&view_lock);
    const char *path = vgpu_env(VGPU_ENV_SHARED_CACHE);
    if (view == NULL && access(path, F_OK) == 0)
        view = vgpu_region_open_existing(path);
    pthread_mutex_unlock(&view_lock);
    return view;
}

static uint64_t env_limits[VGPU_MAX_DEVICES];
static pthread_once_t env_limits_parsed = PTHREAD_ONCE_INIT;

static void parse_env_limits(void)
{
    vgpu_config_limits(env_limits);
}

uint64_t account_limit(struct vgpu_region *r, int dev)
{
    if (r != NULL || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return vgpu_region_limit(r, dev);
    /* No region in a process that tried to attach (or with control off):
     * nothing is enforced, so no limit is shown. */
    if (atomic_load_n(&attach_started, RELAXED) || control_disabled()) /* a flag */
        return 0;
    /* A process that only asks, before any region exists: the limit this
     * container was given. */
    pthread_once(&env_limits_parsed, parse_env_limits);
    return env_limits[dev];
}

int account_current_device(void)
{
    if (charge_nested()) /* the driver's own calls: charged by the outer one */
        return -1;
    CUdevice dev;
    if (REAL(cuCtxGetDevice) == NULL || REAL(cuCtxGetDevice)(&dev) != CUDA_SUCCESS)
        return -1;
    return dev;
}
