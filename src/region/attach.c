/* Attaching a process to the region and leaving it.
 *
 * Every attached process holds a read lock on the LOCK_ATTACH byte for as
 * long as it lives. A process that can take it for writing (without
 * waiting) is therefore alone: it creates, repairs or heals the file, then
 * converts its lock to a read lock. The others take the read lock. Then a
 * slot is claimed (slots.c). No semaphore, no sleep on the way.
 *
 * Only when the read lock cannot be had (an initializer holds the write
 * lock: microseconds, unless it was stopped) or the file is invalid under
 * readers (an initializer died half-way while others waited) does a process
 * poll, with short sleeps, for at most LOCK_WAIT_MS. One waiter at a time
 * (the holder of LOCK_INIT) tries the attach lock meanwhile, so that the
 * others' attempts cannot starve the one that would repair the file. Past
 * the bound, or on any other refusal, a process with a limit enforces it
 * alone (local.c) and rejoins later (failover.c).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "locks.h"
#include "log.h"
#include "region_internal.h"

/* ---- Options ---- */

void vgpu_attach_options_from_env(struct vgpu_attach_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->path = vgpu_env(VGPU_ENV_SHARED_CACHE);
    opts->mode = vgpu_env(VGPU_ENV_REGION_MODE);
    vgpu_config_limits(opts->limits);
    vgpu_config_sm_limits(opts->sm_limits);
}

static uint32_t requested_mode(const struct vgpu_attach_options *opts)
{
    const char *name = opts->mode ? opts->mode : vgpu_env(VGPU_ENV_REGION_MODE);
    int id = mode_id(name);
    if (id < 0) {
        log_warn("VGPU_REGION_MODE=\"%.32s\" is not a mode; using \"default\"",
                 name);
        return MODE_DEFAULT;
    }
    return (uint32_t)id;
}

/* ---- Preparing the file while alone ---- */

static bool hami_core_process_alive(const void *data, size_t size)
{
    /* A file of HAMi-core itself: its processes do not take our locks, so
     * "nobody holds the attach lock" proves nothing; look at its pids. */
    const struct hami_region *h = data;
    if (size < sizeof *h || h->initialized_flag != HAMI_MAGIC ||
        h->procnum <= 0 || h->procnum > VGPU_MAX_SLOTS)
        return false;
    for (int i = 0; i < h->procnum; i++) {
        pid_t pid = h->procs[i].pid;
        if (pid > 0 && pid != getpid() && kill(pid, 0) == 0)
            return true;
    }
    return false;
}

static bool prepare_alone(struct vgpu_region *r,
                          const struct vgpu_attach_options *opts)
{
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        region_refuse("region %s cannot be looked at (%s)", r->path,
                      strerror(errno));
        return false;
    }
    size_t size = (size_t)st.st_size;
    if (size == 0)
        return region_initialize(r->fd, opts, r->want_mode);
    void *data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (data == MAP_FAILED) {
        region_refuse("region %s cannot be mapped (%s)", r->path,
                      strerror(errno));
        return false;
    }
    const char *why = NULL;
    enum validate_result v = region_validate(data, size, &why);
    if (v == FILE_VALID) {
        r->base = data;
        r->hami = data;
        r->ext = region_ext(data);
        r->ops = mode_ops(r->ext->mode);
        region_heal(r);
        r->base = NULL;
        munmap(data, size);
        return true;
    }
    bool foreign = hami_core_process_alive(data, size);
    munmap(data, size);
    if (foreign) {
        region_refuse("region %s: %s, and HAMi-core processes still use it",
                      r->path, why);
        return false;
    }
    log_warn("region %s: %s; no process uses it, so it is recreated",
             r->path, why);
    return region_initialize(r->fd, opts, r->want_mode);
}

/* ---- Attach ---- */

static bool map_valid(struct vgpu_region *r, const char **why)
{
    struct stat st;
    if (fstat(r->fd, &st) != 0)
        return false;
    *why = "file of the wrong size";
    if ((size_t)st.st_size != VGPU_FILE_SIZE)
        return false;
    void *base = region_map(r->fd);
    if (base == NULL)
        return false;
    if (region_validate(base, VGPU_FILE_SIZE, why) != FILE_VALID) {
        munmap(base, VGPU_FILE_SIZE);
        return false;
    }
    r->base = base;
    r->hami = base;
    r->ext = region_ext(base);
    r->ops = mode_ops(r->ext->mode);
    r->file_dev = st.st_dev;
    r->file_ino = st.st_ino;
    return true;
}

