/* The process's life in the region: which handles it holds, what a fork
 * child does with them, and how exit gives the slots back.
 *
 * Fork. A child shares its parent's open file description of the region,
 * and with it the parent's slot lock. It must never charge to, release or
 * unlock the parent's slot: it claims a slot of its own on its first
 * charge. A fork is detected on the hot path with one load: this page is
 * marked MADV_WIPEONFORK, so in any child (fork(), or the raw system call
 * that runs no atfork handler) it reads 0 instead of the owner's pid.
 * Without MADV_WIPEONFORK (Linux < 4.14) getpid() is compared instead.
 * The atfork child handler also drops the child's reference to the
 * parent's file description at once, so that a child that never uses the
 * GPU does not keep the parent's slot lock alive after the parent dies.
 *
 * Exit. Other threads keep running while exit() runs the destructors.
 * Each thread says, in a record of its own, through which handle it is
 * charging or uncharging right now (the gate). Closing a handle refuses
 * new operations (charges fail, uncharges are dropped: the slot they would
 * touch is being given back) and waits, a bounded time, until no record
 * names the handle. Only then is the slot emptied and released. If an
 * operation does not finish (a thread stopped inside one), the slot is
 * left to the crash path: the kernel drops its lock when the process dies
 * and peers reclaim it.
 *
 * The gate costs the hot path two plain stores and a load, no atomic
 * read-modify-write: an operation stores its record, then loads the
 * handle's closing flag; the closer stores the flag, then loads every
 * record. For one of them to see the other, each needs a full barrier
 * between its store and its load (Dekker). The closer pays for both: its
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) runs a full barrier on
 * every running thread of the process, so the operations need only a
 * compiler barrier. Where membarrier is not available, both sides use
 * sequentially consistent accesses instead (a locked store per operation).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "locks.h"
#include "log.h"
#include "region_internal.h"

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

#define EXIT_WAIT_MS 1000
#define HEAL_WAIT_MS 10

/* r->closing: GATE_RUNNING, GATE_SHUT (exit: for good), GATE_PAUSED (a
 * heal: operations wait until it is running again). */
enum { GATE_RUNNING = 0, GATE_SHUT = 1, GATE_PAUSED = 2 };

/* ---- The owner page: which process this memory image belongs to ---- */

struct owner_page {
    int32_t pid;          /* 0 in a fork child: the page is wiped */
};

static struct owner_page *owner;      /* NULL: no MADV_WIPEONFORK here */
static pthread_once_t owner_once = PTHREAD_ONCE_INIT;
static int membarrier_ok;             /* the closer's barrier covers ours */

static void membarrier_init(void)
{
    int ok = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                     0, 0) == 0;
    atomic_store_n(&membarrier_ok, ok, RELAXED); /* a flag, set before use */
}

static void owner_init(void)
{
    membarrier_init();
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return;
    if (madvise(p, 4096, MADV_WIPEONFORK) != 0) {
        munmap(p, 4096);
        return; /* fall back to getpid() */
    }
    owner = p;
}

static pid_t owner_pid(void)
{
    return owner != NULL ? atomic_load_n(&owner->pid, RELAXED) : getpid();
}

/* Relaxed: pairs with nothing; r->pid's release (below) publishes. */
static void owner_set(pid_t pid)
{
    if (owner != NULL && atomic_load_n(&owner->pid, RELAXED) != pid)
        atomic_store_n(&owner->pid, pid, RELAXED);
}

static bool forked(const struct vgpu_region *r)
{
    /* Acquire: a thread that sees the pid a rejoin stored sees the slot,
     * fd and mapping the rejoin set up (release in rejoin). */
    return atomic_load_n(&r->pid, ACQUIRE) != owner_pid();
}

static void records_forget(const struct vgpu_region *r);

/* ---- Attached handles, for fork and exit ---- */

#define MAX_HANDLES 16
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vgpu_region *handles[MAX_HANDLES];
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Who is rejoining after a fork: the pid of its process, 0 if nobody.
 * A pid lock, not a mutex: in a raw fork child a parent thread that held
 * it does not exist, and its pid tells so. */
static int32_t rejoining;


