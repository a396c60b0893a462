/* The charge transaction: reserve in the region, call the driver, settle.
 * Also the thread's "inside our driver call" depth, which keeps a driver's
 * calls to its own exported functions from being charged twice. */
#include "hook/charge.h"

#include <time.h>

#include "atomic.h"

#include "clock.h"

#include "hook/account.h"
#include "hook/ctxcharge.h"
#include "hook/graphmem.h"
#include "hook/pools.h"
#include "hook/reconcile.h"

/* Depth of driver calls made by our hooks on this thread. */
static __thread int in_driver;

/* Without a fall in the container's usage this long, while no process
 * measures the size, the guesses are taken as given back (see below). */
#define OTHERS_SETTLE_NS (50ull * 1000 * 1000)

/* Refused while other processes of the container may still hold contexts
 * charged at the guess (a creation began before the size was known: the
 * region's mark): retry every millisecond while a process measures the
 * size, and then while the usage falls below its lowest so far (each
 * process gives its guesses back at its next charge or from its
 * reconciliation thread, every 10 ms while one is recent), until
 * OTHERS_SETTLE_NS pass without such a fall or the mark passes. Seen on
 * the simulated GPU: of 8 ranks of mpi_allreduce_sim under 4 GiB, two
 * still held 1 GiB guesses while waiting in a barrier, and two others'
 * 256 MiB were refused. A context's own charge waits its own way
 * (ctxcharge.c). What it costs: in a container's first seconds a charge
 * that does not fit is refused 50 ms later, or once the measurement under
 * way ends (at most 10 s). */
static bool charge_after_others_guesses(struct vgpu_region *r, int dev,
                                        uint64_t bytes,
                                        enum vgpu_charge_kind kind)
{
    if (kind == VGPU_CHARGE_CONTEXT)
        return false;
    uint64_t now = clock_ns(CLOCK_MONOTONIC);
    uint64_t until = vgpu_region_guesses_until(r, dev);
    if (until <= now || until - now > CTX_MEASUREMENT_WAIT_NS)
        return false; /* none can be held (a later mark is damage) */
    const struct timespec ms = {0, 1000 * 1000};
    uint64_t lowest = vgpu_region_used(r, dev), falling_at = now;
    while (now < until) {
        nanosleep(&ms, NULL);
        ctx_guesses_settle();
        if (vgpu_region_try_charge(r, dev, bytes, kind))
            return true;
        now = clock_ns(CLOCK_MONOTONIC);
        uint64_t used = vgpu_region_used(r, dev);
        if (used < lowest || vgpu_region_context_measuring(r, dev))
            falling_at = now;
        else if (now - falling_at >= OTHERS_SETTLE_NS)
            return false;
        lowest = used < lowest ? used : lowest;
    }
    return false;
}

bool charge_nested(void)
{
    return in_driver > 0;
}

bool charge_begin(struct charge *c, int dev, uint64_t bytes,
                  enum vgpu_charge_kind kind)
{
    *c = (struct charge){in_driver > 0 ? -1 : dev, bytes, kind};
    struct vgpu_region *r = c->dev >= 0 ? account_region() : NULL;
    /* Contexts charged at the guess give back what the measurement since
     * says they do not take, before it counts against this charge. */
    if (r != NULL)
        ctx_guesses_settle();
    int guessed = r != NULL ? ctx_guesses_pending() : 0;
    /* What the driver holds beyond the charges counts first. */
    if (r != NULL && !reconcile_before_charge(c->dev, bytes))
        return false;
    /* Refused: what this process's pools (stream-ordered and graph) cache
     * goes back first, once; then what its contexts charged at the guess
     * do not take, once the measurement under way says so. */
    if (r != NULL && !vgpu_region_try_charge(r, c->dev, bytes, kind) &&
        !(pools_give_back(c->dev) + graphmem_give_back(c->dev) > 0 &&
          vgpu_region_try_charge(r, c->dev, bytes, kind)) &&
        !(ctx_guesses_wait(guessed) &&
          vgpu_region_try_charge(r, c->dev, bytes, kind)) &&
        !charge_after_others_guesses(r, c->dev, bytes, kind))
        return false;
    in_driver++;
    return true;
}

