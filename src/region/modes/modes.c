/* The table of synchronization modes, by the id stored in the region file. */
#include <string.h>

#include "../region_internal.h"

static const struct region_mode_ops *const modes[MODE_COUNT] = {
    [MODE_DEFAULT] = &mode_default_ops,
    [MODE_LEGACY] = &mode_legacy_ops,
    [MODE_TIMEOUTS] = &mode_timeouts_ops,
    [MODE_PER_PROCESS] = &mode_per_process_ops,
    [MODE_RWLOCK] = &mode_rwlock_ops,
    [MODE_ATOMICS] = &mode_atomics_ops,
    [MODE_SEQLOCK] = &mode_seqlock_ops,
};

const struct region_mode_ops *mode_ops(uint32_t id)
{
    return id < MODE_COUNT ? modes[id] : NULL;
}

int mode_id(const char *name)
{
    for (int i = 0; i < MODE_COUNT; i++)
        if (modes[i] != NULL && strcmp(modes[i]->name, name) == 0)
            return i;
    return -1;
}