/* What one attempt at the attach lock found. */
enum attempt {
    ATTACHED,
    BUSY,    /* an initializer holds the write lock (microseconds, or stopped) */
    INVALID, /* invalid under readers: a creator died half-way, or damage */
    REFUSED,
};

static enum attempt refused_no_locks(struct vgpu_region *r)
{
    region_refuse("region %s: the file system does not support open file "
                  "description locks (fcntl: %s)", r->path, strerror(errno));
    return REFUSED;
}

/* Alone: create, repair or heal, then convert to a read lock (atomic for
 * record locks: nobody can slip in as "alone" between the two). */
static enum attempt initialize_alone(struct vgpu_region *r,
                                     const struct vgpu_attach_options *opts,
                                     const char **why)
{
    bool ready = prepare_alone(r, opts);
    r->holds_attach = byte_lock(r->fd, LOCK_ATTACH, BYTE_READ, false);
    if (ready && r->holds_attach && map_valid(r, why))
        return ATTACHED;
    if (ready)
        region_refuse("region %s: %s", r->path, r->holds_attach ? *why
                      : "the attach lock could not be converted");
    return REFUSED; /* else prepare_alone said why */
}

/* The fast path: two non-blocking lock calls when the file is ready. */
static enum attempt try_attach(struct vgpu_region *r,
                               const struct vgpu_attach_options *opts,
                               const char **why)
{
    enum lock_result w = byte_try(r->fd, LOCK_ATTACH, BYTE_WRITE);
    if (w == LOCK_BROKEN)
        return refused_no_locks(r);
    if (w == LOCK_TAKEN)
        return initialize_alone(r, opts, why);
    enum lock_result rd = byte_try(r->fd, LOCK_ATTACH, BYTE_READ);
    if (rd == LOCK_BROKEN)
        return refused_no_locks(r);
    *why = "another process has held the region's initialization lock for "
           "over 2 s (stopped?)";
    if (rd == LOCK_BUSY)
        return BUSY;
    r->holds_attach = true;
    if (map_valid(r, why))
        return ATTACHED;
    /* Invalid under readers: an initializer died half-way while others
     * waited (one of them repairs it when alone), or damage while in use. */
    byte_unlock(r->fd, LOCK_ATTACH);
    r->holds_attach = false;
    return INVALID;
}

/* The slow path, bounded. While an initializer holds the write lock, poll
 * (it converts to a read lock in microseconds). Once the file was found
 * invalid under readers, one waiter at a time (LOCK_INIT's holder) tries the
 * attach lock, so that the others' read locks cannot starve the one that
 * would repair it. */
static bool attach_waiting(struct vgpu_region *r,
                           const struct vgpu_attach_options *opts,
                           const char **why, enum attempt got)
{
    bool holder = false, repairing = got == INVALID;
    double waited = 0;
    for (int n = 0; (got == BUSY || got == INVALID) && waited < LOCK_WAIT_MS;
         n++) {
        waited += lock_backoff(n);
        if (repairing && !holder) {
            enum lock_result i = byte_try(r->fd, LOCK_INIT, BYTE_WRITE);
            if (i == LOCK_BROKEN) {
                got = refused_no_locks(r);
                break;
            }
            holder = i == LOCK_TAKEN;
            if (!holder && byte_locked_elsewhere(r->fd, LOCK_INIT))
                continue; /* another waiter is at it */
        }
        got = try_attach(r, opts, why);
        repairing = repairing || got == INVALID;
    }
    if (holder)
        byte_unlock(r->fd, LOCK_INIT);
    if (got == BUSY || got == INVALID)
        region_refuse("region %s: %s", r->path, *why);
    return got == ATTACHED;
}

