/* Process-local regions: where a limit is configured and the shared file
 * cannot be used (refused, no slot, no file locks, a stopped initializer,
 * truncated, deleted, replaced, damaged), the process charges against a
 * region of its own: a private anonymous mapping with the file's layout, the
 * last known limits, and one busy slot holding this process's charges. All
 * the charge code is the same; only the others are not counted with it.
 * failover.c moves the process back to the file when it can.
 *
 * local_build only stores into a fresh anonymous mapping (no allocation, no
 * lock, no library state): the SIGBUS guard calls it from the handler. */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "atomic.h"
#include "log.h"
#include "region_internal.h"

bool region_limits_set(const struct vgpu_attach_options *opts)
{
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (opts->limits[d] != 0 || opts->sm_limits[d] != 0)
            return true;
    return false;
}

static void fill_slot(struct hami_region *h, struct vgpu_ext *e,
                      const struct vgpu_region *r, int slot)
{
    e->slots[slot].word = SLOT_WORD(1, SLOT_BUSY);
    e->slots[slot].pid = (int32_t)getpid();
    struct hami_slot *hs = &h->procs[slot];
    hs->pid = (int32_t)getpid();
    hs->hostpid = r->hostpid;
    hs->status = 1;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        /* Relaxed: no charge runs now (gate closed, or the fault's thread
         * is the one running here); any recent value is the value. */
        uint64_t data = region_own(r, d, VGPU_CHARGE_DATA);
        uint64_t ctx = region_own(r, d, VGPU_CHARGE_CONTEXT);
        uint64_t mod = region_own(r, d, VGPU_CHARGE_MODULE);
        hs->used[d].data_size = data;
        hs->used[d].context_size = ctx;
        hs->used[d].module_size = mod;
        hs->used[d].total = data + ctx + mod;
        if (r->ops->device_counters) {
            e->dev[d].used = data + ctx + mod;
            e->dev[d].peak = data + ctx + mod;
        }
    }
    h->procnum = slot + 1;
}

void *local_build(const struct vgpu_region *r)
{
    void *base = mmap(NULL, VGPU_FILE_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    struct hami_region *h = base;
    struct vgpu_ext *e = region_ext(base);
    h->major_version = HAMI_MAJOR;
    h->minor_version = HAMI_MINOR;
    h->owner_pid = (uint64_t)getpid();
    h->device_num = VGPU_MAX_DEVICES;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        h->limit[d] = atomic_load_n(&r->limits[d], RELAXED); /* a copy */
        h->sm_limit[d] = atomic_load_n(&r->sm_limits[d], RELAXED);
        /* Sizes only: a claim names a slot of the file, not of this. */
        e->context_bytes[d] =
            region_context_size(atomic_load_n(&r->context_bytes[d], RELAXED));
        for (int i = 0; i < HAMI_UUID_LEN; i++)
            h->uuids[d][i] = r->uuids[d][i];
    }
    memcpy(e->magic, VGPU_EXT_MAGIC, sizeof e->magic);
    e->layout_version = VGPU_LAYOUT_VERSION;
    for (uint32_t m = 0; m < MODE_COUNT; m++)
        if (mode_ops(m) == r->ops)
            e->mode = m;
    e->file_size = VGPU_FILE_SIZE;
    e->creator_pid = (uint64_t)getpid();
    e->device_count = VGPU_MAX_DEVICES;
    /* The compute limit holds too, on this process alone (its own budget
     * in this mapping), whatever the monitor said of the shared GPU. */
    h->utilization_switch = 1;
    fill_slot(h, e, r, r->slot >= 0 ? r->slot : 0);
    if (r->ops->init) {
        struct vgpu_region view = {.base = base, .fd = -1, .hami = h, .ext = e,
                                   .ops = r->ops, .slot = -1};
        r->ops->init(&view); /* the seed modes' semaphore: plain stores */
    }
    h->initialized_flag = HAMI_MAGIC;
    return base;
}

bool local_start(struct vgpu_region *r)
{
    if (r->ops == NULL)
        r->ops = mode_ops(r->want_mode);
    if (r->slot < 0)
        r->slot = 0;
    r->hostpid = proc_host_pid_known(); /* no /proc read at attach */
    void *base = local_build(r);
    if (base == NULL) {
        log_error("region %s: no memory for process-local accounting; "
                  "running without a limit", r->path);
        return false;
    }
    r->base = base;
    r->hami = base;
    r->ext = region_ext(base);
    r->fd = -1;
    r->holds_attach = false;
    atomic_store_n(&r->pid, getpid(), RELAXED); /* published by rejoin */
    atomic_store_n(&r->local, 1, RELAXED); /* no other thread has r yet */
    return true;
}

bool local_install(struct vgpu_region *r)
{
    void *fresh = local_build(r);
    if (fresh == NULL)
        return false;
    /* One step: every thread sees the old mapping or the new one at
     * r->base, never a hole or a half-filled region. */
    if (mremap(fresh, VGPU_FILE_SIZE, VGPU_FILE_SIZE,
               MREMAP_MAYMOVE | MREMAP_FIXED, r->base) == MAP_FAILED) {
        munmap(fresh, VGPU_FILE_SIZE);
        return false;
    }
    return true;
}

void local_remember(struct vgpu_region *r)
{
    /* Relaxed: copies for a later local region; any recent value will do. */
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        atomic_store_n(&r->limits[d],
                       atomic_load_n(&r->hami->limit[d], RELAXED), RELAXED);
        /* A size only: a claim (a measurement under way) is none, and
         * must not replace a size remembered before. */
        uint64_t ctx = region_context_size(
            atomic_load_n(&r->ext->context_bytes[d], RELAXED));
        if (ctx != 0)
            atomic_store_n(&r->context_bytes[d], ctx, RELAXED);
        uint64_t pct = atomic_load_n(&r->hami->sm_limit[d], RELAXED);
        atomic_store_n(&r->sm_limits[d], pct >= 100 ? 0u : (uint32_t)pct, RELAXED);
    }
    /* Acquire: pairs with the release of the first byte in set_device. */
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (r->uuids[d][0] == 0 && atomic_load_n(&r->hami->uuids[d][0], ACQUIRE))
            memcpy(r->uuids[d], r->hami->uuids[d], HAMI_UUID_LEN);
}
