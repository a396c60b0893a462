/* Every variable in one table, read once (see vgpu/config.h for when), as
 * mimalloc's options.c: the table says what exists, `parsed` holds what
 * this process read. Parse problems are logged here, once; logging itself
 * knows nothing of the configuration: its level is handed to it. */
#include "vgpu/config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "vgpu/sm_budget.h"

const struct vgpu_env_var vgpu_env_vars[VGPU_ENV_COUNT] = {
    [VGPU_ENV_MEMORY_LIMIT] = {"CUDA_DEVICE_MEMORY_LIMIT", NULL, true,
        "device-memory limit for every device, e.g. 4g or 4096m; "
        "CUDA_DEVICE_MEMORY_LIMIT_<i> sets device i"},
    [VGPU_ENV_SHARED_CACHE] = {"CUDA_DEVICE_MEMORY_SHARED_CACHE",
        "/tmp/cudevshr.cache", true,
        "path of the container's shared region file"},
    [VGPU_ENV_LOG_LEVEL] = {"LIBCUDA_LOG_LEVEL", "2", true,
        "0 errors, 1 warnings, 2 info, 3 debug"},
    [VGPU_ENV_REGION_MODE] = {"VGPU_REGION_MODE", "default", true,
        "synchronization mode used when the region is created"},
    [VGPU_ENV_SM_LIMIT] = {"CUDA_DEVICE_SM_LIMIT", NULL, true,
        "compute limit: percent of each GPU's time for the container (0 or "
        "100: none); CUDA_DEVICE_SM_LIMIT_<i> sets device i"},
    [VGPU_ENV_OVERSUBSCRIBE] = {"CUDA_OVERSUBSCRIBE", NULL, false,
        "allow allocations past the limit into host memory (not yet)"},
    [VGPU_ENV_DISABLE_CONTROL] = {"CUDA_DISABLE_CONTROL", NULL, true,
        "\"true\": load but enforce nothing"},
    [VGPU_ENV_CORE_POLICY] = {"GPU_CORE_UTILIZATION_POLICY", "default", true,
        "default: apply the compute limit while the region's "
        "utilization_switch is 1; force: always; disable: never"},
    [VGPU_ENV_TASK_PRIORITY] = {"CUDA_TASK_PRIORITY", "1", true,
        "priority written to the region at creation for HAMi's monitor (0 high, 1 low)"},
    [VGPU_ENV_ACTIVE_OOM_KILLER] = {"ACTIVE_OOM_KILLER", NULL, false,
        "kill processes over the limit (not yet)"},
    [VGPU_ENV_LEGACY_WORK] = {"VGPU_LEGACY_STARTUP_WORK_MS", "0", true,
        "benchmarks: milliseconds of start-up work the seed's modes do under "
        "their lock file (HAMi-core's host-PID detection)"},
    [VGPU_ENV_CONTEXT_BYTES] = {"VGPU_CONTEXT_BYTES", NULL, true,
        "device memory a context is assumed to take until one is measured "
        "through NVML, and where it cannot be (default 1g, e.g. 520m)"},
    [VGPU_ENV_VISIBLE_DEVICES] = {"CUDA_VISIBLE_DEVICES", NULL, true,
        "the devices CUDA numbers (set by the container runtime); read to "
        "match NVML's devices to CUDA's"},
    [VGPU_ENV_RECONCILE_MS] = {"VGPU_RECONCILE_MS", "100", true,
        "least milliseconds between two readings of this process's memory in "
        "NVML (the reconciliation; 0: at every charge near the limit)"},
    [VGPU_ENV_SM_MODE] = {"VGPU_SM_MODE", "time", true,
        "how the compute limit holds: time (a budget of GPU time) or spatial "
        "(the runtime's context on that share of the SMs, a green context)"},
    [VGPU_ENV_SM_RESUME_MS] = {"VGPU_SM_RESUME_MS", "8", true,
        "after a compute hold, launches resume once the budget holds this "
        "many ms of GPU time (0-250): longer means fewer switches between "
        "contexts and longer holds"},
};

