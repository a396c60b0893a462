/* The state shared by every process using the simulated GPU. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fakegpu.h"

#define PROC_LOCK_BASE (1ull << 30) /* byte i+base held by proc row i's owner */

static struct fg_state *state;
static int state_fd = -1;
static struct fg_proc *self;
static pid_t self_pid;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t parse_size(const char *s, uint64_t fallback)
{
    if (s == NULL || *s == '\0')
        return fallback;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    switch (*end) {
    case 'k': case 'K': v <<= 10; break;
    case 'm': case 'M': v <<= 20; break;
    case 'g': case 'G': v <<= 30; break;
    case 't': case 'T': v <<= 40; break;
    default: break;
    }
    return v;
}

static void init_devices(struct fg_state *s)
{
    const char *count = getenv("FAKEGPU_DEVICES");
    int n = count ? atoi(count) : 8;
    if (n < 1 || n > FG_MAX_DEVICES)
        n = 8;
    uint64_t memory = parse_size(getenv("FAKEGPU_MEMORY"), 80ull << 30);
    s->device_count = (uint32_t)n;
    for (int i = 0; i < n; i++) {
        struct fg_device *d = &s->dev[i];
        d->total = memory;
        snprintf(d->name, sizeof d->name, "Fake NVIDIA H100 80GB HBM3");
        snprintf(d->uuid, sizeof d->uuid,
                 "GPU-fa4e0000-0000-4000-8000-%012x", 0xfa0000 + i);
        d->pci_bus = 0x18 + i * 0x10;
    }
    s->next_va = 0x7f0000000000ull;
    __atomic_store_n(&s->magic, FG_MAGIC, __ATOMIC_RELEASE); /* publishes the above */
}

static const char *state_path(void)
{
    static char path[512];
    const char *env = getenv("FAKEGPU_STATE");
    if (env && *env)
        return env;
    snprintf(path, sizeof path, "/tmp/fakegpu-%u.state", (unsigned)getuid());
    return path;
}

static void after_fork_child(void)
{
    /* The child shares the parent's open file description and with it the
     * lock on the parent's ledger row: drop it, so the parent's death is
     * seen, and take a row of our own at the next call. */
    if (state_fd >= 0) {
        close(state_fd);
        state_fd = open(state_path(), O_RDWR | O_CLOEXEC);
    }
}

static struct fg_state *map_state(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
    int fd = open(state_path(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fakegpu: cannot open %s: %s\n", state_path(),
                strerror(errno));
        abort();
    }
    flock(fd, LOCK_EX); /* creation only; the kernel drops it if we die */
    struct stat st;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size < sizeof(struct fg_state) &&
        ftruncate(fd, sizeof(struct fg_state)) != 0) {
        fprintf(stderr, "fakegpu: cannot size %s: %s\n", state_path(),
                strerror(errno));
        abort();
    }
    struct fg_state *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE,
                              MAP_SHARED, fd, 0);
    if (s == MAP_FAILED)
        abort();
    if (__atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) != FG_MAGIC)
        init_devices(s);
    flock(fd, LOCK_UN);
    state_fd = fd;
    return s;
}

struct fg_state *fg_state(void)
{
    struct fg_state *s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (s != NULL)
        return s;
    pthread_mutex_lock(&init_lock);
    if (state == NULL)
        __atomic_store_n(&state, map_state(), __ATOMIC_RELEASE);
    pthread_mutex_unlock(&init_lock);
    return state;
}

static bool lock_row(int fd, int i, short type)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET,
                       .l_start = (off_t)(PROC_LOCK_BASE + (uint64_t)i),
                       .l_len = 1};
    return fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

static void free_row(struct fg_state *s, struct fg_proc *p)
{
    for (int d = 0; d < FG_MAX_DEVICES; d++) {
        uint64_t bytes = __atomic_exchange_n(&p->used[d], 0, __ATOMIC_RELAXED);
        if (bytes)
            __atomic_sub_fetch(&s->dev[d].used, bytes, __ATOMIC_RELAXED);
    }
    p->pid = 0;
    __atomic_store_n(&p->busy, 0, __ATOMIC_RELEASE);
}

int fg_reap(void)
{
    /* A row whose lock nobody holds belongs to a dead process: the real
     * driver frees a dead process's memory, so do we. */
    struct fg_state *s = fg_state();
    int reaped = 0;
    for (int i = 0; i < FG_MAX_PROCS; i++) {
        struct fg_proc *p = &s->procs[i];
        if (p == self || !__atomic_load_n(&p->busy, __ATOMIC_ACQUIRE))
            continue;
        if (!lock_row(state_fd, i, F_WRLCK))
            continue;
        if (__atomic_load_n(&p->busy, __ATOMIC_ACQUIRE)) {
            free_row(s, p);
            __atomic_add_fetch(&s->reaped, 1, __ATOMIC_RELAXED);
            reaped++;
        }
        lock_row(state_fd, i, F_UNLCK);
    }
    return reaped;
}

