/* The reconciliation: see reconcile.h. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "hook/reconcile.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "clock.h"
#include "hook/account.h"
#include "hook/ctxcharge.h"
#include "hook/nvml_self.h"
#include "hook/real.h"
#include "log.h"
#include "vgpu/config.h"

#define PROBE_BYTES (64ull << 20)

/* Per device, this process's: guarded by `lock`; `next_ns` and `unpaid`
 * are also read without it as hints, so they are written atomically
 * (relaxed: a stale value only delays or repeats a reconciliation that
 * re-checks under the lock). A fork waits for a reconciliation in progress
 * (the lock is taken around it) so that the child's lock is free. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t owner;                         /* the process these are for */
static uint64_t implicit[VGPU_MAX_DEVICES]; /* charged as module bytes */
static uint64_t unpaid[VGPU_MAX_DEVICES];   /* held by the driver, not yet charged */
static uint64_t next_ns[VGPU_MAX_DEVICES];  /* earliest next reading */
static uint64_t last_full_ns[VGPU_MAX_DEVICES];
static __thread int inside; /* this thread is reconciling (the probe) */
static pid_t watcher_of;    /* the process whose watcher thread runs */
static bool stopping;       /* exit has begun: the watcher touches nothing */

static uint64_t interval_ns(void)
{
    const char *text = vgpu_env(VGPU_ENV_RECONCILE_MS);
    return (uint64_t)strtoull(text ? text : "100", NULL, 10) * 1000000ull;
}

/* A fork child starts with nothing of its parent's (its slot is new). */
static void own_state(void)
{
    if (owner != getpid()) {
        owner = getpid();
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
            implicit[d] = last_full_ns[d] = 0;
            atomic_store_n(&unpaid[d], 0, RELAXED); /* hints, see above */
            atomic_store_n(&next_ns[d], 0, RELAXED);
        }
    }
}

/* Where the host's pid is hidden: the one pid that grew by a probe
 * allocation of ours (charged like any other). */
static void learn_pid(struct vgpu_region *r, int dev, struct nvml_list *l)
{
    CUdeviceptr p;
    struct nvml_list after;
    if (REAL(cuMemAlloc_v2) == NULL || REAL(cuMemFree_v2) == NULL ||
        !vgpu_region_try_charge(r, dev, PROBE_BYTES, VGPU_CHARGE_MODULE))
        return;
    if (REAL(cuMemAlloc_v2)(&p, PROBE_BYTES) == CUDA_SUCCESS) {
        if (nvml_list_read(dev, &after))
            nvml_self_learn(l, &after, PROBE_BYTES);
        REAL(cuMemFree_v2)(p);
    }
    vgpu_region_uncharge(r, dev, PROBE_BYTES, VGPU_CHARGE_MODULE);
}

/* Bring implicit[dev] to what NVML holds beyond our other charges. Only a
 * thread in a hook (with a context) may learn the pid: `learn`. */
static void reconcile(struct vgpu_region *r, int dev, bool learn)
{
    struct nvml_list l;
    /* Charged before the driver allocates, uncharged after it frees: NVML
     * never shows more than the charges unless one of them moved while it
     * was read (another thread's alloc or free): then this round is void.
     * What it is compared with is the charges marked before the reading:
     * read after it, a free uncharged since (NVML still showing it) would
     * be charged as the driver's own memory (hook_reconcile_race). */
    /* A release in flight (charge.h) is not waited for: NVML shows its
     * memory gone before it is uncharged, so the driver's own memory looks
     * less by it until the next round, while the charges match what the
     * GPU holds at the reading. Voiding such rounds would void nearly all
     * of them in a program whose threads free while kernels run (a free
     * waits for the device), and leave the driver's memory uncharged. */
    struct vgpu_process_mark mark;
    vgpu_region_process_mark(r, dev, &mark);
    if (!nvml_list_read(dev, &l) || !vgpu_region_process_unmoved(r, dev, &mark))
        return;
    if (!nvml_self_pid_known() && !learn)
        return;
    if (!nvml_self_pid_known()) {
        learn_pid(r, dev, &l);
        vgpu_region_process_mark(r, dev, &mark); /* the probe's charge moved */
        if (!nvml_self_pid_known() || !nvml_list_read(dev, &l) ||
            !vgpu_region_process_unmoved(r, dev, &mark))
            return;
    }
    uint64_t held = 0;
    nvml_self_used(&l, &held); /* absent: holds nothing */
    uint64_t counted = mark.used - implicit[dev];
    uint64_t target = held > counted ? held - counted : 0;
    if (target < implicit[dev]) {
        vgpu_region_uncharge(r, dev, implicit[dev] - target, VGPU_CHARGE_MODULE);
        implicit[dev] = target;
    }
    atomic_store_n(&unpaid[dev], target - implicit[dev], RELAXED); /* a hint */
}

