/* Moving a process between the shared region and process-local accounting
 * (local.c), with its charges.
 *
 * A charge, settle or free runs between region_op_enter and region_op_exit;
 * a move closes that gate, waits (at most DRAIN_MS) for the operations in
 * flight to leave, swaps what is mapped at r->base (one mremap: other
 * threads' readers never see a hole), the slot and the fd, and opens the
 * gate again. Operations that arrive meanwhile wait for it (at most
 * MOVE_WAIT_MS). r->base never changes, so readers outside the gate (usage,
 * limit) always read a mapped region.
 *
 * When: a watcher thread, started with the first region that has a limit
 * (and again in a fork child that joins), looks every CHECK_MS, so that an
 * idle process moves too; and region_check_now runs when a charge is
 * refused, before the caller gives up. A process attached to the file looks
 * at it (deleted, replaced, truncated, damaged, made writable by others); a
 * local one tries to join it again, without waiting for any lock. Nothing of
 * this is on the charge path but the gate.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "clock.h"
#include "log.h"
#include "region_internal.h"

#define CHECK_MS 1000
#define DRAIN_MS 100
#define MOVE_WAIT_MS 1000

/* One move at a time in the process; never waited on (trylock). */
static pthread_mutex_t move_lock = PTHREAD_MUTEX_INITIALIZER;

static int64_t coarse_ms(void)
{
    return (int64_t)(clock_ns(CLOCK_MONOTONIC_COARSE) / 1000000);
}