static void after_fork_child(void)
{
    /* Single-threaded here. Locks other parent threads may have held are
     * made anew, never taken. (handles_lock is not taken before the fork:
     * the watcher thread takes it under its own lock, which failover.c
     * takes before the fork.) The handles array changes by single pointer
     * stores, so it is whole. */
    pthread_mutex_init(&handles_lock, NULL);
    atomic_store_n(&rejoining, 0, RELAXED);
    records_forget(NULL);
    for (int i = 0; i < MAX_HANDLES; i++) {
        struct vgpu_region *r = handles[i];
        if (r == NULL)
            continue;
        if (r->fd >= 0)
            close(r->fd); /* our reference only: the parent keeps its lock */
        r->fd = -1;
        /* -1 is no process's pid: forked, whether the page was wiped or not. */
        atomic_store_n(&r->pid, -1, RELAXED);
    }
}

static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

void lifecycle_track(struct vgpu_region *r)
{
    pthread_once(&owner_once, owner_init);
    pthread_once(&atfork_once, install_atfork);
    r->tracked = true;
    atomic_store_n(&r->closing, 0, RELAXED); /* not shared yet */
    owner_set(getpid());
    atomic_store_n(&r->pid, getpid(), RELEASE); /* r is not shared yet */
    pthread_mutex_lock(&handles_lock);
    for (int i = 0; i < MAX_HANDLES; i++)
        if (handles[i] == NULL) {
            handles[i] = r;
            break;
        }
    pthread_mutex_unlock(&handles_lock);
}

static void untrack(struct vgpu_region *r)
{
    pthread_mutex_lock(&handles_lock);
    for (int i = 0; i < MAX_HANDLES; i++)
        if (handles[i] == r)
            handles[i] = NULL;
    pthread_mutex_unlock(&handles_lock);
}

/* ---- A fork child's first use: a slot of its own ---- */

static void rejoin_lock(void)
{
    int32_t me = (int32_t)getpid();
    for (;;) {
        int32_t cur = 0;
        /* Acquire: see what the previous rejoiner wrote to the handle. */
        if (atomic_cas(&rejoining, &cur, me, ACQUIRE, RELAXED))
            return;
        if (cur != me && cur != 0 &&
            atomic_cas(&rejoining, &cur, me, ACQUIRE, RELAXED))
            return; /* held by a thread of the parent, which is not here */
        sched_yield(); /* a sibling thread is rejoining: milliseconds */
    }
}

static void rejoin_unlock(void)
{
    atomic_store_n(&rejoining, 0, RELEASE); /* publishes the handle's state */
}

static void rejoin(struct vgpu_region *r)
{
    rejoin_lock();
    if (forked(r)) {
        struct vgpu_attach_options opts;
        memset(&opts, 0, sizeof opts);
        if (r->base != NULL) {
            memcpy(opts.limits, r->hami->limit, sizeof opts.limits);
            for (int d = 0; d < VGPU_MAX_DEVICES; d++)
                opts.sm_limits[d] = vgpu_region_sm_limit(r, d);
            munmap(r->base, VGPU_FILE_SIZE);
        }
        r->base = NULL;
        if (r->fd >= 0)
            close(r->fd); /* raw fork: the parent's file description */
        r->fd = -1;
        r->slot = -1;
        r->holds_attach = false;
        /* No thread of this process is inside r's gate (all see a forked
         * handle and wait above): records the parent's threads left naming
         * r are cleared, and a parent's exit that had begun is not ours. */
        records_forget(r);
        atomic_store_n(&r->closing, 0, RELAXED);
        atomic_store_n(&r->healing, 0, RELAXED); /* a parent thread's */
        membarrier_init(); /* a new process: register it again */
        if (!region_join(r, &opts))
            log_error("fork child: could not claim a slot of its own in %s",
                      r->path);
        pid_t me = getpid();
        owner_set(me);
        /* Release: publishes the slot, fd and mapping set up above (acquire
         * in forked()). Stored even on failure: no retry per charge. */
        atomic_store_n(&r->pid, me, RELEASE);
    }
    rejoin_unlock();
}

/* ---- The gate around every charge and uncharge ---- */

/* One per thread that ever charged; never freed, reused after the thread
 * ends. in_op: the handle the thread is operating through, or NULL. */
struct thread_rec {
    struct vgpu_region *in_op;
    int depth;                 /* nested operations (owner thread only) */
    int owned;                 /* 1 while a thread uses this record */
    struct thread_rec *next;   /* immutable once published */
};

