/* Prometheus text for one region. Series per device (labels vdevice_index,
 * device_uuid, zone="vGPU", plus the user's): HAMi's
 * hami_vgpu_memory_used_bytes, hami_vgpu_memory_limit_bytes (only where a
 * limit is set: no series means no limit) and
 * hami_container_device_memory_bytes (HAMi gives it the same value as
 * used); vgpu's own vgpu_memory_peak_bytes, where a compute limit is set
 * vgpu_compute_limit_percent and the budget's counters
 * vgpu_compute_{charged,held}_nanoseconds_total, and vgpu_region_up and
 * vgpu_processes for the region. Label values are escaped as the format
 * requires; the user's label names are checked against its grammar. */
#include "metrics.h"

#include <string.h>

static const char *const reserved[] = {"vdevice_index", "device_uuid", "zone",
                                       NULL};

static bool label_name_ok(const char *name, size_t len)
{
    if (len == 0 || (name[0] >= '0' && name[0] <= '9') ||
        (len >= 2 && name[0] == '_' && name[1] == '_'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9')))
            return false;
    }
    for (int i = 0; reserved[i]; i++)
        if (strlen(reserved[i]) == len && memcmp(reserved[i], name, len) == 0)
            return false;
    return true;
}

bool metrics_add_label(struct metrics_labels *l, const char *name_value)
{
    const char *eq = strchr(name_value, '=');
    if (eq == NULL || !label_name_ok(name_value, (size_t)(eq - name_value))) {
        fprintf(stderr, "vgpuctl: --label wants NAME=VALUE with NAME a "
                        "Prometheus label name not set by vgpuctl: '%s'\n",
                name_value);
        return false;
    }
    if (l->count == METRICS_MAX_LABELS) {
        fprintf(stderr, "vgpuctl: at most %d --label options\n",
                METRICS_MAX_LABELS);
        return false;
    }
    /* The name is kept with its '=': printed with its length below. */
    l->name[l->count] = name_value;
    l->value[l->count] = eq + 1;
    l->count++;
    return true;
}

static void write_escaped(FILE *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            fputs("\\\\", out);
        else if (*v == '"')
            fputs("\\\"", out);
        else if (*v == '\n')
            fputs("\\n", out);
        else
            fputc(*v, out);
    }
}

static void write_user_labels(FILE *out, const struct metrics_labels *l)
{
    for (int i = 0; i < l->count; i++) {
        int len = (int)(strchr(l->name[i], '=') - l->name[i]);
        fprintf(out, ",%.*s=\"", len, l->name[i]);
        write_escaped(out, l->value[i]);
        fputc('"', out);
    }
}

static void header(FILE *out, const char *name, const char *help)
{
    size_t n = strlen(name);
    bool counter = n > 6 && strcmp(name + n - 6, "_total") == 0;
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
            counter ? "counter" : "gauge");
}

/* One series of a per-device family. */
static void device_series(FILE *out, const char *name,
                          const struct vgpu_snapshot *s, int d,
                          const struct metrics_labels *l,
                          unsigned long long value)
{
    fprintf(out, "%s{vdevice_index=\"%d\",device_uuid=\"", name, d);
    write_escaped(out, s->uuid[d]);
    fputs("\",zone=\"vGPU\"", out);
    write_user_labels(out, l);
    fprintf(out, "} %llu\n", value);
}

static int device_rows(const struct vgpu_snapshot *s)
{
    int n = s->device_count > 0 ? s->device_count : VGPU_MAX_DEVICES;
    return n > VGPU_MAX_DEVICES ? VGPU_MAX_DEVICES : n;
}

/* A device worth a series: one a process has recorded, or one with a
 * limit or usage (a region made before any device was seen). */
static bool device_shown(const struct vgpu_snapshot *s, int d)
{
    return s->uuid[d][0] != '\0' || s->limit[d] > 0 || s->used[d] > 0;
}

enum family { USED, LIMIT, CONTAINER, PEAK, SM_LIMIT, SM_CHARGED, SM_HELD };

static uint64_t value(const struct vgpu_snapshot *s, int d, enum family f)
{
    switch (f) {
    case LIMIT: return s->limit[d];
    case PEAK: return s->peak[d];
    case SM_LIMIT: return s->sm_limit[d];
    case SM_CHARGED: return s->sm_charged_ns[d];
    case SM_HELD: return s->sm_waited_ns[d];
    default: return s->used[d];
    }
}

static void family(FILE *out, const struct vgpu_snapshot *s,
                   const struct metrics_labels *l, enum family f)
{
    static const char *const names[] = {
        [USED] = "hami_vgpu_memory_used_bytes",
        [LIMIT] = "hami_vgpu_memory_limit_bytes",
        [CONTAINER] = "hami_container_device_memory_bytes",
        [PEAK] = "vgpu_memory_peak_bytes",
        [SM_LIMIT] = "vgpu_compute_limit_percent",
        [SM_CHARGED] = "vgpu_compute_charged_nanoseconds_total",
        [SM_HELD] = "vgpu_compute_held_nanoseconds_total",
    };
    static const char *const help[] = {
        [USED] = "Device memory charged by the region's processes, in bytes",
        [LIMIT] = "Device memory limit of the region, in bytes (no series: "
                  "unlimited)",
        [CONTAINER] = "Device memory used by the container, in bytes "
                      "(same as hami_vgpu_memory_used_bytes)",
        [PEAK] = "Highest device memory charged since the region was created "
                 "or reset, in bytes",
        [SM_LIMIT] = "Compute limit of the region, percent of the GPU's time "
                     "(no series: unlimited)",
        [SM_CHARGED] = "GPU time charged to the compute budget, in ns",
        [SM_HELD] = "Wall time launches were held by the compute limit, in ns",
    };
    header(out, names[f], help[f]);
    for (int d = 0; d < device_rows(s); d++) {
        if (!device_shown(s, d) || (f == LIMIT && s->limit[d] == 0) ||
            (f >= SM_LIMIT && s->sm_limit[d] == 0))
            continue;
        device_series(out, names[f], s, d, l, (unsigned long long)value(s, d, f));
    }
}

static void region_series(FILE *out, const char *name, const char *help,
                          const struct metrics_labels *l, int value)
{
    header(out, name, help);
    fprintf(out, "%s{zone=\"vGPU\"", name);
    write_user_labels(out, l);
    fprintf(out, "} %d\n", value);
}

void metrics_write(FILE *out, const struct vgpu_snapshot *s,
                   const struct metrics_labels *l)
{
    region_series(out, "vgpu_region_up",
                  "1 if the region file could be read, else 0", l, s != NULL);
    if (s == NULL)
        return;
    int live = 0;
    for (int i = 0; i < s->proc_count; i++)
        live += s->procs[i].alive;
    region_series(out, "vgpu_processes",
                  "Live processes attached to the region", l, live);
    family(out, s, l, USED);
    family(out, s, l, LIMIT);
    family(out, s, l, CONTAINER);
    family(out, s, l, PEAK);
    family(out, s, l, SM_LIMIT);
    family(out, s, l, SM_CHARGED);
    family(out, s, l, SM_HELD);
}
