/* The locking machinery of HAMi-core that the seed's modes keep. */
#define _GNU_SOURCE
#include "seed.h"

#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../atomic.h"
#include "../../log.h"

_Static_assert(sizeof(sem_t) <= sizeof(((struct hami_region *)0)->sem),
               "sem_t fits HAMi's sem field");

/* HAMi-core's: 10 s, 30 times. */
const struct sem_policy seed_sem_legacy = {
    30, {10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000,
         10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000,
         10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000, 10000}};

const struct lockfile_policy seed_lockfile_legacy = {20, 1000, 5000, 0};

static sem_t *sem_of(struct vgpu_region *r)
{
    return (sem_t *)(void *)r->hami->sem;
}

void seed_sem_init(struct vgpu_region *r)
{
    sem_init(sem_of(r), 1, 1);
    atomic_store_n(&r->hami->owner_pid, 0, RELAXED);
}

static struct timespec deadline_in(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* sem_timedwait's clock */
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

bool seed_sem_lock(struct vgpu_region *r, const struct sem_policy *p)
{
    for (int i = 0; i < p->tries; i++) {
        struct timespec ts = deadline_in(p->wait_ms[i]);
        int rc;
        while ((rc = sem_timedwait(sem_of(r), &ts)) != 0 && errno == EINTR)
            ;
        if (rc == 0) {
            /* Relaxed: a hint for the next waiter's dead-holder check. */
            atomic_store_n(&r->hami->owner_pid, (uint64_t)getpid(), RELAXED);
            return true;
        }
        /* HAMi-core's repair: a holder that died will never post. */
        pid_t owner = (pid_t)atomic_load_n(&r->hami->owner_pid, RELAXED);
        if (owner > 0 && kill(owner, 0) != 0 && errno == ESRCH) {
            log_warn("semaphore holder %d is dead; releasing it", (int)owner);
            atomic_store_n(&r->hami->owner_pid, 0, RELAXED);
            sem_post(sem_of(r));
        }
    }
    log_warn("semaphore not obtained after %d tries; going on without it",
             p->tries);
    return false;
}

void seed_sem_unlock(struct vgpu_region *r)
{
    atomic_store_n(&r->hami->owner_pid, 0, RELAXED);
    sem_post(sem_of(r));
}

/* In HAMi's lock directory, never next to the region: the node monitor
 * refuses a container directory with a third file whose name ends in
 * ".cache" or holds "libvgpu.so" (older monitors: any third file), and
 * maps the first name ending in ".cache". Named for the region's inode so
 * that regions do not share it. */
#define LOCK_DIR "/tmp/vgpulock"

static void lockfile_path(struct vgpu_region *r, char *buf, size_t n)
{
    struct stat st;
    if (fstat(r->fd, &st) != 0)
        memset(&st, 0, sizeof st);
    snprintf(buf, n, LOCK_DIR "/vgpu-%llx-%llx.lock",
             (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

bool seed_lockfile_take(struct vgpu_region *r, const struct lockfile_policy *p)
{
    char path[128];
    lockfile_path(r, path, sizeof path);
    if (mkdir(LOCK_DIR, 0777) != 0 && errno != EEXIST) {
        log_warn("%s cannot be created (%s); going on without the start-up "
                 "lock", LOCK_DIR, strerror(errno));
        return false;
    }
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    if (p->jitter_max_ms > 0)
        sleep_ms(rand_r(&seed) % (p->jitter_max_ms + 1));
    for (int i = 0; i < p->tries; i++) {
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd >= 0) {
            close(fd);
            /* HAMi-core detects the host PID here, creating a context while
             * it holds the lock; benchmarks model that with this delay. */
            sleep_ms(atoi(vgpu_env(VGPU_ENV_LEGACY_WORK)));
            return true;
        }
        int span = p->sleep_max_ms - p->sleep_min_ms + 1;
        sleep_ms(p->sleep_min_ms + rand_r(&seed) % span);
    }
    log_warn("start-up lock %s still held after %d tries; going on", path,
             p->tries);
    return false;
}

void seed_lockfile_drop(struct vgpu_region *r)
{
    char path[128];
    lockfile_path(r, path, sizeof path);
    unlink(path);
}

uint64_t region_slots_sum(const struct vgpu_region *r, int dev)
{
    uint64_t sum = 0;
    int n = atomic_load_n(&r->hami->procnum, RELAXED);
    for (int i = 0; i < n && i < VGPU_MAX_SLOTS; i++)
        sum += atomic_load_n(&r->hami->procs[i].used[dev].total, RELAXED);
    return sum;
}

/* What this thread obtained in seed_slots_enter (slots are claimed and
 * released one thread at a time per attach or detach). */
static __thread bool slots_locked, lockfile_held;

void seed_slots_enter(struct vgpu_region *r, const struct sem_policy *sem,
                      const struct lockfile_policy *lockfile)
{
    lockfile_held = lockfile != NULL && seed_lockfile_take(r, lockfile);
    slots_locked = seed_sem_lock(r, sem);
}

void seed_slots_exit(struct vgpu_region *r)
{
    if (slots_locked)
        seed_sem_unlock(r);
    if (lockfile_held)
        seed_lockfile_drop(r);
    slots_locked = lockfile_held = false;
}