static struct thread_rec *records;   /* push-only list */
static __thread struct thread_rec *self __attribute__((tls_model("initial-exec")));
static pthread_key_t record_key;
static pthread_once_t record_key_once = PTHREAD_ONCE_INIT;

static void record_release(void *p)
{
    struct thread_rec *t = p;
    self = NULL; /* a later call in this thread's end takes a record anew */
    /* Release: the next owner (acquire in record_claim) starts after us. */
    atomic_store_n(&t->owned, 0, RELEASE);
}

static void record_key_init(void)
{
    pthread_key_create(&record_key, record_release);
}

static struct thread_rec *record_claim(void)
{
    pthread_once(&record_key_once, record_key_init);
    struct thread_rec *t;
    /* Acquire: pairs with the release of the push below. */
    for (t = atomic_load_n(&records, ACQUIRE); t != NULL; t = t->next) {
        int free_rec = 0;
        /* Acquire: pairs with record_release. */
        if (atomic_cas(&t->owned, &free_rec, 1, ACQUIRE, RELAXED))
            break;
    }
    if (t == NULL) {
        t = calloc(1, sizeof *t);
        if (t == NULL)
            return NULL;
        t->owned = 1;
        t->next = atomic_load_n(&records, RELAXED);
        /* Release: publishes the record's fields with it. */
        while (!atomic_cas(&records, &t->next, t, RELEASE, RELAXED))
            ;
    }
    pthread_setspecific(record_key, t);
    self = t;
    return t;
}

/* In a fork child: the records of the parent's threads (which do not
 * exist here) that name r (NULL: any handle, in the atfork handler, where
 * the child has one thread) name nothing. */
static void records_forget(const struct vgpu_region *r)
{
    for (struct thread_rec *t = atomic_load_n(&records, ACQUIRE); t != NULL;
         t = t->next) {
        if (r != NULL && atomic_load_n(&t->in_op, RELAXED) != r)
            continue; /* (a handle's own flag) */
        atomic_store_n(&t->in_op, NULL, RELAXED); /* nothing runs in r */
    }
}

/* The two halves of the Dekker pair (see the top). With membarrier, plain
 * (relaxed) accesses and a compiler barrier between them; without it,
 * sequentially consistent ones, whose single total order does the same. */
static inline void record_set(struct thread_rec *t, struct vgpu_region *r)
{
    if (atomic_load_n(&membarrier_ok, RELAXED)) { /* a flag */
        atomic_store_n(&t->in_op, r, RELAXED);
        __atomic_signal_fence(__ATOMIC_SEQ_CST); /* the closer's membarrier */
    } else {
        atomic_store_n(&t->in_op, r, __ATOMIC_SEQ_CST);
    }
}

static inline int closing(struct vgpu_region *r)
{
    if (atomic_load_n(&membarrier_ok, RELAXED)) /* a flag */
        return atomic_load_n(&r->closing, RELAXED);
    return atomic_load_n(&r->closing, __ATOMIC_SEQ_CST);
}

enum gate lifecycle_enter(struct vgpu_region *r)
{
    if (r == NULL)
        return GATE_NO_SLOT;
    if (__builtin_expect(forked(r), 0)) {
        if (!r->tracked)
            return GATE_NO_SLOT; /* an inspector's handle: never charges */
        rejoin(r);
    }
    struct thread_rec *t = self;
    if (__builtin_expect(t == NULL, 0) && (t = record_claim()) == NULL)
        return GATE_CLOSED; /* out of memory: refuse, never run unguarded */
    for (;;) {
        if (t->depth++ == 0)
            record_set(t, r);
        int state = closing(r);
        if (state == GATE_RUNNING)
            break;
        lifecycle_leave(r);
        if (state == GATE_SHUT || t->depth > 0)
            return GATE_CLOSED; /* (nested in a paused operation: refuse) */
        sched_yield(); /* paused: a heal takes microseconds */
    }
    /* Relaxed: a move (failover.c) may change it; its own gate orders the
     * rest. */
    if (atomic_load_n(&r->slot, RELAXED) < 0) {
        lifecycle_leave(r);
        return GATE_NO_SLOT;
    }
    return GATE_OPEN;
}

void lifecycle_leave(struct vgpu_region *r)
{
    (void)r;
    struct thread_rec *t = self;
    /* Release: this operation's slot and counter writes happen before a
     * closer that reads the record empty (acquire in close_gate). */
    if (--t->depth == 0)
        atomic_store_n(&t->in_op, NULL, RELEASE);
}