static void pause_briefly(void)
{
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

/* ---- The gate ---- */

static void gate_reopen(struct vgpu_region *r)
{
    uint64_t w = atomic_load_n(&r->move_gate, RELAXED);
    /* Release: the mapping, slot and fd written by the move are seen by
     * every operation that enters after (acquire in region_op_enter). */
    while (!atomic_cas(&r->move_gate, &w, w & ~MOVE_CLOSED, RELEASE, RELAXED))
        ;
}

void region_op_enter(struct vgpu_region *r)
{
    int64_t give_up = 0;
    for (;;) {
        /* Acquire: pairs with gate_reopen's release (see above). */
        uint64_t w = atomic_add(&r->move_gate, 1, ACQUIRE);
        if (!(w & MOVE_CLOSED))
            return;
        atomic_sub(&r->move_gate, 1, RELAXED); /* not in yet: orders nothing */
        int64_t now = coarse_ms();
        if (give_up == 0)
            give_up = now + MOVE_WAIT_MS;
        if (now >= give_up) {
            /* The mover is gone (a raw fork child inherits a closed gate)
             * or stuck: do not wait for ever. */
            gate_reopen(r);
            give_up = 0;
        }
        pause_briefly();
    }
}

void region_op_exit(struct vgpu_region *r)
{
    /* Release: this operation's accesses to the mapping happen before a
     * mover that sees the count drop (acquire in gate_close) swaps it. */
    atomic_sub(&r->move_gate, 1, RELEASE);
}

static bool gate_close(struct vgpu_region *r)
{
    uint64_t w = atomic_load_n(&r->move_gate, RELAXED);
    /* Relaxed: the drain loop below does the acquiring. */
    while (!atomic_cas(&r->move_gate, &w, w | MOVE_CLOSED, RELAXED, RELAXED))
        ;
    int64_t give_up = coarse_ms() + DRAIN_MS;
    /* Acquire: pairs with region_op_exit's release. */
    while ((atomic_load_n(&r->move_gate, ACQUIRE) & ~MOVE_CLOSED) != 0) {
        if (coarse_ms() >= give_up) {
            gate_reopen(r); /* a thread stays inside: try at the next check */
            return false;
        }
        pause_briefly();
    }
    return true;
}

/* ---- Leaving the file ---- */

static uint64_t own_total(const struct vgpu_region *r)
{
    uint64_t sum = 0;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        for (int k = 0; k < 3; k++)
            sum += region_own(r, d, k); /* a figure for a log */
    return sum;
}

static bool file_intact(const struct vgpu_region *r)
{
    struct stat st;
    return fstat(r->fd, &st) == 0 && (size_t)st.st_size == VGPU_FILE_SIZE;
}

/* The file was truncated under us: the SIGBUS guard has put a local region
 * in place already, from our charges at the fault (a charge then in flight
 * in another thread may be missing from it); build it again exactly, now
 * that none is in flight, and drop the file. */
static bool settle_lost(struct vgpu_region *r)
{
    while (atomic_load_n(&r->lost, RELAXED) == 2) /* a handler is at it */
        sched_yield();
    if (!gate_close(r))
        return false;
    local_install(r); /* if it fails, the guard's region stays */
    if (r->fd >= 0)
        close(r->fd); /* our attach and slot locks go with it */
    r->fd = -1;
    r->holds_attach = false;
    atomic_store_n(&r->local, 1, RELAXED); /* read under the gate */
    atomic_store_n(&r->lost, 0, RELAXED);
    gate_reopen(r);
    log_error("region %s was truncated while in use; this process enforces "
              "its limit alone (%llu bytes carried) and rejoins the region "
              "when it can", r->path, (unsigned long long)own_total(r));
    return true;
}

static bool leave_file(struct vgpu_region *r, const char *why)
{
    if (!gate_close(r))
        return false;
    void *fresh = local_build(r);
    if (fresh == NULL || !lifecycle_hold_exit(r)) {
        if (fresh != NULL)
            munmap(fresh, VGPU_FILE_SIZE);
        gate_reopen(r);
        return false;
    }
    /* Exit is held off from here to the swap: it would give the slot back
     * in the old file too, perhaps after another process took it. */
    int slot = r->slot;
    /* Return our charges to the region we leave (others may still use it),
     * unless its pages are gone; through a view, as r keeps its slot index
     * for the local region. */
    struct vgpu_region *old = calloc(1, sizeof *old);
    if (old != NULL && file_intact(r)) {
        *old = (struct vgpu_region){.base = r->base, .fd = r->fd,
                                    .hami = r->hami, .ext = r->ext,
                                    .ops = r->ops, .slot = slot,
                                    .holds_attach = r->holds_attach};
        memcpy(old->path, r->path, sizeof old->path);
        /* A view, untracked: not vgpu_region_release_slot (which would
         * return at once). Without the mode's slot-table lock, which a
         * move under its gate must not wait for. */
        slot_release(old);
    }
    free(old);
    if (mremap(fresh, VGPU_FILE_SIZE, VGPU_FILE_SIZE,
               MREMAP_MAYMOVE | MREMAP_FIXED, r->base) == MAP_FAILED) {
        /* Cannot happen short of the address space running out; keep the
         * slot index in a mapping that still has the region's layout. */
        munmap(fresh, VGPU_FILE_SIZE);
    }
    close(r->fd);
    r->fd = -1;
    lifecycle_allow_exit();
    r->holds_attach = false;
    atomic_store_n(&r->local, 1, RELAXED); /* read under the gate */
    gate_reopen(r);
    log_error("region %s %s; this process enforces its limit alone (%llu "
              "bytes carried) and rejoins the region when it can", r->path,
              why, (unsigned long long)own_total(r));
    return true;
}

/* What is wrong with the file we are attached to, or NULL. */
static const char *file_trouble(struct vgpu_region *r)
{
    struct stat fs, ps;
    if (fstat(r->fd, &fs) != 0)
        return "cannot be looked at";
    if ((size_t)fs.st_size != VGPU_FILE_SIZE)
        return "changed size while in use";
    if (fs.st_nlink == 0)
        return "was deleted";
    if (lstat(r->path, &ps) != 0)
        return errno == ENOENT ? "was deleted" : NULL;
    if (ps.st_dev != r->file_dev || ps.st_ino != r->file_ino)
        return "was replaced by another file";
    if (fs.st_uid != geteuid())
        return "was given to another user";
    mode_t open_bits = fs.st_mode & (S_IWGRP | S_IWOTH);
    if (open_bits != 0 && fchmod(r->fd, fs.st_mode & 07777 & ~open_bits) == 0)
        log_warn("region %s was made writable by others (mode %o); mode set "
                 "back", r->path, (unsigned)(fs.st_mode & 07777));
    const char *why = NULL;
    if (region_validate(r->base, VGPU_FILE_SIZE, &why) != FILE_VALID)
        return why;
    return NULL;
}

/* ---- Joining again ---- */

/* t's index of r's device i: by its UUID, recorded in t where t does not
 * know that GPU yet (at i if free there); i where r knows no UUID. */
static int index_in(struct vgpu_region *t, const struct vgpu_region *r, int i)
{
    const char *u = r->hami->uuids[i];
    /* Acquire: pairs with the release of the first byte in set_device. */
    if (atomic_load_n(&u[0], ACQUIRE) == 0)
        return i;
    int j = vgpu_region_uuid_index(t, u);
    for (int k = 0; j < 0 && k < VGPU_MAX_DEVICES; k++) {
        int at = (i + k) % VGPU_MAX_DEVICES;
        if (atomic_load_n(&t->hami->uuids[at][0], ACQUIRE) == 0) /* as above */
            j = at;
    }
    if (j < 0)
        return i;
    vgpu_region_set_device(t, j, u);
    return j;
}

/* Add this process's charges to t (its slot and devices), each device at
 * t's index of the same GPU (map). */
static void carry_over(struct vgpu_region *t, const struct vgpu_region *r,
                       int map[VGPU_MAX_DEVICES])
{
    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        map[i] = index_in(t, r, i);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        int d = map[i];
        uint64_t sum = 0;
        for (int k = 0; k < 3; k++) {
            uint64_t v = region_own(r, i, k); /* gate closed */
            if (v != 0)
                slot_add(t, d, v, (enum vgpu_charge_kind)k);
            sum += v;
        }
        if (sum != 0 && t->ops->device_counters) {
            /* Held already: added even past the limit (then the others
             * are refused until it is freed), never refused. */
            uint64_t now = atomic_add(&t->ext->dev[d].used, sum, RELAXED) + sum;
            atomic_max_u64(&t->ext->dev[d].peak, now);
        }
        /* A size, never a claim (its slot is r's, not t's); it may end a
         * claim in t: a known size is what the claimer would publish. */
        uint64_t ctx = region_context_size(
            atomic_load_n(&r->ext->context_bytes[i], RELAXED));
        if (ctx != 0 && region_context_size(atomic_load_n(
                            &t->ext->context_bytes[d], RELAXED)) == 0)
            atomic_store_n(&t->ext->context_bytes[d], ctx, RELAXED); /* a size */
    }
}

