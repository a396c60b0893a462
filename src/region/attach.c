/* Attaching a process to the region and leaving it.
 *
 * Every attached process holds a read lock on the LOCK_ATTACH byte for as
 * long as it lives. A process that can take it for writing (without
 * waiting) is therefore alone: it creates, repairs or heals the file, then
 * converts its lock to a read lock. The others take the read lock, waiting
 * at most for those microseconds; the kernel drops a dead holder's lock.
 * Then a slot is claimed (slots.c). No semaphore, no sleep, no retry loop.
 */
#define _GNU_SOURCE
#include <pthread.h>
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

/* ---- Attached handles, so that fork() can detach the child's copies ---- */

#define MAX_HANDLES 16
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vgpu_region *handles[MAX_HANDLES];
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void before_fork(void) { pthread_mutex_lock(&handles_lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&handles_lock); }

static void after_fork_child(void)
{
    /* The child shares the parent's open file description, and with it the
     * parent's locks: drop our reference so the parent's slot dies with the
     * parent. The child claims a slot of its own on its first charge. */
    for (int i = 0; i < MAX_HANDLES; i++) {
        struct vgpu_region *r = handles[i];
        if (r == NULL || r->slot < 0)
            continue;
        close(r->fd);
        r->fd = -1;
        r->slot = -1;
        r->holds_attach = false;
        atomic_store_n(&r->forked, true, RELAXED); /* single-threaded here */
    }
    pthread_mutex_unlock(&handles_lock);
}

static void install_atfork(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

static void remember(struct vgpu_region *r, bool keep)
{
    pthread_mutex_lock(&handles_lock);
    for (int i = 0; i < MAX_HANDLES; i++) {
        if (keep && handles[i] == NULL) {
            handles[i] = r;
            break;
        }
        if (!keep && handles[i] == r)
            handles[i] = NULL;
    }
    pthread_mutex_unlock(&handles_lock);
}

void region_publish_host_pid(int32_t hostpid)
{
    pthread_mutex_lock(&handles_lock);
    for (int i = 0; i < MAX_HANDLES; i++) {
        struct vgpu_region *r = handles[i];
        /* Under handles_lock no slot is released meanwhile. Acquire: pairs
         * with the release in region_rejoin_after_fork, so a rejoined
         * handle's slot is read whole; a fork child's copy is skipped. The
         * store is relaxed: a number for the monitor. */
        if (r != NULL && !atomic_load_n(&r->forked, ACQUIRE) && r->slot >= 0 &&
            r->pid == getpid())
            atomic_store_n(&r->hami->procs[r->slot].hostpid, hostpid, RELAXED);
    }
    pthread_mutex_unlock(&handles_lock);
}

/* ---- Options ---- */

void vgpu_attach_options_from_env(struct vgpu_attach_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->path = vgpu_env(VGPU_ENV_SHARED_CACHE);
    opts->mode = vgpu_env(VGPU_ENV_REGION_MODE);
    vgpu_config_limits(opts->limits);
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
    if (fstat(r->fd, &st) != 0)
        return false;
    size_t size = (size_t)st.st_size;
    if (size == 0)
        return region_initialize(r->fd, opts, r->want_mode);
    void *data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (data == MAP_FAILED)
        return false;
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
        log_error("region %s: %s, and HAMi-core processes still use it; "
                  "running without a limit", r->path, why);
        return false;
    }
    log_warn("region %s: %s; no process uses it, so it is recreated",
             r->path, why);
    return region_initialize(r->fd, opts, r->want_mode);
}

/* ---- Attach ---- */

static bool map_valid(struct vgpu_region *r, bool complain)
{
    struct stat st;
    if (fstat(r->fd, &st) != 0)
        return false;
    const char *why = "file changed size";
    if ((size_t)st.st_size == VGPU_FILE_SIZE) {
        r->base = region_map(r->fd);
        if (r->base == NULL)
            return false;
        if (region_validate(r->base, VGPU_FILE_SIZE, &why) == FILE_VALID) {
            r->hami = r->base;
            r->ext = region_ext(r->base);
            r->ops = mode_ops(r->ext->mode);
            return true;
        }
        munmap(r->base, VGPU_FILE_SIZE);
        r->base = NULL;
    }
    if (complain)
        log_error("region %s: %s, while other processes use it; running "
                  "without a limit", r->path, why);
    return false;
}

static bool become_initializer(struct vgpu_region *r,
                               const struct vgpu_attach_options *opts)
{
    if (!byte_lock(r->fd, LOCK_ATTACH, BYTE_WRITE, false))
        return false;
    bool ready = prepare_alone(r, opts);
    /* Converting write to read is atomic for record locks: nobody can slip
     * in as "alone" between the two. */
    r->holds_attach = byte_lock(r->fd, LOCK_ATTACH, BYTE_READ, false);
    if (!ready || !r->holds_attach)
        r->holds_attach = false;
    return true;
}

