/* Looking at a region from outside (vgpuctl, tests): no slot is claimed.
 * Counter reads here are relaxed: a snapshot is a statistic, each field
 * read whole, not all of them at one instant. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "locks.h"
#include "log.h"
#include "region_internal.h"
#include "vgpu/sm_budget.h"

struct vgpu_region *vgpu_region_open_existing(const char *path)
{
    if (path == NULL)
        path = vgpu_env(VGPU_ENV_SHARED_CACHE);
    int fd = region_open_file(path, false);
    if (fd < 0)
        return NULL;
    struct stat st;
    void *base = NULL;
    const char *why = "file size does not match the layout";
    if (fstat(fd, &st) == 0 && (size_t)st.st_size == VGPU_FILE_SIZE)
        base = region_map(fd);
    if (base != NULL &&
        region_validate(base, VGPU_FILE_SIZE, &why) == FILE_VALID) {
        struct vgpu_region *r = calloc(1, sizeof *r);
        if (r != NULL) {
            r->base = base;
            r->fd = fd;
            r->hami = base;
            r->ext = region_ext(base);
            r->ops = mode_ops(r->ext->mode);
            r->slot = -1;
            strncpy(r->path, path, sizeof r->path - 1);
            return r;
        }
    }
    log_error("region %s: %s", path, why);
    if (base != NULL)
        munmap(base, VGPU_FILE_SIZE);
    close(fd);
    return NULL;
}

/* Usage without the mode's lock: an inspector must never wait on a lock a
 * dead (or hostile) process left taken. */
static uint64_t used_unlocked(struct vgpu_region *r, int dev)
{
    if (r->ops->device_counters)
        return atomic_load_n(&r->ext->dev[dev].used, RELAXED);
    return region_slots_sum(r, dev);
}

static bool slot_snapshot(struct vgpu_region *r, int i,
                          struct vgpu_snapshot_proc *p)
{
    struct vgpu_slot_ext *s = &r->ext->slots[i];
    /* Acquire: the owner's pid and counters written before the state. */
    uint64_t word = atomic_load_n(&s->word, ACQUIRE);
    if (SLOT_STATE(word) == SLOT_FREE)
        return false;
    struct hami_slot *hs = &r->hami->procs[i];
    p->slot = i;
    p->pid = atomic_load_n(&hs->pid, RELAXED);
    p->hostpid = atomic_load_n(&hs->hostpid, RELAXED);
    p->alive = slot_owner_alive(r, i);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        p->used[d] = atomic_load_n(&hs->used[d].total, RELAXED);
    return true;
}

void vgpu_region_snapshot(struct vgpu_region *r, struct vgpu_snapshot *snap)
{
    memset(snap, 0, sizeof *snap);
    strncpy(snap->mode, r->ops->name, sizeof snap->mode - 1);
    snap->device_count = (int)r->ext->device_count;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        snap->limit[d] = atomic_load_n(&r->hami->limit[d], RELAXED);
        snap->used[d] = used_unlocked(r, d);
        snap->peak[d] = atomic_load_n(&r->ext->dev[d].peak, RELAXED);
        memcpy(snap->uuid[d], r->hami->uuids[d], HAMI_UUID_LEN);
        snap->uuid[d][HAMI_UUID_LEN - 1] = '\0';
        snap->sm_limit[d] = vgpu_region_sm_limit(r, d);
        snap->sm_charged_ns[d] = atomic_load_n(&r->ext->sm[d].charged_ns, RELAXED);
        snap->sm_waited_ns[d] = atomic_load_n(&r->ext->sm[d].waited_ns, RELAXED);
    }
    for (int i = 0; i < VGPU_MAX_SLOTS; i++)
        if (slot_snapshot(r, i, &snap->procs[snap->proc_count]))
            snap->proc_count++;
}

int vgpu_region_live_count(struct vgpu_region *r)
{
    int live = 0;
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) {
        uint64_t word = atomic_load_n(&r->ext->slots[i].word, RELAXED);
        if (SLOT_STATE(word) != SLOT_FREE && slot_owner_alive(r, i))
            live++;
    }
    return live;
}

static void recount_from_live_slots(struct vgpu_region *r)
{
    /* Forced reset with processes attached: each device's counter becomes
     * the sum of the slots of live processes (dead ones reclaimed first).
     * A charge racing with this can be miscounted by its size. */
    vgpu_region_reclaim(r);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t sum = 0;
        for (int i = 0; i < VGPU_MAX_SLOTS; i++)
            sum += atomic_load_n(&r->hami->procs[i].used[d].total, RELAXED);
        atomic_store_n(&r->ext->dev[d].used, sum, RELAXED);
        atomic_store_n(&r->ext->dev[d].peak, sum, RELAXED);
    }
}

bool vgpu_region_reset(struct vgpu_region *r, bool force)
{
    if (byte_lock(r->fd, LOCK_ATTACH, BYTE_WRITE, false)) {
        region_heal(r); /* alone: every slot is dead, every count a leak */
        for (int d = 0; d < VGPU_MAX_DEVICES; d++)
            atomic_store_n(&r->ext->dev[d].peak, 0, RELAXED);
        byte_unlock(r->fd, LOCK_ATTACH);
        return true;
    }
    if (!force)
        return false;
    recount_from_live_slots(r);
    return true;
}