static bool take_attach_lock(struct vgpu_region *r,
                             const struct vgpu_attach_options *opts, bool wait)
{
    const char *why = "unknown";
    enum attempt got = try_attach(r, opts, &why);
    if ((got == BUSY || got == INVALID) && wait)
        return attach_waiting(r, opts, &why, got);
    if (got == BUSY || got == INVALID)
        region_refuse("region %s: %s", r->path, why);
    return got == ATTACHED;
}

static void warn_on_disagreement(struct vgpu_region *r,
                                 const struct vgpu_attach_options *opts)
{
    uint32_t want = r->want_mode;
    if (want != r->ext->mode)
        log_warn("region %s was created in mode \"%s\"; using it instead of "
                 "\"%s\"", r->path, r->ops->name, mode_ops(want)->name);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t file = atomic_load_n(&r->hami->limit[d], RELAXED); /* a warning */
        if (opts->limits[d] != file) {
            log_warn("device %d: limit %llu bytes asked, the region says %llu; "
                     "the region's limit applies", d,
                     (unsigned long long)opts->limits[d],
                     (unsigned long long)file);
            return; /* one line is enough */
        }
    }
}

static bool claim_slot(struct vgpu_region *r)
{
    if (r->ops->slots_enter)
        r->ops->slots_enter(r);
    slots_reclaim_window(r, 8);
    r->slot = slot_claim(r);
    if (r->slot < 0 && vgpu_region_reclaim(r) > 0)
        r->slot = slot_claim(r);
    if (r->ops->slots_exit)
        r->ops->slots_exit(r);
    if (r->slot >= 0)
        return true;
    region_refuse("region %s has no free slot (%d processes attached)",
                  r->path, VGPU_MAX_SLOTS);
    return false;
}

bool region_join_shared(struct vgpu_region *r,
                        const struct vgpu_attach_options *opts, bool wait,
                        bool quiet)
{
    if (quiet)
        region_refusal_set(REFUSAL_QUIET);
    else
        region_refusal_set(region_limits_set(opts) ? REFUSAL_LOCAL
                                                           : REFUSAL_UNLIMITED);
    r->fd = region_open_file(r->path, true);
    if (r->fd < 0)
        return false;
    if (take_attach_lock(r, opts, wait) && claim_slot(r)) {
        atomic_store_n(&r->pid, getpid(), RELAXED); /* published by rejoin */
        if (!quiet)
            warn_on_disagreement(r, opts);
        return true;
    }
    if (r->base != NULL)
        munmap(r->base, VGPU_FILE_SIZE);
    r->base = NULL;
    close(r->fd);
    r->fd = -1;
    r->holds_attach = false;
    r->slot = -1;
    return false;
}

/* Open, lock, map, claim: fills r. Where a limit is configured and the file
 * cannot be used, r gets a process-local region instead. False (after a log
 * line) only without a limit, or without memory. */
bool region_join(struct vgpu_region *r, const struct vgpu_attach_options *opts)
{
    memcpy(r->limits, opts->limits, sizeof r->limits);
    memcpy(r->sm_limits, opts->sm_limits, sizeof r->sm_limits);
    memset(r->own_in, 0, sizeof r->own_in); /* a fresh process holds nothing */
    memset(r->own_out, 0, sizeof r->own_out);
    memset(r->reclaiming, 0, sizeof r->reclaiming); /* nor reclaims */
    r->move_gate = 0;
    atomic_store_n(&r->local, 0, RELAXED); /* no other thread uses r here */
    atomic_store_n(&r->lost, 0, RELAXED);
    bool joined = region_join_shared(r, opts, true, false) ||
                  (region_limits_set(opts) && local_start(r));
    if (joined && region_limits_set(opts))
        region_watch(r);
    return joined;
}

struct vgpu_region *vgpu_region_attach(const struct vgpu_attach_options *opts)
{
    struct vgpu_region *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->slot = -1;
    r->fd = -1;
    const char *path = opts->path ? opts->path : vgpu_env(VGPU_ENV_SHARED_CACHE);
    if (strlen(path) >= sizeof r->path) {
        log_error("region path is too long; running without a limit");
        free(r);
        return NULL;
    }
    strcpy(r->path, path);
    r->want_mode = requested_mode(opts);
    if (!region_join(r, opts)) {
        free(r);
        return NULL;
    }
    lifecycle_track(r);
    truncation_guard_add(r);
    return r;
}