/* Charge what is unpaid, if it fits. */
static bool pay(struct vgpu_region *r, int dev)
{
    if (unpaid[dev] == 0)
        return true;
    if (!vgpu_region_try_charge(r, dev, unpaid[dev], VGPU_CHARGE_MODULE))
        return false;
    implicit[dev] += unpaid[dev];
    atomic_store_n(&unpaid[dev], 0, RELAXED); /* a hint outside the lock */
    return true;
}

/* The watcher's early wake-up (reconcile_wake). Its own mutex, held only
 * to set or test `woken` (never across a reading of NVML or a fork, as
 * `lock` is: a waker that found `lock` taken could not wake a watcher
 * asleep in its round's wait, and the guess it is about stayed held a
 * round, 500 ms by default). Lock order: `lock`, then `wake_lock`. The
 * condition variable waits on CLOCK_MONOTONIC. A fork child makes both
 * anew: the parent's watcher (their waiter, which may have held the mutex
 * at the fork) does not exist there. */
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake;
static bool wake_made; /* `wake` is initialized */
static bool woken;

/* With `wake_lock` held, or in a fork child (one thread). A wake before
 * it (a context charged at the guess before the first charge started a
 * watcher) stays in `woken`. */
static void wake_init(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&wake, &attr);
    pthread_condattr_destroy(&attr);
    wake_made = true;
}

/* Without `lock`: until woken or ns have passed. */
static void wait_ns(uint64_t ns)
{
    uint64_t until = clock_ns(CLOCK_MONOTONIC) + ns;
    struct timespec ts = {(time_t)(until / 1000000000ull),
                          (long)(until % 1000000000ull)};
    pthread_mutex_lock(&wake_lock);
    while (!woken && clock_ns(CLOCK_MONOTONIC) < until)
        pthread_cond_timedwait(&wake, &wake_lock, &ts);
    woken = false;
    pthread_mutex_unlock(&wake_lock);
}

/* At rest no charge comes to reconcile: a thread of this process does it
 * every five intervals for the devices it charged on (signals blocked: they
 * are the application's). It only reads NVML and the region. It also
 * brings contexts charged at the guess to the measured size: every 10 ms
 * while one is pending and recent, as other processes may be waiting for
 * that room. Named "vgpu-reconcile" (top -H, /proc/PID/task/TID/comm). */
