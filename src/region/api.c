/* The public charge interface: argument checks, fork re-attach, reclaim on
 * refusal; the synchronization itself is the mode's (r->ops). */
#include <pthread.h>
#include <string.h>

#include "atomic.h"
#include "log.h"
#include "region_internal.h"

static bool device_ok(int dev)
{
    if (dev >= 0 && dev < VGPU_MAX_DEVICES)
        return true;
    /* A limit can only name devices 0..15; documented: not accounted. */
    static int warned;
    if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: only picks who logs */
        log_warn("device index %d is outside 0..%d; its memory is not "
                 "accounted", dev, VGPU_MAX_DEVICES - 1);
    return false;
}

/* True when r can charge in this process (re-attaching in a fork child). */
static bool usable(struct vgpu_region *r)
{
    if (r == NULL)
        return false;
    /* Acquire: pairs with the release in region_rejoin_after_fork. */
    if (atomic_load_n(&r->forked, ACQUIRE)) {
        static pthread_mutex_t rejoin_lock = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&rejoin_lock); /* once per fork, not per charge */
        if (atomic_load_n(&r->forked, RELAXED)) /* under rejoin_lock */
            region_rejoin_after_fork(r);
        pthread_mutex_unlock(&rejoin_lock);
    }
    return r->slot >= 0;
}

bool vgpu_region_try_charge(struct vgpu_region *r, int dev, uint64_t bytes,
                            enum vgpu_charge_kind kind)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    if (!device_ok(dev) || !usable(r))
        return true;
    if (r->ops->try_charge(r, dev, bytes, kind))
        return true;
    /* Refused: the bytes of processes that died may still be counted. */
    if (vgpu_region_reclaim(r) > 0)
        return r->ops->try_charge(r, dev, bytes, kind);
    return false;
}

void vgpu_region_settle(struct vgpu_region *r, int dev, uint64_t bytes,
                        enum vgpu_charge_kind kind, bool driver_ok)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    if (device_ok(dev) && usable(r))
        r->ops->settle(r, dev, bytes, kind, driver_ok);
}

void vgpu_region_uncharge(struct vgpu_region *r, int dev, uint64_t bytes,
                          enum vgpu_charge_kind kind)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    if (device_ok(dev) && usable(r))
        r->ops->uncharge(r, dev, bytes, kind);
}

uint64_t vgpu_region_used(const struct vgpu_region *r, int dev)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    if (r == NULL || r->base == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return 0;
    return r->ops->used(r, dev);
}

uint64_t vgpu_region_process_used(const struct vgpu_region *r, int dev)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    if (r == NULL || r->base == NULL || r->slot < 0 || dev < 0 ||
        dev >= VGPU_MAX_DEVICES)
        return 0;
    /* Relaxed: our own counter; any recent value. */
    return atomic_load_n(&r->hami->procs[r->slot].used[dev].total, RELAXED);
}

uint64_t vgpu_region_context_bytes(const struct vgpu_region *r, int dev)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    if (r == NULL || r->base == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return 0;
    /* Relaxed: a size, publishing nothing else. */
    return atomic_load_n(&r->ext->context_bytes[dev], RELAXED);
}

void vgpu_region_set_context_bytes(struct vgpu_region *r, int dev, uint64_t bytes)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    if (r != NULL && r->base != NULL && dev >= 0 && dev < VGPU_MAX_DEVICES)
        atomic_store_n(&r->ext->context_bytes[dev], bytes, RELAXED); /* a size */
}

int32_t vgpu_host_pid(void)
{
    if (proc_host_pid_is_known())
        return proc_host_pid(); /* cached for this process */
    /* Found now, off the attach path: the slots this process holds get it
     * too (HAMi-core's hostpid field); slots claimed later take it then. */
    int32_t host = proc_host_pid();
    region_publish_host_pid(host);
    return host;
}

uint64_t vgpu_region_limit(const struct vgpu_region *r, int dev)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    if (r == NULL || r->base == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return 0;
    /* Relaxed: the monitor may rewrite it at any time; any recent value. */
    return atomic_load_n(&r->hami->limit[dev], RELAXED);
}

void vgpu_region_set_device(struct vgpu_region *r, int dev, const char *uuid)
{
    if (r == NULL || r->base == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES ||
        uuid == NULL)
        return;
    /* Every process of a container sees the same devices, so concurrent
     * writers write the same bytes; the first byte goes last so a reader
     * that finds it non-zero (HAMi's IsValidUUID) finds the rest too. */
    char *dst = r->hami->uuids[dev];
    if (atomic_load_n(&dst[0], RELAXED) != 0) /* set already: nothing to order */
        return;
    size_t n = strnlen(uuid, HAMI_UUID_LEN - 1);
    if (n == 0)
        return;
    memcpy(dst + 1, uuid + 1, n - 1);
    atomic_store_n(&dst[0], uuid[0], RELEASE); /* publishes the bytes above */
}

bool vgpu_region_has_uuid(const struct vgpu_region *r, int dev, const char *uuid)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    if (r == NULL || r->base == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES ||
        uuid == NULL)
        return false;
    const char *mine = r->hami->uuids[dev];
    /* Acquire: pairs with the release of the first byte in set_device. */
    return atomic_load_n(&mine[0], ACQUIRE) != 0 &&
           strncmp(mine, uuid, HAMI_UUID_LEN) == 0;
}

void vgpu_region_debug_hold(struct vgpu_region *r)
{
    if (usable(r) && r->ops->hold)
        r->ops->hold(r);
}

int vgpu_region_slot(const struct vgpu_region *r)
{
    return r ? r->slot : -1;
}

const char *vgpu_region_mode(const struct vgpu_region *r)
{
    return r && r->ops ? r->ops->name : "none";
}