bool charge_resize(struct charge *c, uint64_t bytes)
{
    if (c->dev < 0 || bytes == c->bytes) {
        c->bytes = bytes;
        return true;
    }
    struct vgpu_region *r = account_region();
    if (bytes < c->bytes)
        vgpu_region_uncharge(r, c->dev, c->bytes - bytes, c->kind);
    else if (!vgpu_region_try_charge(r, c->dev, bytes - c->bytes, c->kind))
        return false;
    c->bytes = bytes;
    return true;
}

void charge_end(struct charge *c, bool ok, enum ledger_space space,
                uint64_t key)
{
    in_driver--;
    if (c->dev < 0)
        return;
    vgpu_region_settle(account_region(), c->dev, c->bytes, c->kind, ok);
    if (ok && space != SPACE_NONE) {
        /* Memory, arrays and modules belong to the context they were made
         * in; contexts and libraries to none. */
        bool owned = space == SPACE_POINTER || space == SPACE_ARRAY ||
                     space == SPACE_MODULE;
        ledger_put(space, key, (struct ledger_entry){
            c->dev, c->kind, c->bytes, 0, owned ? account_created_context() : 0});
    }
}

/* Releases begun and ended in this process, ever. */
static uint64_t releases_begun, releases_ended;

void release_begin(void)
{
    /* Seq_cst: counted before the driver frees anything; a reader whose
     * later NVML reading shows the memory gone (the free and the reading
     * meet in the kernel, or in the simulated driver's release/acquire)
     * then finds the count moved (releases_none_since, seq_cst). */
    atomic_add(&releases_begun, 1, __ATOMIC_SEQ_CST);
}

void release_end(void)
{
    /* Release: the uncharge before it is seen by a mark that reads this
     * count (acquire in releases_mark). */
    atomic_add(&releases_ended, 1, RELEASE);
}

bool releases_mark(uint64_t *mark)
{
    /* Ended first (acquire: the later load stays after it): if as many
     * had begun by the second load as had ended by the first, none that
     * began before the mark is still in flight. */
    uint64_t ended = atomic_load_n(&releases_ended, ACQUIRE);
    *mark = atomic_load_n(&releases_begun, __ATOMIC_SEQ_CST); /* see release_begin */
    return *mark == ended;
}

bool releases_none_since(uint64_t mark)
{
    return atomic_load_n(&releases_begun, __ATOMIC_SEQ_CST) == mark; /* as above */
}

void releases_reset_after_fork(void)
{
    /* One thread: the parent's other threads, and their releases, are
     * not here. Relaxed: nothing else runs. */
    atomic_store_n(&releases_ended, atomic_load_n(&releases_begun, RELAXED), RELAXED);
}

CUresult charge_free(enum ledger_space space, uint64_t key,
                     driver_free_fn free_fn, void *arg)
{
    struct ledger_entry e;
    bool known = ledger_take(space, key, &e);
    /* A pool allocation goes back to its pool's cache: NVML does not move. */
    bool release = known && !e.pool;
    if (release)
        release_begin();
    in_driver++;
    CUresult rc = free_fn(key, arg);
    in_driver--;
    if (rc == CUDA_SUCCESS && known && e.pool)
        pools_freed(&e); /* back to its pool's cache */
    else if (rc == CUDA_SUCCESS && known)
        vgpu_region_uncharge(account_region(), e.dev, e.bytes, e.kind);
    else if (known)
        ledger_put(space, key, e); /* still allocated: still charged */
    if (release)
        release_end();
    return rc;
}

void charge_drop_device(int dev)
{
    uint64_t bytes[LEDGER_KINDS] = {0};
    ledger_drop_device(dev, bytes);
    pools_drop_device(dev);
    for (int k = 0; k < LEDGER_KINDS; k++)
        if (bytes[k] > 0)
            vgpu_region_uncharge(account_region(), dev, bytes[k],
                                 (enum vgpu_charge_kind)k);
}
