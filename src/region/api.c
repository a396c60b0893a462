/* The public charge interface: argument checks, fork re-attach, reclaim on
 * refusal; the synchronization itself is the mode's (r->ops). */
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

/* This process's own charges (region_internal.h: two counters that only
 * grow). A move to or from a local region reads them with the gate closed.
 * Never below zero: an uncharge of more than is held takes what is held. */
void region_own_add(struct vgpu_region *r, int dev, uint64_t bytes,
                    enum vgpu_charge_kind kind)
{
    /* Relaxed: a reader orders itself on `out` (region_own); a charge
     * comes before the driver's call, whose system call orders it. */
    atomic_add(&r->own_in[dev][kind], bytes, RELAXED);
}

void region_own_sub(struct vgpu_region *r, int dev, uint64_t bytes,
                    enum vgpu_charge_kind kind)
{
    uint64_t *out = &r->own_out[dev][kind];
    /* Acquire: the `in` read below is at least the one the last writer of
     * `out` capped it with (so `out` never passes `in`). */
    uint64_t cur = atomic_load_n(out, ACQUIRE), take;
    do {
        uint64_t held = atomic_load_n(&r->own_in[dev][kind], RELAXED) - cur;
        take = bytes < held ? bytes : held;
        /* Release: publishes the `in` read (and for a free, the driver's
         * free before it) to whoever reads `out` with acquire. */
    } while (!atomic_cas(out, &cur, cur + take, RELEASE, ACQUIRE));
}

static bool charge_once(struct vgpu_region *r, int dev, uint64_t bytes,
                        enum vgpu_charge_kind kind)
{
    region_op_enter(r);
    /* The process's number -> the region's, inside the gate: joining
     * another file may renumber (failover.c). */
    int at = region_index(r, dev);
    bool ok = r->ops->try_charge(r, at, bytes, kind);
    /* Refused: the bytes of processes that died may still be counted. */
    if (!ok && !atomic_load_n(&r->local, RELAXED) && vgpu_region_reclaim(r) > 0)
        ok = r->ops->try_charge(r, at, bytes, kind);
    if (ok)
        region_own_add(r, at, bytes, kind);
    region_op_exit(r);
    return ok;
}

/* charge_once inside the lifecycle gate (fork rejoin, exit). */
static bool charge_gated(struct vgpu_region *r, int dev, uint64_t bytes,
                         enum vgpu_charge_kind kind)
{
    enum gate g = lifecycle_enter(r);
    if (g != GATE_OPEN)
        return g == GATE_NO_SLOT; /* given back at exit: fail closed */
    bool ok = charge_once(r, dev, bytes, kind);
    lifecycle_leave(r);
    return ok;
}

bool vgpu_region_try_charge(struct vgpu_region *r, int dev, uint64_t bytes,
                            enum vgpu_charge_kind kind)
{
    if (!device_ok(dev))
        return true;
    enum gate g = lifecycle_enter(r);
    if (g != GATE_OPEN)
        return g == GATE_NO_SLOT; /* given back at exit: fail closed */
    /* Relaxed: a flag; the move synchronizes. The SIGBUS guard's region is
     * made exact before we count on it. */
    bool lost = atomic_load_n(&r->lost, RELAXED);
    lifecycle_leave(r);
    if (lost)
        region_check_now(r);
    if (charge_gated(r, dev, bytes, kind))
        return true;
    /* Before refusing: was the file deleted or replaced (the room may be in
     * another region now), or can a local process join again? Or, alone in
     * the region, can what killed processes left counted be healed now? */
    if (region_check_now(r) && charge_gated(r, dev, bytes, kind))
        return true;
    return lifecycle_heal_alone(r) && charge_gated(r, dev, bytes, kind);
}

void vgpu_region_settle(struct vgpu_region *r, int dev, uint64_t bytes,
                        enum vgpu_charge_kind kind, bool driver_ok)
{
    if (!device_ok(dev) || lifecycle_enter(r) != GATE_OPEN)
        return;
    region_op_enter(r);
    int at = region_index(r, dev); /* inside the gate, as in charge_once */
    r->ops->settle(r, at, bytes, kind, driver_ok);
    if (!driver_ok)
        region_own_sub(r, at, bytes, kind);
    region_op_exit(r);
    lifecycle_leave(r);
}

void vgpu_region_uncharge(struct vgpu_region *r, int dev, uint64_t bytes,
                          enum vgpu_charge_kind kind)
{
    if (!device_ok(dev) || lifecycle_enter(r) != GATE_OPEN)
        return;
    region_op_enter(r);
    int at = region_index(r, dev); /* inside the gate, as in charge_once */
    r->ops->uncharge(r, at, bytes, kind);
    region_own_sub(r, at, bytes, kind);
    region_op_exit(r);
    lifecycle_leave(r);
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
    /* Relaxed: our own slot; any recent value. */
    if (r == NULL || r->base == NULL || atomic_load_n(&r->slot, RELAXED) < 0 ||
        dev < 0 || dev >= VGPU_MAX_DEVICES)
        return 0;
    uint64_t sum = 0;
    for (int k = 0; k < 3; k++)
        sum += region_own(r, dev, k);
    return sum;
}

/* Inside the gate: a failover's renumbering (failover.c) is wholly before
 * or after it, never between its index and its counters. */
void vgpu_region_process_mark(struct vgpu_region *r, int dev,
                              struct vgpu_process_mark *m)
{
    *m = (struct vgpu_process_mark){.index = -1};
    /* Relaxed: our own slot; any recent value. */
    if (r == NULL || r->base == NULL || atomic_load_n(&r->slot, RELAXED) < 0)
        return;
    region_op_enter(r);
    m->index = region_index(r, dev);
    for (int k = 0; m->index >= 0 && m->index < VGPU_MAX_DEVICES && k < 3; k++) {
        /* `out` first, with acquire (see region_own): it also orders the
         * reading of NVML after it behind the frees that it counts. */
        m->uncharged += atomic_load_n(&r->own_out[m->index][k], ACQUIRE);
        m->charged += atomic_load_n(&r->own_in[m->index][k], RELAXED);
    }
    region_op_exit(r);
    m->used = m->charged - m->uncharged;
}

bool vgpu_region_process_unmoved(struct vgpu_region *r, int dev,
                                 const struct vgpu_process_mark *m)
{
    struct vgpu_process_mark now;
    vgpu_region_process_mark(r, dev, &now);
    return now.index == m->index && now.charged == m->charged &&
           now.uncharged == m->uncharged;
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
    if (lifecycle_enter(r) == GATE_OPEN) {
        if (r->ops->hold)
            r->ops->hold(r);
        lifecycle_leave(r);
    }
}

bool vgpu_region_is_local(const struct vgpu_region *r)
{
    /* Relaxed: a flag for tools and tests. */
    return r != NULL && (atomic_load_n(&r->local, RELAXED) ||
                         atomic_load_n(&r->lost, RELAXED));
}

int vgpu_region_slot(const struct vgpu_region *r)
{
    return r ? atomic_load_n(&r->slot, RELAXED) : -1; /* a move may change it */
}

const char *vgpu_region_mode(const struct vgpu_region *r)
{
    return r && r->ops ? r->ops->name : "none";
}