static void *watch(void *started)
{
    pthread_setname_np(pthread_self(), "vgpu-reconcile");
    sem_post(started); /* see start_watcher */
    uint64_t period = interval_ns() * 5;
    if (period < 10000000ull)
        period = 10000000ull; /* at most 100 times a second */
    uint64_t due = clock_ns(CLOCK_MONOTONIC) + period;
    bool soon = false;
    for (;;) {
        uint64_t now = clock_ns(CLOCK_MONOTONIC);
        uint64_t until = due > now ? due - now : 0;
        wait_ns(soon && until > 10000000ull ? 10000000ull : until);
        struct vgpu_region *r = account_region();
        pthread_mutex_lock(&lock);
        if (stopping) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        own_state();
        soon = ctx_guesses_settle();
        now = clock_ns(CLOCK_MONOTONIC);
        if (now >= due) { /* else woken for the guesses only: no NVML */
            due = now + period;
            for (int d = 0; r != NULL && d < VGPU_MAX_DEVICES; d++)
                if (next_ns[d] != 0 && vgpu_region_limit(r, d) > 0) {
                    reconcile(r, d, false);
                    pay(r, d);
                }
        }
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

/* Mid-round, the watcher's next wait returns at once. */
void reconcile_wake(void)
{
    pthread_mutex_lock(&wake_lock);
    woken = true;
    if (wake_made) /* else no watcher yet: it looks at its first wait */
        pthread_cond_signal(&wake);
    pthread_mutex_unlock(&wake_lock);
}

static void before_fork(void) { pthread_mutex_lock(&lock); }
static void after_fork(void) { pthread_mutex_unlock(&lock); }

static void after_fork_child(void)
{
    pthread_mutex_init(&wake_lock, NULL);
    wake_init();
    woken = false; /* the parent's wake-ups are for the parent's guesses */
    pthread_mutex_unlock(&lock);
}

/* At exit, before the library's destructor gives the slot back (atexit
 * handlers run before destructors): the watcher stops touching the region. */
static void stop_watcher(void)
{
    pthread_mutex_lock(&lock);
    stopping = true; /* not woken: a thread ending while the process exits
                      * races the sanitizers' exit-time leak check */
    pthread_mutex_unlock(&lock);
}

static void register_fork_handlers(void)
{
    pthread_mutex_lock(&wake_lock);
    wake_init();
    pthread_mutex_unlock(&wake_lock);
    pthread_atfork(before_fork, after_fork, after_fork_child);
    atexit(stop_watcher);
}

/* Caller holds `lock`. */
static void start_watcher(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handlers);
    if (watcher_of == getpid())
        return;
    watcher_of = getpid();
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* Returns once the thread runs, `lock` held, which before_fork takes:
     * a fork cannot copy the sanitizers' allocator locks that the thread's
     * start holds into a child (whose malloc or exit-time leak check would
     * then wait forever). */
    sem_t started;
    sem_init(&started, 0, 0);
    if (pthread_create(&t, &attr, watch, &started) == 0)
        while (sem_wait(&started) != 0) /* EINTR */
            ;
    else
        log_debug("no reconciliation thread: only charges reconcile");
    sem_destroy(&started);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

bool reconcile_before_charge(int dev, uint64_t bytes)
{
    struct vgpu_region *r = account_region();
    uint64_t limit = vgpu_region_limit(r, dev);
    if (inside || r == NULL || limit == 0 || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return true;
    uint64_t now = clock_ns(CLOCK_MONOTONIC_COARSE);
    if (now < atomic_load_n(&next_ns[dev], RELAXED) &&
        atomic_load_n(&unpaid[dev], RELAXED) == 0) /* hints, see above */
        return true;
    uint64_t every = interval_ns();
    /* Near the limit (or asked to at every charge) a charge waits for a
     * round under way (the watcher's: one NVML reading; it calls no hook)
     * rather than pass unreconciled: the watcher cannot learn a hidden
     * pid, and its round may be void, so that round is no substitute. */
    bool near = vgpu_region_used(r, dev) + bytes >= limit / 4 * 3;
    if (near || every == 0)
        pthread_mutex_lock(&lock);
    else if (pthread_mutex_trylock(&lock) != 0)
        return true; /* another thread is at it */
    own_state();
    bool ok = true;
    if (next_ns[dev] == 0) {
        atomic_store_n(&next_ns[dev], now + every, RELAXED); /* not now */
        last_full_ns[dev] = now;
        start_watcher();
    } else if (now >= next_ns[dev]) {
        if (near || now - last_full_ns[dev] >= 1000000000ull || every == 0) {
            inside = 1;
            reconcile(r, dev, true);
            inside = 0;
            last_full_ns[dev] = now;
        }
        atomic_store_n(&next_ns[dev], now + every, RELAXED); /* a hint */
    }
    ok = pay(r, dev);
    pthread_mutex_unlock(&lock);
    if (!ok)
        log_debug("device %d: %llu bytes held by the driver beyond the charges "
                  "do not fit: refused", dev,
                  (unsigned long long)atomic_load_n(&unpaid[dev], RELAXED)); /* a hint */
    return ok;
}
