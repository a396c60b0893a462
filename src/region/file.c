/* Opening, checking and initializing the region file. Every way the file can
 * be unusable ends here with one log line; the caller then runs unlimited. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "log.h"
#include "region_internal.h"

/* What follows a refusal, at the end of its one log line: attaching
 * processes run unlimited; inspectors (vgpuctl) just stop. */
static const char *consequence(bool create)
{
    return create ? "running without a limit" : "not read";
}

static bool acceptable_owner(const char *path, const struct stat *st, bool create)
{
    if (!S_ISREG(st->st_mode)) {
        log_error("region %s is not a regular file; %s", path, consequence(create));
        return false;
    }
    if (st->st_uid != geteuid()) {
        log_error("region %s belongs to uid %u, not to this process's uid %u; %s",
                  path, (unsigned)st->st_uid, (unsigned)geteuid(),
                  consequence(create));
        return false;
    }
    if (st->st_mode & S_IWOTH) {
        log_error("region %s is world-writable (mode %o); anyone could change "
                  "the limit, so it is not used; %s", path,
                  (unsigned)(st->st_mode & 07777), consequence(create));
        return false;
    }
    return true;
}

int region_open_file(const char *path, bool create)
{
    /* O_NOFOLLOW: a symlink planted at the path must not redirect our writes. */
    int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0);
    int fd = open(path, flags, 0600);
    if (fd < 0) {
        int err = errno;
        if (err == ELOOP)
            log_error("region %s is a symbolic link; refused, %s", path,
                      consequence(create));
        else if (err == ENOENT && create)
            log_error("region %s: its directory does not exist; %s", path,
                      consequence(create));
        else
            log_error("region %s cannot be opened (%s); %s", path,
                      strerror(err), consequence(create));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !acceptable_owner(path, &st, create)) {
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
        log_error("region cannot be mapped (%s); running without a limit",
                  strerror(errno));
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
        log_error("region cannot be sized (%s); running without a limit",
                  strerror(errno));
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