/* What this process read. Written by read_all() (under `once`, or by a
 * reload with no other thread about), read-only afterwards. */
static struct parsed {
    char *value[VGPU_ENV_COUNT];              /* copies; NULL: unset */
    char *device_value[VGPU_MAX_DEVICES];     /* CUDA_DEVICE_MEMORY_LIMIT_<i> */
    bool invalid[VGPU_ENV_COUNT];
    bool device_invalid[VGPU_MAX_DEVICES];
    uint64_t limits[VGPU_MAX_DEVICES];
    char *sm_device_value[VGPU_MAX_DEVICES];  /* CUDA_DEVICE_SM_LIMIT_<i> */
    bool sm_device_invalid[VGPU_MAX_DEVICES];
    uint32_t sm_limits[VGPU_MAX_DEVICES];     /* percent; 0: none */
    enum vgpu_core_policy policy;
    enum vgpu_sm_mode sm_mode;
    uint64_t sm_resume_ns;
    int log_level;
} parsed;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static const char *const size_example = "(e.g. 4g, 4096m)";

/* The one place that reads the environment. A copy, or NULL if unset or
 * empty. */
static char *read_var(const char *name)
{
    const char *text = getenv(name);
    return text && text[0] ? strdup(text) : NULL;
}

static void read_log_level(void)
{
    free(parsed.value[VGPU_ENV_LOG_LEVEL]);
    char *text = parsed.value[VGPU_ENV_LOG_LEVEL] =
        read_var(vgpu_env_vars[VGPU_ENV_LOG_LEVEL].name);
    parsed.log_level = VGPU_LOG_INFO;
    parsed.invalid[VGPU_ENV_LOG_LEVEL] = false;
    if (text != NULL) {
        char *end = NULL;
        errno = 0;
        long level = strtol(text, &end, 10);
        if (end != text && *end == '\0' && errno == 0 && level >= 0 && level <= 100)
            parsed.log_level = (int)level;
        else
            parsed.invalid[VGPU_ENV_LOG_LEVEL] = true;
    }
    vgpu_log_set_level(parsed.log_level);
    if (parsed.invalid[VGPU_ENV_LOG_LEVEL])
        log_warn("LIBCUDA_LOG_LEVEL=\"%.32s\" is not a level (0-3); using 2",
                 text);
}

/* Logging must obey LIBCUDA_LOG_LEVEL from the first line. */
__attribute__((constructor)) static void read_log_level_at_load(void)
{
    read_log_level();
}

/* A limit's text -> bytes, or fallback with one line if it does not parse. */
static uint64_t limit_of(const char *name, const char *text, uint64_t fallback,
                         bool *invalid)
{
    uint64_t bytes;
    *invalid = false;
    if (text == NULL)
        return fallback;
    if (vgpu_parse_size(text, &bytes))
        return bytes;
    *invalid = true;
    log_warn("%s=\"%.64s\" is not a size %s; that limit is ignored", name,
             text, size_example);
    return fallback;
}

static void read_limits(void)
{
    const char *base = vgpu_env_vars[VGPU_ENV_MEMORY_LIMIT].name;
    uint64_t all = limit_of(base, parsed.value[VGPU_ENV_MEMORY_LIMIT], 0,
                            &parsed.invalid[VGPU_ENV_MEMORY_LIMIT]);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s_%d", base, i);
        free(parsed.device_value[i]);
        parsed.device_value[i] = read_var(name);
        parsed.limits[i] = limit_of(name, parsed.device_value[i], all,
                                    &parsed.device_invalid[i]);
    }
}

/* Decimal digits only, no sign or space, that fit: true and *value. */
static bool whole_number(const char *text, unsigned long *value)
{
    char *end = NULL;
    errno = 0;
    *value = strtoul(text, &end, 10);
    return errno == 0 && end != text && *end == '\0' && text[0] >= '0' &&
           text[0] <= '9';
}

/* A compute limit's text -> percent (100 and more: none), or fallback with
 * one line if it does not parse. */