/* Joined t: this process's counters and device numbers follow t's indices
 * (the gate is closed; nothing changes where the numbering is the same). */
static void renumber(struct vgpu_region *r, const int map[VGPU_MAX_DEVICES])
{
    uint64_t moved[VGPU_MAX_DEVICES][3];
    memset(moved, 0, sizeof moved);
    bool same = true;
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        same = same && map[i] == i;
        for (int k = 0; k < 3; k++)
            moved[map[i]][k] += region_own(r, i, k); /* gate closed */
    }
    if (same)
        return;
    /* Index i takes what moved there and gives back what it held; both
     * counters grow (by one more byte each), so that a mark taken before
     * this is not found unmoved after it. The give-back is an uncharge,
     * capped at what is held: a gate reopened by a charge that waited too
     * long (region_op_enter) lets uncharges in meanwhile. */
    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        for (int k = 0; k < 3; k++) {
            uint64_t held = region_own(r, i, k);
            region_own_add(r, i, moved[i][k] + 1, (enum vgpu_charge_kind)k);
            region_own_sub(r, i, held + 1, (enum vgpu_charge_kind)k);
        }
    for (int l = 0; l < VGPU_MAX_DEVICES; l++) {
        int old = r->device_index[l] ? r->device_index[l] - 1 : l;
        r->device_index[l] = (int8_t)(map[old] + 1);
    }
}

/* t's slot goes back (and what was carried into it leaves its devices),
 * then t's file. t is a join of our own, untracked: nothing else runs on
 * it (and the mode's slot-table lock is not waited for, as in leave_file). */
