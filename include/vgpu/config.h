/* vgpu configuration: every environment variable vgpu reads, in one table
 * (src/config.c), read and parsed once.
 *
 * When: LIBCUDA_LOG_LEVEL when the library loads (logging needs it before
 * anything else); every other variable at the first use of any of them,
 * which in libvgpu is the process's first CUDA or NVML call, as the driver
 * reads its own (a program may set CUDA_VISIBLE_DEVICES or a limit before
 * it starts CUDA). After that the environment is never read again: later
 * setenv calls are not seen, and no allocation path calls getenv. Values
 * are copied, so a program that changes its environment cannot change them
 * under vgpu. A value that does not parse is reported in one line, once,
 * and its default is used.
 */
#ifndef VGPU_CONFIG_H
#define VGPU_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define VGPU_MAX_DEVICES 16

enum vgpu_env_id {
    VGPU_ENV_MEMORY_LIMIT,     /* CUDA_DEVICE_MEMORY_LIMIT */
    VGPU_ENV_SHARED_CACHE,     /* CUDA_DEVICE_MEMORY_SHARED_CACHE */
    VGPU_ENV_LOG_LEVEL,        /* LIBCUDA_LOG_LEVEL */
    VGPU_ENV_REGION_MODE,      /* VGPU_REGION_MODE */
    VGPU_ENV_SM_LIMIT,         /* CUDA_DEVICE_SM_LIMIT */
    VGPU_ENV_OVERSUBSCRIBE,    /* CUDA_OVERSUBSCRIBE */
    VGPU_ENV_DISABLE_CONTROL,  /* CUDA_DISABLE_CONTROL */
    VGPU_ENV_CORE_POLICY,      /* GPU_CORE_UTILIZATION_POLICY */
    VGPU_ENV_TASK_PRIORITY,    /* CUDA_TASK_PRIORITY */
    VGPU_ENV_ACTIVE_OOM_KILLER,/* ACTIVE_OOM_KILLER */
    VGPU_ENV_LEGACY_WORK,      /* VGPU_LEGACY_STARTUP_WORK_MS */
    VGPU_ENV_CONTEXT_BYTES,    /* VGPU_CONTEXT_BYTES */
    VGPU_ENV_VISIBLE_DEVICES,  /* CUDA_VISIBLE_DEVICES */
    VGPU_ENV_RECONCILE_MS,     /* VGPU_RECONCILE_MS */
    VGPU_ENV_SM_MODE,          /* VGPU_SM_MODE */
    VGPU_ENV_SM_RESUME_MS,     /* VGPU_SM_RESUME_MS */
    VGPU_ENV_COUNT
};

/* One line of the table (src/config.c): a new variable is one enum entry
 * above and one line there. */
struct vgpu_env_var {
    const char *name;
    const char *default_value; /* NULL: unset means "not configured" */
    bool implemented;
    const char *meaning;
};

/* The table itself, VGPU_ENV_COUNT entries, for tools and documentation. */
extern const struct vgpu_env_var vgpu_env_vars[VGPU_ENV_COUNT];

/* The variable's value (a copy taken at the first read), or its default
 * when unset or empty. */
const char *vgpu_env(enum vgpu_env_id id);

/* True if the variable was set (non-empty) when the table was read. */
bool vgpu_env_is_set(enum vgpu_env_id id);

/* LIBCUDA_LOG_LEVEL as a number (default 2, info). */
int vgpu_config_log_level(void);

/* Parse a size in HAMi-core's syntax: decimal digits with an optional
 * k/m/g/t suffix (binary multiples, either case), e.g. "4g", "4096m".
 * Returns false, leaving *bytes alone, on anything else or on overflow. */
bool vgpu_parse_size(const char *text, uint64_t *bytes);

/* Per-device limits from CUDA_DEVICE_MEMORY_LIMIT (all devices) and
 * CUDA_DEVICE_MEMORY_LIMIT_<i> (device i, overrides). 0 means unlimited.
 * A value that does not parse was reported once and leaves that device
 * unlimited (or at the global limit, for a bad override). */
void vgpu_config_limits(uint64_t limits[VGPU_MAX_DEVICES]);

/* Print the table as this process read it: name, value, where it came
 * from, meaning (vgpuctl env). */
void vgpu_config_print(FILE *out);

/* Read the environment again, as at start-up. For tests and tools that
 * change their own environment, with no other thread using vgpu. */
void vgpu_config_reload(void);

/* Compute limits in percent from CUDA_DEVICE_SM_LIMIT (all devices) and
 * CUDA_DEVICE_SM_LIMIT_<i> (device i): 0 means none, and so do 100 and
 * more. A value that does not parse is reported and leaves that device
 * without a compute limit, as a memory limit that does not parse. */
void vgpu_config_sm_limits(uint32_t pct[VGPU_MAX_DEVICES]);

/* GPU_CORE_UTILIZATION_POLICY (HAMi-core's values, any case): default
 * limits while the region's utilization_switch is 1, force always,
 * disable never. Anything else: reported, default. */
enum vgpu_core_policy { VGPU_CORE_DEFAULT, VGPU_CORE_FORCE, VGPU_CORE_DISABLE };
enum vgpu_core_policy vgpu_config_core_policy(void);

/* VGPU_SM_MODE (any case): time, the GPU-time budget (default), or spatial,
 * each limited device's runtime context confined to a green context of
 * that share of its SMs (src/hook/spatial.c). Anything else: reported,
 * time. */
enum vgpu_sm_mode { VGPU_SM_TIME, VGPU_SM_SPATIAL };
enum vgpu_sm_mode vgpu_config_sm_mode(void);

/* VGPU_SM_RESUME_MS in nanoseconds: after a hold, a container's launches
 * resume once its budget holds this much GPU time (vgpu/sm_budget.h says
 * why), or its ceiling (the cap's 250 ms burst) if that is less. Whole
 * milliseconds, 0 to 250; unset: VGPU_SM_RESUME_NS (8 ms). Anything else:
 * reported, the default. */
uint64_t vgpu_config_sm_resume_ns(void);

#endif