static uint32_t percent_of(const char *name, const char *text,
                           uint32_t fallback, bool *invalid)
{
    *invalid = false;
    if (text == NULL)
        return fallback;
    unsigned long pct;
    if (!whole_number(text, &pct)) {
        *invalid = true;
        log_warn("%s=\"%.64s\" is not a percentage (0-100); that compute "
                 "limit is ignored", name, text);
        return fallback;
    }
    return pct >= 100 ? 0 : (uint32_t)pct;
}

static void read_sm_limits(void)
{
    const char *base = vgpu_env_vars[VGPU_ENV_SM_LIMIT].name;
    uint32_t all = percent_of(base, parsed.value[VGPU_ENV_SM_LIMIT], 0,
                              &parsed.invalid[VGPU_ENV_SM_LIMIT]);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s_%d", base, i);
        free(parsed.sm_device_value[i]);
        parsed.sm_device_value[i] = read_var(name);
        parsed.sm_limits[i] = percent_of(name, parsed.sm_device_value[i], all,
                                         &parsed.sm_device_invalid[i]);
    }
}

/* GPU_CORE_UTILIZATION_POLICY, in any case, as HAMi-core's values. */
static void read_policy(void)
{
    const char *text = parsed.value[VGPU_ENV_CORE_POLICY];
    parsed.policy = VGPU_CORE_DEFAULT;
    parsed.invalid[VGPU_ENV_CORE_POLICY] = false;
    if (text == NULL || strcasecmp(text, "default") == 0)
        return;
    if (strcasecmp(text, "force") == 0)
        parsed.policy = VGPU_CORE_FORCE;
    else if (strcasecmp(text, "disable") == 0)
        parsed.policy = VGPU_CORE_DISABLE;
    else {
        parsed.invalid[VGPU_ENV_CORE_POLICY] = true;
        log_warn("GPU_CORE_UTILIZATION_POLICY=\"%.32s\" is not default, force "
                 "or disable; using default", text);
    }
}

/* VGPU_SM_MODE, in any case. */
static void read_sm_mode(void)
{
    const char *text = parsed.value[VGPU_ENV_SM_MODE];
    parsed.sm_mode = VGPU_SM_TIME;
    parsed.invalid[VGPU_ENV_SM_MODE] = false;
    if (text == NULL || strcasecmp(text, "time") == 0)
        return;
    if (strcasecmp(text, "spatial") == 0) {
        parsed.sm_mode = VGPU_SM_SPATIAL;
        return;
    }
    parsed.invalid[VGPU_ENV_SM_MODE] = true;
    log_warn("VGPU_SM_MODE=\"%.32s\" is not time or spatial; using time",
             text);
}

/* VGPU_SM_RESUME_MS: whole milliseconds, at most the budget's burst (a
 * bucket never holds more, vgpu/sm_budget.h). Unset: the table's default,
 * which is VGPU_SM_RESUME_NS. */
_Static_assert(VGPU_SM_RESUME_NS == 8000000ll,
               "VGPU_SM_RESUME_MS's default in the table says 8");
static void read_sm_resume(void)
{
    const struct vgpu_env_var *v = &vgpu_env_vars[VGPU_ENV_SM_RESUME_MS];
    const char *text = parsed.value[VGPU_ENV_SM_RESUME_MS];
    const char *use = text != NULL ? text : v->default_value;
    unsigned long ms;
    parsed.invalid[VGPU_ENV_SM_RESUME_MS] = !whole_number(use, &ms) || ms > 250;
    if (parsed.invalid[VGPU_ENV_SM_RESUME_MS]) {
        log_warn("%s=\"%.32s\" is not whole milliseconds from 0 to 250; "
                 "using %s", v->name, use, v->default_value);
        ms = strtoul(v->default_value, NULL, 10);
    }
    parsed.sm_resume_ns = (uint64_t)ms * 1000000u;
}