static void drop_joined(struct vgpu_region *t)
{
    slot_release(t);
    munmap(t->base, VGPU_FILE_SIZE);
    close(t->fd);
}

static bool rejoin(struct vgpu_region *r)
{
    if (lifecycle_exited(r))
        return false; /* not a slot to claim and drop every second */
    struct vgpu_region *t = calloc(1, sizeof *t);
    if (t == NULL)
        return false;
    t->slot = -1;
    t->fd = -1;
    memcpy(t->path, r->path, sizeof t->path);
    for (uint32_t m = 0; m < MODE_COUNT; m++)
        if (mode_ops(m) == r->ops)
            t->want_mode = m;
    struct vgpu_attach_options opts;
    memset(&opts, 0, sizeof opts);
    opts.path = r->path;
    memcpy(opts.limits, r->limits, sizeof opts.limits);
    memcpy(opts.sm_limits, r->sm_limits, sizeof opts.sm_limits);
    bool joined = region_join_shared(t, &opts, false, true);
    if (joined && t->ops != r->ops) {
        static int warned;
        if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: picks who logs */
            log_warn("region %s is in mode \"%s\", this process counts in "
                     "\"%s\": it stays alone", r->path, t->ops->name,
                     r->ops->name);
        drop_joined(t);
        joined = false;
    }
    if (joined && !gate_close(r)) {
        drop_joined(t);
        joined = false;
    }
    /* Exit is held off from here to the swap: it would give back r's old
     * slot index in t, another process's slot there. */
    bool held = joined && lifecycle_hold_exit(r);
    if (joined && !held) {
        drop_joined(t);
        gate_reopen(r);
        joined = false;
    }
    int map[VGPU_MAX_DEVICES];
    if (joined) {
        carry_over(t, r, map);
        joined = mremap(t->base, VGPU_FILE_SIZE, VGPU_FILE_SIZE,
                        MREMAP_MAYMOVE | MREMAP_FIXED, r->base) != MAP_FAILED;
        if (!joined)
            drop_joined(t); /* the slot's carried charges go back with it */
        else {
            renumber(r, map);
            r->fd = t->fd;
            /* Relaxed: usable() reads it outside the gate, as a flag. */
            atomic_store_n(&r->slot, t->slot, RELAXED);
            r->holds_attach = t->holds_attach;
            r->file_dev = t->file_dev;
            r->file_ino = t->file_ino;
            atomic_store_n(&r->local, 0, RELAXED); /* read under the gate */
        }
        lifecycle_allow_exit();
        gate_reopen(r);
        if (joined)
            log_warn("region %s joined again; %llu bytes of this process "
                     "carried over", r->path, (unsigned long long)own_total(r));
    }
    free(t);
    return joined;
}

/* ---- When ---- */

bool region_check_now(struct vgpu_region *r)
{
    if (pthread_mutex_trylock(&move_lock) != 0)
        return false; /* another thread is at it */
    bool moved = false;
    /* Acquire: pairs with the release in lifecycle.c's rejoin. A fork
     * child's handle is its own only after it joined. */
    if (atomic_load_n(&r->pid, ACQUIRE) == getpid() && r->base) {
        if (atomic_load_n(&r->lost, RELAXED)) /* set by the SIGBUS guard */
            moved = settle_lost(r);
        if (!atomic_load_n(&r->local, RELAXED) &&
            !atomic_load_n(&r->lost, RELAXED)) {
            const char *why = file_trouble(r);
            if (why != NULL)
                moved = leave_file(r, why);
            else
                local_remember(r);
        }
        if (atomic_load_n(&r->local, RELAXED))
            moved |= rejoin(r);
    }
    pthread_mutex_unlock(&move_lock);
    return moved;
}

/* ---- The watcher ---- */

#define WATCH_MAX 16
static struct vgpu_region *watched[WATCH_MAX];
static pthread_mutex_t watcher_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t watcher_pid; /* the process whose watcher runs (under watcher_lock) */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* No move is half-done at fork: the child's copy of move_lock is free. Nor
 * is a watcher half-started (start_watcher holds watcher_lock until it runs;
 * move_lock is taken first, as a rejoin that attaches does). */
