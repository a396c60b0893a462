/* Opening, checking and initializing the region file. Every way the file can
 * be unusable ends here with one log line saying what follows (region_refuse):
 * an attaching process with a limit enforces it alone (local.c), one without
 * a limit runs unlimited, an inspector (vgpuctl) does not read it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "log.h"
#include "region_internal.h"

/* What follows a refusal in this thread's attach attempt (set by attach.c:
 * rejoin attempts are quiet, they were reported once already). */
static __thread enum refusal refusal = REFUSAL_INSPECT;

void region_refusal_set(enum refusal what)
{
    refusal = what;
}

void region_refuse(const char *fmt, ...)
{
    static const char *const follows[] = {
        [REFUSAL_INSPECT] = "not read",
        [REFUSAL_UNLIMITED] = "running without a limit",
        [REFUSAL_LOCAL] = ("this process enforces its limit alone and "
                           "retries the region every second"),
        [REFUSAL_QUIET] = "",
    };
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (refusal == REFUSAL_QUIET)
        log_debug("%s (still)", what);
    else
        log_error("%s; %s", what, follows[refusal]);
}

static bool acceptable_owner(int fd, const char *path, const struct stat *st,
                             bool create)
{
    if (!S_ISREG(st->st_mode)) {
        region_refuse("region %s is not a regular file", path);
        return false;
    }
    if (st->st_uid != geteuid()) {
        region_refuse("region %s belongs to uid %u, not to this process's uid "
                      "%u, who could change its limit", path,
                      (unsigned)st->st_uid, (unsigned)geteuid());
        return false;
    }
    mode_t open_bits = st->st_mode & (S_IWGRP | S_IWOTH);
    if (open_bits == 0)
        return true;
    /* Ours, but others may write it (a tenant's chmod 666 must not switch
     * the limit off): an attaching process takes the write bits back and
     * uses it; an inspector, which must not change it, refuses it. */
    mode_t fixed = st->st_mode & 07777 & ~open_bits;
    if (create && fchmod(fd, fixed) == 0) {
        log_warn("region %s was writable by others (mode %o); mode set back "
                 "to %o", path, (unsigned)(st->st_mode & 07777),
                 (unsigned)fixed);
        return true;
    }
    region_refuse("region %s is writable by others (mode %o); anyone could "
                  "change the limit", path, (unsigned)(st->st_mode & 07777));
    return false;
}

int region_open_file(const char *path, bool create)
{
    if (!create)
        region_refusal_set(REFUSAL_INSPECT);
    /* O_NOFOLLOW: a symlink planted at the path must not redirect our writes. */
    int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0);
    int fd = open(path, flags, 0600);
    if (fd < 0) {
        int err = errno;
        if (err == ELOOP)
            region_refuse("region %s is a symbolic link", path);
        else if (err == ENOENT && create)
            region_refuse("region %s: its directory does not exist", path);
        else
            region_refuse("region %s cannot be opened (%s)", path,
                          strerror(err));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !acceptable_owner(fd, path, &st, create)) {
        close(fd);
        return -1;
    }
    return fd;
}

void *region_map(int fd)
{
    void *base = mmap(NULL, VGPU_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                      fd, 0);
    if (base == MAP_FAILED) {
        region_refuse("region cannot be mapped (%s)", strerror(errno));
        return NULL;
    }
    return base;
}

/* CUDA_TASK_PRIORITY as HAMi's webhook sets it (0 high, 1 low; HAMi-core
 * writes 1 when it is unset). Its monitor holds a container's launches
 * while one of a lower number runs on the same GPU. */
static int32_t task_priority(void)
{
    const char *text = vgpu_env(VGPU_ENV_TASK_PRIORITY);
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno != 0 || value < INT32_MIN ||
        value > INT32_MAX) {
        log_warn("CUDA_TASK_PRIORITY=\"%.32s\" is not a number; the region "
                 "gets priority 1", text);
        return 1;
    }
    return (int32_t)value;
}

static void write_fresh_region(void *base, const struct vgpu_attach_options *o,
                               uint32_t mode, bool was_empty)
{
    struct hami_region *h = base;
    struct vgpu_ext *e = region_ext(base);
    if (!was_empty) /* a new file reads as zeros already: touch no page */
        memset(base, 0, VGPU_FILE_SIZE);
    h->major_version = HAMI_MAJOR;
    h->minor_version = HAMI_MINOR;
    h->owner_pid = (uint64_t)getpid();
    int devices = o->device_count > 0 && o->device_count <= VGPU_MAX_DEVICES
                      ? o->device_count : VGPU_MAX_DEVICES;
    h->device_num = (uint64_t)devices;
    memcpy(h->limit, o->limits, sizeof h->limit);
    h->priority = task_priority();
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        h->sm_limit[d] = o->sm_limits[d];
    /* As HAMi-core: the compute limit applies (under the default policy)
     * until the monitor says the GPU is not shared. */
    h->utilization_switch = 1;
    memcpy(e->magic, VGPU_EXT_MAGIC, sizeof e->magic);
    e->layout_version = VGPU_LAYOUT_VERSION;
    e->mode = mode;
    e->file_size = VGPU_FILE_SIZE;
    e->creator_pid = (uint64_t)getpid();
    e->device_count = (uint32_t)devices;
}

bool region_initialize(int fd, const struct vgpu_attach_options *opts,
                       uint32_t mode)
{
    struct stat st;
    bool was_empty = fstat(fd, &st) == 0 && st.st_size == 0;
    /* Never shrink below the layout while a monitor may map the old size;
     * set the exact size (extending a HAMi-core file, trimming garbage). */
    if (ftruncate(fd, (off_t)VGPU_FILE_SIZE) != 0) {
        region_refuse("region cannot be sized (%s)", strerror(errno));
        return false;
    }
    void *base = region_map(fd);
    if (base == NULL)
        return false;
    write_fresh_region(base, opts, mode, was_empty);
    struct vgpu_region view = {.base = base, .fd = fd, .hami = base,
                               .ext = region_ext(base), .slot = -1,
                               .ops = mode_ops(mode)};
    if (view.ops->init)
        view.ops->init(&view);
    /* Release: a reader that sees the magic (the monitor included) sees
     * every field written above. */
    atomic_store_n(&view.hami->initialized_flag, HAMI_MAGIC, RELEASE);
    munmap(base, VGPU_FILE_SIZE);
    return true;
}
