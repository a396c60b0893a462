/* The default mode: check and charge are one compare-and-swap on the
 * device's counter, before the driver is asked (memcg's page_counter does
 * the same with add-and-roll-back; a CAS never lets the counter pass the
 * limit even transiently, so a concurrent charger is never refused because
 * of another's doomed attempt).
 *
 * Every atomic here is relaxed: the counters publish no other data. The
 * limit holds because all updates of one counter are totally ordered
 * (its modification order) and each CAS checks the value it replaces.
 *
 * Order against crashes: charge adds to the device, then to the slot's
 * total; uncharge takes from the slot's total, then from the device. A
 * process killed in between leaves the device counting too high (the one
 * in-flight charge), never too low; region_heal returns it when no process
 * is left. The window is one atomic instruction (the per-kind counters
 * and the peak are outside it), but a SIGKILL is taken right after an
 * atomic instruction more often than anywhere else, as those are the
 * slowest: a process doing nothing but charging leaks on about one kill
 * in ten (BENCHMARKS.md, kill storm); one that calls the driver between
 * charges, far less.
 *
 * Counters never go below zero: an uncharge of more than this process
 * holds (a double uncharge, anywhere) takes only what is there and warns
 * once, as Linux's page_counter_cancel does.
 */
#include "atomic.h"
#include "log.h"
#include "region_internal.h"

bool charge_exceeds(uint64_t used, uint64_t bytes, uint64_t limit)
{
    if (bytes > UINT64_MAX - used)
        return true;
    return limit != 0 && used + bytes > limit;
}

static uint64_t *kind_counter(struct hami_device_memory *m,
                              enum vgpu_charge_kind kind)
{
    switch (kind) {
    case VGPU_CHARGE_CONTEXT: return &m->context_size;
    case VGPU_CHARGE_MODULE: return &m->module_size;
    default: return &m->data_size;
    }
}

static void warn_clamped(const char *what, int dev, uint64_t asked,
                         uint64_t taken)
{
    static int warned;
    if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: only picks who logs */
        log_warn("uncharge of %llu bytes on device %d: %s held only %llu; "
                 "counted as %llu, never below zero (warned once)",
                 (unsigned long long)asked, dev, what,
                 (unsigned long long)taken, (unsigned long long)taken);
}

uint64_t counter_sub_clamped(uint64_t *counter, uint64_t bytes)
{
    uint64_t cur = atomic_load_n(counter, RELAXED);
    uint64_t take;
    do
        take = cur < bytes ? cur : bytes;
    while (!atomic_cas(counter, &cur, cur - take, RELAXED, RELAXED));
    return take;
}

void device_sub(struct vgpu_region *r, int dev, uint64_t bytes)
{
    uint64_t taken = counter_sub_clamped(&r->ext->dev[dev].used, bytes);
    if (taken != bytes)
        warn_clamped("the device counter", dev, bytes, taken);
}

void slot_add(struct vgpu_region *r, int dev, uint64_t bytes,
              enum vgpu_charge_kind kind)
{
    struct hami_device_memory *m = &r->hami->procs[r->slot].used[dev];
    atomic_add(&m->total, bytes, RELAXED); /* first: see the crash order */
    atomic_add(kind_counter(m, kind), bytes, RELAXED);
}

uint64_t slot_take(struct vgpu_region *r, int dev, uint64_t bytes,
                   enum vgpu_charge_kind kind)
{
    struct hami_device_memory *m = &r->hami->procs[r->slot].used[dev];
    uint64_t taken = counter_sub_clamped(kind_counter(m, kind), bytes);
    taken = counter_sub_clamped(&m->total, taken); /* last: the crash order */
    if (taken != bytes)
        warn_clamped("this process", dev, bytes, taken);
    return taken;
}

void slot_sub(struct vgpu_region *r, int dev, uint64_t bytes,
              enum vgpu_charge_kind kind)
{
    (void)slot_take(r, dev, bytes, kind);
}

static bool default_try_charge(struct vgpu_region *r, int dev, uint64_t bytes,
                               enum vgpu_charge_kind kind)
{
    /* The monitor may rewrite the limit at any time; the next charge sees it. */
    uint64_t limit = atomic_load_n(&r->hami->limit[dev], RELAXED);
    struct vgpu_device_counter *c = &r->ext->dev[dev];
    uint64_t used = atomic_load_n(&c->used, RELAXED);
    do {
        if (charge_exceeds(used, bytes, limit))
            return false;
    } while (!atomic_cas(&c->used, &used, used + bytes, RELAXED, RELAXED));
    slot_add(r, dev, bytes, kind);
    atomic_max_u64(&c->peak, used + bytes);
    return true;
}

static void default_uncharge(struct vgpu_region *r, int dev, uint64_t bytes,
                             enum vgpu_charge_kind kind)
{
    /* Only what the slot gave back leaves the device: an over-uncharge
     * never takes another process's bytes. */
    device_sub(r, dev, slot_take(r, dev, bytes, kind));
}

static void default_settle(struct vgpu_region *r, int dev, uint64_t bytes,
                           enum vgpu_charge_kind kind, bool ok)
{
    if (!ok)
        default_uncharge(r, dev, bytes, kind); /* the reservation rolls back */
}

static uint64_t default_used(const struct vgpu_region *r, int dev)
{
    return atomic_load_n(&r->ext->dev[dev].used, RELAXED);
}

const struct region_mode_ops mode_default_ops = {
    .name = "default",
    .device_counters = true,
    .try_charge = default_try_charge,
    .settle = default_settle,
    .uncharge = default_uncharge,
    .used = default_used,
};