static void read_all(void)
{
    for (int id = 0; id < VGPU_ENV_COUNT; id++) {
        if (id == VGPU_ENV_LOG_LEVEL) /* read at load */
            continue;
        free(parsed.value[id]);
        parsed.value[id] = read_var(vgpu_env_vars[id].name);
    }
    read_limits();
    read_sm_limits();
    read_policy();
    read_sm_mode();
    read_sm_resume();
}

static const struct parsed *table(void)
{
    pthread_once(&once, read_all);
    return &parsed;
}

const char *vgpu_env(enum vgpu_env_id id)
{
    const char *value = table()->value[id];
    return value ? value : vgpu_env_vars[id].default_value;
}

bool vgpu_env_is_set(enum vgpu_env_id id)
{
    return table()->value[id] != NULL;
}

int vgpu_config_log_level(void)
{
    return parsed.log_level; /* set at load, before any thread */
}

void vgpu_config_limits(uint64_t limits[VGPU_MAX_DEVICES])
{
    memcpy(limits, table()->limits, sizeof parsed.limits);
}

void vgpu_config_reload(void)
{
    table(); /* so that `once` never runs read_all after us */
    read_log_level();
    read_all();
}

static uint64_t suffix_multiplier(char c)
{
    switch (c) {
    case 'k': case 'K': return 1ull << 10;
    case 'm': case 'M': return 1ull << 20;
    case 'g': case 'G': return 1ull << 30;
    case 't': case 'T': return 1ull << 40;
    default: return 0;
    }
}

bool vgpu_parse_size(const char *text, uint64_t *bytes)
{
    if (text == NULL || text[0] < '0' || text[0] > '9')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long number = strtoull(text, &end, 10);
    if (errno != 0)
        return false;
    uint64_t multiplier = 1;
    if (*end != '\0') {
        multiplier = suffix_multiplier(*end);
        if (multiplier == 0 || end[1] != '\0')
            return false;
    }
    if (number > UINT64_MAX / multiplier)
        return false;
    *bytes = number * multiplier;
    return true;
}

static void print_row(FILE *out, const char *name, const char *value,
                      const char *def, bool invalid, const char *note,
                      const char *meaning)
{
    char shown[96];
    if (value)
        snprintf(shown, sizeof shown, "%.60s%s", value,
                 invalid ? " (invalid: ignored)" : "");
    else if (def)
        snprintf(shown, sizeof shown, "%.60s (default)", def);
    else
        snprintf(shown, sizeof shown, "(unset)");
    fprintf(out, "%-32s %-28s %s%s\n", name, shown, note, meaning);
}

void vgpu_config_print(FILE *out)
{
    const struct parsed *p = table();
    fprintf(out, "%-32s %-28s %s\n", "variable", "value", "meaning");
    for (int id = 0; id < VGPU_ENV_COUNT; id++) {
        const struct vgpu_env_var *v = &vgpu_env_vars[id];
        print_row(out, v->name, p->value[id], v->default_value, p->invalid[id],
                  v->implemented ? "" : "[not yet] ", v->meaning);
        bool sm = id == VGPU_ENV_SM_LIMIT;
        if (id != VGPU_ENV_MEMORY_LIMIT && !sm)
            continue;
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
            const char *value = sm ? p->sm_device_value[d] : p->device_value[d];
            if (value == NULL)
                continue;
            char name[64], meaning[40];
            snprintf(name, sizeof name, "%s_%d", v->name, d);
            snprintf(meaning, sizeof meaning, "%s limit of device %d",
                     sm ? "compute" : "memory", d);
            print_row(out, name, value, NULL,
                      sm ? p->sm_device_invalid[d] : p->device_invalid[d], "",
                      meaning);
        }
    }
}

void vgpu_config_sm_limits(uint32_t pct[VGPU_MAX_DEVICES])
{
    memcpy(pct, table()->sm_limits, sizeof parsed.sm_limits);
}

enum vgpu_core_policy vgpu_config_core_policy(void)
{
    return table()->policy;
}

enum vgpu_sm_mode vgpu_config_sm_mode(void)
{
    return table()->sm_mode;
}

uint64_t vgpu_config_sm_resume_ns(void)
{
    return table()->sm_resume_ns;
}