static bool join_readers(struct vgpu_region *r)
{
    /* Waits at most while an initializer holds the write lock (microseconds,
     * dropped by the kernel if it dies). */
    r->holds_attach = byte_lock(r->fd, LOCK_ATTACH, BYTE_READ, true);
    return r->holds_attach && map_valid(r, false);
}

/* Slow path, when the file was found invalid after waiting: its initializer
 * died half-way (or it was damaged). Repairers queue on LOCK_INIT so that
 * exactly one recreates it; the fast path never touches LOCK_INIT. */
static bool repair(struct vgpu_region *r, const struct vgpu_attach_options *opts)
{
    byte_unlock(r->fd, LOCK_ATTACH);
    r->holds_attach = false;
    if (!byte_lock(r->fd, LOCK_INIT, BYTE_WRITE, true))
        return false;
    if (!become_initializer(r, opts))
        r->holds_attach = byte_lock(r->fd, LOCK_ATTACH, BYTE_READ, true);
    bool ok = r->holds_attach && map_valid(r, true);
    byte_unlock(r->fd, LOCK_INIT);
    return ok;
}

static bool take_attach_lock(struct vgpu_region *r,
                             const struct vgpu_attach_options *opts)
{
    if (become_initializer(r, opts))
        return r->holds_attach && map_valid(r, true);
    if (join_readers(r))
        return true;
    return repair(r, opts);
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

/* Open, lock, map, claim: fills r; false after a log line. */
static bool join(struct vgpu_region *r, const struct vgpu_attach_options *opts)
{
    r->fd = region_open_file(r->path, true);
    if (r->fd < 0)
        return false;
    if (take_attach_lock(r, opts)) {
        if (r->ops->slots_enter)
            r->ops->slots_enter(r);
        slots_reclaim_window(r, 8);
        r->slot = slot_claim(r);
        if (r->slot < 0 && vgpu_region_reclaim(r) > 0)
            r->slot = slot_claim(r);
        if (r->ops->slots_exit)
            r->ops->slots_exit(r);
        if (r->slot >= 0) {
            r->pid = getpid();
            return true;
        }
        log_error("region %s has no free slot (%d processes attached); "
                  "running without a limit", r->path, VGPU_MAX_SLOTS);
    }
    if (r->base != NULL)
        munmap(r->base, VGPU_FILE_SIZE);
    r->base = NULL;
    close(r->fd);
    r->fd = -1;
    r->holds_attach = false;
    return false;
}

struct vgpu_region *vgpu_region_attach(const struct vgpu_attach_options *opts)
{
    pthread_once(&atfork_once, install_atfork);
    struct vgpu_region *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->slot = -1;
    const char *path = opts->path ? opts->path : vgpu_env(VGPU_ENV_SHARED_CACHE);
    if (strlen(path) >= sizeof r->path) {
        log_error("region path is too long; running without a limit");
        free(r);
        return NULL;
    }
    strcpy(r->path, path);
    r->want_mode = requested_mode(opts);
    if (!join(r, opts)) {
        free(r);
        return NULL;
    }
    warn_on_disagreement(r, opts);
    remember(r, true);
    return r;
}

bool region_rejoin_after_fork(struct vgpu_region *r)
{
    struct vgpu_attach_options opts;
    memset(&opts, 0, sizeof opts);
    memcpy(opts.limits, r->hami->limit, sizeof opts.limits);
    munmap(r->base, VGPU_FILE_SIZE);
    r->base = NULL;
    bool joined = join(r, &opts);
    /* Release: threads that read forked == false (acquire, api.c) see the
     * slot and mapping set up above. Failed: they run unlimited. */
    atomic_store_n(&r->forked, false, RELEASE);
    return joined;
}

void vgpu_region_release_slot(struct vgpu_region *r)
{
    if (r == NULL || r->slot < 0)
        return;
    if (r->ops->slots_enter)
        r->ops->slots_enter(r);
    pthread_mutex_lock(&handles_lock); /* against region_publish_host_pid */
    slot_release(r);
    pthread_mutex_unlock(&handles_lock);
    if (r->ops->slots_exit)
        r->ops->slots_exit(r);
}

void vgpu_region_detach(struct vgpu_region *r)
{
    if (r == NULL)
        return;
    remember(r, false);
    vgpu_region_release_slot(r);
    if (r->fd >= 0)
        close(r->fd); /* drops our attach lock */
    if (r->base != NULL)
        munmap(r->base, VGPU_FILE_SIZE);
    free(r);
}
