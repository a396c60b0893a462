/* The region as Prometheus text (exposition format 0.0.4), with HAMi
 * monitor's metric names and labels where HAMi has one. */
#ifndef VGPU_TOOLS_METRICS_H
#define VGPU_TOOLS_METRICS_H

#include <stdbool.h>
#include <stdio.h>

#include "vgpu/region.h"

#define METRICS_MAX_LABELS 8

/* Constant labels added to every series (e.g. pod="train-0"). */
struct metrics_labels {
    int count;
    const char *name[METRICS_MAX_LABELS];
    const char *value[METRICS_MAX_LABELS];
};

/* Add NAME=VALUE from the command line. False, with one line on stderr,
 * if it is malformed, NAME is not a label name or one we set, or there are
 * too many. */
bool metrics_add_label(struct metrics_labels *l, const char *name_value);

/* Write every series for the region snapshot s, or, with s NULL, only
 * vgpu_region_up 0 (the region could not be read). */
void metrics_write(FILE *out, const struct vgpu_snapshot *s,
                   const struct metrics_labels *l);

#endif