static bool operations_in(struct vgpu_region *r)
{
    for (struct thread_rec *t = atomic_load_n(&records, ACQUIRE); t != NULL;
         t = t->next)
        /* Seq_cst: see close_gate; it is also an acquire, pairing with
         * lifecycle_leave's release. */
        if (atomic_load_n(&t->in_op, __ATOMIC_SEQ_CST) == r)
            return true;
    return false;
}

static void pause_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Set the gate to state (GATE_SHUT or GATE_PAUSED), then wait for the
 * operations in progress, at most wait_ms; false if they did not finish. */
static bool close_gate(struct vgpu_region *r, int state, int wait_ms)
{
    /* Seq_cst: the other half of record_set/closing's total order where
     * membarrier is missing; with it, membarrier orders this store before
     * the loads of the records, on every thread. If that call failed,
     * operations that saw no flag may run unseen: leave the slot be. */
    if (state == GATE_SHUT) {
        atomic_store_n(&r->closing, GATE_SHUT, __ATOMIC_SEQ_CST);
    } else {
        int running = GATE_RUNNING; /* never reopen a gate shut by exit */
        if (!atomic_cas(&r->closing, &running, state, __ATOMIC_SEQ_CST,
                        RELAXED))
            return false;
    }
    if (atomic_load_n(&membarrier_ok, RELAXED) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
        return false;
    for (int i = 0; i < 1000 + wait_ms; i++) {
        if (!operations_in(r))
            return true;
        if (i < 1000)
            sched_yield(); /* operations take nanoseconds */
        else
            pause_ms(1);
    }
    return false;
}

static void reopen_gate(struct vgpu_region *r)
{
    int paused = GATE_PAUSED;
    /* Release: what the heal wrote is seen by operations that resume (the
     * acquire of their record/flag pair). An exit that shut the gate
     * meanwhile keeps it shut. */
    atomic_cas(&r->closing, &paused, GATE_RUNNING, RELEASE, RELAXED);
}

/* ---- Healing while alive ---- */

bool lifecycle_heal_alone(struct vgpu_region *r)
{
    if (r == NULL || !r->ops->device_counters || forked(r) ||
        atomic_load_n(&r->slot, RELAXED) < 0 || /* exit may release it */
        atomic_load_n(&r->local, RELAXED) || /* local accounting: no peers */
        (self != NULL && self->depth > 0))
        return false;
    /* One thread of the process at a time: the lock below is the open file
     * description's, shared by all of them. Seq_cst: an exit that shuts
     * the gate and then reads healing 0 (heal_finished) comes before this
     * in the total order, so close_gate below finds the gate shut; it is
     * also an acquire of what the previous healer wrote (its release). */
    int idle = 0;
    if (!atomic_cas(&r->healing, &idle, 1, __ATOMIC_SEQ_CST, RELAXED))
        return false;
    /* Write on the attach byte, converted from our read lock without
     * waiting: granted only while no other process is attached (each holds
     * a read lock for life). Attachers wait meanwhile: microseconds. */
    bool healed = false;
    /* Inside the move gate (failover.c): the file, its fd and our slot
     * stay as they are until we are done; one moved already is local. */
    region_op_enter(r);
    if (!atomic_load_n(&r->local, RELAXED) && /* relaxed: set under the gate */
        byte_lock(r->fd, LOCK_ATTACH, BYTE_WRITE, false)) {
        if (close_gate(r, GATE_PAUSED, HEAL_WAIT_MS))
            healed = region_heal_alive(r);
        reopen_gate(r);
        if (!byte_lock(r->fd, LOCK_ATTACH, BYTE_READ, false)) /* atomic */
            log_error("region %s: attach lock not taken back", r->path);
    }
    region_op_exit(r);
    atomic_store_n(&r->healing, 0, RELEASE);
    return healed;
}

/* After the gate is shut: wait, at most wait_ms, for a heal in progress
 * on another thread (it reads and writes our slot's totals, which the
 * release empties and gives back); false if it did not finish. A heal
 * that starts later finds the gate shut and does nothing. */
static bool heal_finished(struct vgpu_region *r, int wait_ms)
{
    for (int i = 0; i < 1000 + wait_ms; i++) {
        /* Seq_cst: after close_gate's store in the total order (see
         * lifecycle_heal_alone); an acquire of the healer's writes. */
        if (atomic_load_n(&r->healing, __ATOMIC_SEQ_CST) == 0)
            return true;
        if (i < 1000)
            sched_yield(); /* a heal takes microseconds */
        else
            pause_ms(1);
    }
    return false;
}

/* ---- Leaving ---- */

/* With handles_lock held (against region_publish_host_pid). */
static void release_locked(struct vgpu_region *r)
{
    if (r == NULL || !r->tracked)
        return;
    /* getpid() too, off the hot path: where MADV_WIPEONFORK is accepted
     * but not honoured (qemu-user), a raw fork child still never releases
     * its parent's slot. */
    if (forked(r) || atomic_load_n(&r->pid, ACQUIRE) != getpid()) {
        /* A fork child that never charged: the slot is the parent's. Drop
         * our reference to its file description, touch nothing else. */
        atomic_store_n(&r->closing, GATE_SHUT, RELAXED); /* nothing to order */
        if (r->fd >= 0)
            close(r->fd);
        r->fd = -1;
        r->slot = -1;
        return;
    }
    if (!close_gate(r, GATE_SHUT, EXIT_WAIT_MS) || !heal_finished(r, EXIT_WAIT_MS)) {
        log_warn("exit: a thread is still charging after %d ms; slot %d is "
                 "reclaimed after this process ends", EXIT_WAIT_MS, r->slot);
        return;
    }
    if (r->slot < 0)
        return;
    if (r->ops->slots_enter)
        r->ops->slots_enter(r); /* the mode's slot-table lock, if any */
    slot_release(r);
    if (r->ops->slots_exit)
        r->ops->slots_exit(r);
}

void vgpu_region_release_slot(struct vgpu_region *r)
{
    pthread_mutex_lock(&handles_lock);
    release_locked(r);
    pthread_mutex_unlock(&handles_lock);
}

bool lifecycle_exited(struct vgpu_region *r)
{
    /* Relaxed: flags, final once set; exit sets them under handles_lock. */
    return atomic_load_n(&r->closing, RELAXED) == GATE_SHUT ||
           atomic_load_n(&r->slot, RELAXED) < 0;
}

bool lifecycle_hold_exit(struct vgpu_region *r)
{
    /* Try only: exit holds handles_lock while it waits (at most a second)
     * for operations, which may wait on the move's gate. */
    if (pthread_mutex_trylock(&handles_lock) != 0)
        return false;
    /* Exit writes both flags under handles_lock, which we hold. */
    if (lifecycle_exited(r)) {
        pthread_mutex_unlock(&handles_lock);
        return false;
    }
    return true;
}

void lifecycle_allow_exit(void)
{
    pthread_mutex_unlock(&handles_lock);
}

void region_publish_host_pid(int32_t hostpid)
{
    pthread_mutex_lock(&handles_lock);
    for (int i = 0; i < MAX_HANDLES; i++) {
        struct vgpu_region *r = handles[i];
        /* Under handles_lock no slot is released meanwhile. forked() is an
         * acquire, pairing with the release in rejoin, so a rejoined
         * handle's slot is read whole; a fork child's copy is skipped. The
         * store is relaxed: a number for the monitor. */
        if (r != NULL && !forked(r) && r->slot >= 0)
            atomic_store_n(&r->hami->procs[r->slot].hostpid, hostpid, RELAXED);
    }
    pthread_mutex_unlock(&handles_lock);
}

void vgpu_region_detach(struct vgpu_region *r)
{
    if (r == NULL)
        return;
    if (r->tracked) {
        untrack(r);
        truncation_guard_remove(r);
        region_unwatch(r);
        vgpu_region_release_slot(r);
    }
    if (r->fd >= 0)
        close(r->fd); /* drops our attach lock */
    if (r->base != NULL)
        munmap(r->base, VGPU_FILE_SIZE);
    free(r);
}

/* At exit, every slot this process holds goes back (the driver frees the
 * process's memory then too). The mappings stay: other threads may still
 * be inside a hook until the kernel stops them. */
__attribute__((destructor)) static void release_at_exit(void)
{
    pthread_mutex_lock(&handles_lock);
    for (int i = 0; i < MAX_HANDLES; i++)
        if (handles[i] != NULL)
            release_locked(handles[i]);
    pthread_mutex_unlock(&handles_lock);
}
