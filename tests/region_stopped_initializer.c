/* Issue 10: the first process is stopped (SIGSTOP) while it initializes the
 * region, holding the attach lock for writing. Every other process waits at
 * most LOCK_WAIT_MS (no hang), then enforces its limit alone; once the
 * initializer is gone they join one region again, carrying their charges.
 * Fails today's code by hanging in F_OFD_SETLKW (the test's timeout). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/wait.h>

#include "faultutil.h"
#include "region/layout.h"

#define PROCS ((int)soak_knob("VGPU_SOAK_WAITERS", 8))
#define LIMIT (64 * MiB)
#define EACH (4 * MiB)

/* An initializer frozen half-way: the write lock taken, nothing written. */
static void stopped_initializer(const char *path, int ready)
{
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
                       .l_start = (off_t)LOCK_ATTACH, .l_len = 1};
    CHECK(fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0, "initializer lock");
    put_byte(ready, 'i');
    raise(SIGSTOP);
    pause();
    _exit(0);
}

static void attacher(const char *path, int report, int go)
{
    struct vgpu_region *r = attach_limited(path, LIMIT);
    CHECK(r != NULL, "attached (limited), not hung");
    CHECK(vgpu_region_is_local(r), "alone while the initializer is stopped");
    check_room(r, LIMIT, "alone");
    CHECK(vgpu_region_try_charge(r, 0, EACH, VGPU_CHARGE_DATA), "charge");
    put_byte(report, 'l');
    get_byte(go); /* the initializer is dead now */
    WAIT_UNTIL(!vgpu_region_is_local(r));
    put_byte(report, 'j');
    get_byte(go); /* the parent has counted the region */
    vgpu_region_uncharge(r, 0, EACH, VGPU_CHARGE_DATA);
    vgpu_region_detach(r);
    _exit(0);
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "stopped-init");
    int report[2], go[2];
    CHECK(pipe(report) == 0 && pipe(go) == 0, "pipes");
    pid_t init = fork();
    if (init == 0)
        stopped_initializer(path, report[1]);
    CHECK(get_byte(report[0]) == 'i', "initializer ready");
    int status;
    CHECK(waitpid(init, &status, WUNTRACED) == init && WIFSTOPPED(status),
          "initializer stopped");
    for (int i = 0; i < PROCS; i++)
        if (fork() == 0) {
            close(go[1]); /* the parent's death reads as end of file */
            attacher(path, report[1], go[0]);
        }
    for (int i = 0; i < PROCS; i++)
        CHECK(get_byte(report[0]) == 'l', "every attacher limited alone");
    printf("%d attachers enforce the limit alone while the initializer is "
           "stopped\n", PROCS);
    kill(init, SIGKILL);
    CHECK(waitpid(init, &status, 0) == init, "initializer reaped");
    for (int i = 0; i < PROCS; i++)
        put_byte(go[1], 'g');
    for (int i = 0; i < PROCS; i++)
        CHECK(get_byte(report[0]) == 'j', "every attacher joined again");
    CHECK(file_used(path) == (uint64_t)PROCS * EACH,
          "one region holds every carried charge: %llu",
          (unsigned long long)file_used(path));
    for (int i = 0; i < PROCS; i++)
        put_byte(go[1], 'g');
    CHECK(wait_children(PROCS) == 0, "attachers");
    CHECK(file_used(path) == 0, "back to zero");
    unlink(path);
    printf("region_stopped_initializer: ok\n");
    return 0;
}