static void before_fork(void)
{
    pthread_mutex_lock(&move_lock);
    pthread_mutex_lock(&watcher_lock);
}

static void after_fork(void)
{
    pthread_mutex_unlock(&watcher_lock);
    pthread_mutex_unlock(&move_lock);
}
static void install_atfork(void) { pthread_atfork(before_fork, after_fork, after_fork); }

static void *watch(void *started)
{
    pthread_setname_np(pthread_self(), "vgpu-region"); /* top -H */
    sem_post(started); /* see start_watcher */
    for (;;) {
        struct timespec ts = {CHECK_MS / 1000, (CHECK_MS % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        for (int i = 0; i < WATCH_MAX; i++) {
            /* Acquire: pairs with the release in region_watch. */
            struct vgpu_region *r = atomic_load_n(&watched[i], ACQUIRE);
            if (r != NULL)
                region_check_now(r);
        }
    }
    return NULL;
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VGPU_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define VGPU_TSAN 1
#endif

/* ThreadSanitizer cannot start threads in the child of a multi-threaded
 * fork (glibc can): under it only, such a child (its parent had a watcher)
 * goes without one and moves only before a refusal. */
static bool may_start(void)
{
#ifdef VGPU_TSAN
    return watcher_pid == 0;
#else
    return true;
#endif
}

static void start_watcher(void)
{
    pthread_mutex_lock(&watcher_lock);
    if (watcher_pid != getpid() && may_start()) {
        /* Only synchronous signals may reach it: the application's signals
         * go to its own threads. */
        sigset_t all, old;
        sigfillset(&all);
        sigdelset(&all, SIGBUS);
        sigdelset(&all, SIGSEGV);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        /* Returns once the thread runs: the sanitizers' allocator locks
         * that its start takes are free again, so a fork cannot copy them
         * held into a child (whose malloc or exit-time leak check would
         * then wait forever). */
        pthread_t t;
        sem_t started;
        sem_init(&started, 0, 0);
        if (pthread_create(&t, &attr, watch, &started) == 0) {
            while (sem_wait(&started) != 0) /* EINTR */
                ;
            watcher_pid = getpid();
        } else {
            log_warn("no watcher thread: a process moves only when it charges");
        }
        sem_destroy(&started);
        pthread_attr_destroy(&attr);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    pthread_mutex_unlock(&watcher_lock);
}

static bool watch_in(struct vgpu_region *r, bool replace_foreign)
{
    for (int i = 0; i < WATCH_MAX; i++) {
        struct vgpu_region *cur = atomic_load_n(&watched[i], RELAXED);
        if (cur == r) /* already: a fork child joining again */
            return true;
        /* In a fork child, the parent's handles that were not joined again
         * (their pid is the parent's) give their place. */
        if (cur != NULL && !(replace_foreign && cur->pid != getpid()))
            continue;
        /* Release: the handle is complete before the watcher reads it. */
        if (atomic_cas(&watched[i], &cur, r, RELEASE, RELAXED))
            return true;
    }
    return false;
}

void region_watch(struct vgpu_region *r)
{
    pthread_once(&atfork_once, install_atfork);
    static int warned;
    if (!watch_in(r, false) && !watch_in(r, true) &&
        !atomic_xchg(&warned, 1, RELAXED)) /* relaxed: picks who logs */
        log_warn("region %s: more than %d regions in this process; this one "
                 "is looked at only before a refusal", r->path, WATCH_MAX);
    start_watcher();
}

void region_unwatch(struct vgpu_region *r)
{
    for (int i = 0; i < WATCH_MAX; i++) {
        struct vgpu_region *mine = r;
        atomic_cas(&watched[i], &mine, NULL, RELAXED, RELAXED); /* see below */
    }
    /* A check of r in progress holds move_lock: wait for it to end (it is
     * bounded) before the caller frees r. */
    pthread_mutex_lock(&move_lock);
    pthread_mutex_unlock(&move_lock);
}