static struct fg_proc *claim_row(struct fg_state *s)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        for (int i = 0; i < FG_MAX_PROCS; i++) {
            struct fg_proc *p = &s->procs[i];
            if (__atomic_load_n(&p->busy, __ATOMIC_ACQUIRE))
                continue;
            if (!lock_row(state_fd, i, F_WRLCK))
                continue;
            if (__atomic_load_n(&p->busy, __ATOMIC_ACQUIRE)) {
                lock_row(state_fd, i, F_UNLCK);
                continue;
            }
            p->pid = (int32_t)getpid();
            __atomic_store_n(&p->busy, 1, __ATOMIC_RELEASE);
            return p;
        }
        fg_reap();
    }
    fprintf(stderr, "fakegpu: more than %d processes\n", FG_MAX_PROCS);
    abort();
}

struct fg_proc *fg_self(void)
{
    pid_t pid = getpid();
    if (__atomic_load_n(&self_pid, __ATOMIC_ACQUIRE) == pid)
        return self;
    struct fg_state *s = fg_state();
    pthread_mutex_lock(&init_lock);
    if (self_pid != pid) {
        self = claim_row(s);
        __atomic_store_n(&self_pid, pid, __ATOMIC_RELEASE); /* publishes self */
    }
    pthread_mutex_unlock(&init_lock);
    return self;
}

static uint64_t capacity(struct fg_device *d)
{
    uint64_t oom_at = parse_size(getenv("FAKEGPU_OOM_AT"), 0);
    return oom_at != 0 && oom_at < d->total ? oom_at : d->total;
}

static bool try_reserve(struct fg_device *d, uint64_t bytes)
{
    uint64_t cap = capacity(d);
    uint64_t used = __atomic_load_n(&d->used, __ATOMIC_RELAXED);
    do {
        if (bytes > cap || used > cap - bytes)
            return false;
    } while (!__atomic_compare_exchange_n(&d->used, &used, used + bytes, true,
                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    uint64_t now = used + bytes, peak = __atomic_load_n(&d->peak, __ATOMIC_RELAXED);
    while (now > peak && !__atomic_compare_exchange_n(&d->peak, &peak, now, true,
                                                      __ATOMIC_RELAXED,
                                                      __ATOMIC_RELAXED))
        ;
    return true;
}

bool fg_reserve(int dev, uint64_t bytes)
{
    struct fg_state *s = fg_state();
    struct fg_proc *me = fg_self();
    struct fg_device *d = &s->dev[dev];
    if (!try_reserve(d, bytes) && !(fg_reap() > 0 && try_reserve(d, bytes)))
        return false;
    /* Release, as the driver's own call is a system call: NVML's reader
     * (acquire) that sees these bytes sees what the caller did before. */
    __atomic_add_fetch(&me->used[dev], bytes, __ATOMIC_RELEASE);
    return true;
}

void fg_release(int dev, uint64_t bytes)
{
    struct fg_state *s = fg_state();
    __atomic_sub_fetch(&fg_self()->used[dev], bytes, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&s->dev[dev].used, bytes, __ATOMIC_RELAXED);
}

uint64_t fg_new_address(uint64_t bytes)
{
    uint64_t span = (bytes + FG_GRANULARITY - 1) / FG_GRANULARITY * FG_GRANULARITY;
    return __atomic_fetch_add(&fg_state()->next_va, span + FG_GRANULARITY,
                              __ATOMIC_RELAXED);
}

/* ---- CUDA_VISIBLE_DEVICES ---- */

static int visible[FG_MAX_DEVICES];
static int visible_count = -1;
static pthread_once_t visible_once = PTHREAD_ONCE_INIT;

static int physical_by_token(struct fg_state *s, const char *tok)
{
    if (strncmp(tok, "GPU-", 4) == 0) {
        for (uint32_t i = 0; i < s->device_count; i++)
            if (strncmp(s->dev[i].uuid, tok, strlen(tok)) == 0)
                return (int)i;
        return -1;
    }
    char *end;
    long v = strtol(tok, &end, 10);
    return (*end == '\0' && v >= 0 && v < (long)s->device_count) ? (int)v : -1;
}

static void parse_visible(void)
{
    struct fg_state *s = fg_state();
    const char *env = getenv("CUDA_VISIBLE_DEVICES");
    int n = 0;
    if (env == NULL) {
        for (uint32_t i = 0; i < s->device_count; i++)
            visible[n++] = (int)i;
    } else {
        /* As the driver: stop at the first entry that names no device. */
        char buf[256];
        snprintf(buf, sizeof buf, "%s", env);
        for (char *tok = strtok(buf, ","); tok && n < FG_MAX_DEVICES;
             tok = strtok(NULL, ",")) {
            int p = physical_by_token(s, tok);
            if (p < 0)
                break;
            visible[n++] = p;
        }
    }
    visible_count = n;
}

int fg_visible_count(void)
{
    pthread_once(&visible_once, parse_visible);
    return visible_count;
}

int fg_physical(int ordinal)
{
    return ordinal >= 0 && ordinal < fg_visible_count() ? visible[ordinal] : -1;
}

/* ---- Fault injection ---- */

bool fg_should_fail(const char *name)
{
    const char *env = getenv("FAKEGPU_FAIL");
    if (env == NULL)
        return false;
    size_t n = strlen(name);
    if (strncmp(env, name, n) != 0 || (env[n] != '\0' && env[n] != ':'))
        return false;
    static long calls;
    long after = env[n] == ':' ? atol(env + n + 1) : 0;
    return __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED) >= after;
}
