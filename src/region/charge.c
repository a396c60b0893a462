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
 * Order against crashes: charge adds to the device, then to the slot;
 * uncharge takes from the slot, then from the device. A process killed in
 * between leaves the device counting too high (the one in-flight charge),
 * never too low; region_heal returns it when no process is left.
 */
#include "atomic.h"
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

void slot_add(struct vgpu_region *r, int dev, uint64_t bytes,
                     enum vgpu_charge_kind kind)
{
    struct hami_device_memory *m = &r->hami->procs[r->slot].used[dev];
    atomic_add(kind_counter(m, kind), bytes, RELAXED);
    atomic_add(&m->total, bytes, RELAXED);
}

void slot_sub(struct vgpu_region *r, int dev, uint64_t bytes,
                     enum vgpu_charge_kind kind)
{
    struct hami_device_memory *m = &r->hami->procs[r->slot].used[dev];
    atomic_sub(kind_counter(m, kind), bytes, RELAXED);
    atomic_sub(&m->total, bytes, RELAXED);
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
    atomic_max_u64(&c->peak, used + bytes);
    slot_add(r, dev, bytes, kind);
    return true;
}

static void default_uncharge(struct vgpu_region *r, int dev, uint64_t bytes,
                             enum vgpu_charge_kind kind)
{
    slot_sub(r, dev, bytes, kind);
    atomic_sub(&r->ext->dev[dev].used, bytes, RELAXED);
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
