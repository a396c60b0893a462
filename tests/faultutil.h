/* Helpers of the file-fault tests (issue 10): processes that attach with a
 * limit, signal each other through pipes, and wait for a condition with no
 * time limit of their own (the test's timeout is the bound: a hang fails). */
#ifndef VGPU_FAULTUTIL_H
#define VGPU_FAULTUTIL_H

#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>

#include "testutil.h"
#include "vgpu/region.h"

#define MiB (1ull << 20)

static inline struct vgpu_region *attach_limited(const char *path, uint64_t limit)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.limits[0] = limit;
    return vgpu_region_attach(&o);
}

/* Poll cond every 10 ms until it holds. */
#define WAIT_UNTIL(cond)                                                       \
    do {                                                                       \
        while (!(cond))                                                        \
            usleep(10000);                                                     \
    } while (0)

static inline void put_byte(int fd, char c)
{
    CHECK(write(fd, &c, 1) == 1, "pipe write");
}

static inline char get_byte(int fd)
{
    char c = 0;
    CHECK(read(fd, &c, 1) == 1, "pipe read");
    return c;
}

/* Bytes charged on device 0 in the region file at path, as an inspector
 * sees it; UINT64_MAX when it cannot be read (missing, invalid). */
static inline uint64_t file_used(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return UINT64_MAX;
    struct vgpu_region *r = vgpu_region_open_existing(path);
    if (r == NULL)
        return UINT64_MAX;
    uint64_t used = vgpu_region_used(r, 0);
    vgpu_region_detach(r);
    return used;
}

/* The limit holds for r: `room` more bytes fit, one more does not. */
static inline void check_room(struct vgpu_region *r, uint64_t room, const char *what)
{
    if (room > 0)
        CHECK(vgpu_region_try_charge(r, 0, room, VGPU_CHARGE_DATA),
              "%s: %llu bytes of room", what, (unsigned long long)room);
    CHECK(!vgpu_region_try_charge(r, 0, 1, VGPU_CHARGE_DATA),
          "%s: the limit holds", what);
    if (room > 0)
        vgpu_region_uncharge(r, 0, room, VGPU_CHARGE_DATA);
}

#endif

/* A process that attaches, holds `held` bytes, reports 'h' on report and
 * stays idle (no charge, no free) until it reads a byte from go. */
static inline pid_t idle_holder(const char *path, uint64_t limit, uint64_t held,
                                int report, int go_read, int go_write)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    close(go_write); /* the parent's death reads as end of file */
    struct vgpu_region *r = attach_limited(path, limit);
    CHECK(r != NULL && !vgpu_region_is_local(r), "holder attached");
    CHECK(vgpu_region_try_charge(r, 0, held, VGPU_CHARGE_DATA), "holder charge");
    put_byte(report, 'h');
    get_byte(go_read);
    CHECK(vgpu_region_process_used(r, 0) == held, "holder still holds it");
    vgpu_region_uncharge(r, 0, held, VGPU_CHARGE_DATA);
    vgpu_region_detach(r);
    _exit(0);
}

/* A new process attaches to path and finds `room` bytes of the limit free,
 * and no more. (A child, so that this process stays single-threaded: its
 * later children then start watchers even under ThreadSanitizer.) */
static inline void new_process_finds_room(const char *path, uint64_t limit,
                                          uint64_t room)
{
    pid_t pid = fork();
    if (pid == 0) {
        struct vgpu_region *r = attach_limited(path, limit);
        CHECK(r != NULL && !vgpu_region_is_local(r), "a new process joins");
        check_room(r, room, "a new process");
        vgpu_region_detach(r);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0, "the new process");
}
