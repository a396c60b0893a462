/* Issue 10: the first process is SIGKILLed half-way through creating the
 * region while many others wait to attach. Every one of them ends up
 * limited (none unlimited, none hung): most join the region the first one
 * alone repairs, any that gave up waiting enforce the limit alone and join
 * it later; in the end one region holds every charge. Today's code let some
 * of them run unlimited ("file changed size, while other processes use
 * it"). make soak: VGPU_SOAK_WAITERS (480) and VGPU_SOAK_ROUNDS. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/wait.h>

#include "faultutil.h"
#include "region/layout.h"

#define PROCS ((int)soak_knob("VGPU_SOAK_WAITERS", 48))
#define ROUNDS ((int)soak_knob("VGPU_SOAK_ROUNDS", 2))
#define LIMIT (1ull << 30)
#define EACH MiB

/* An initializer killed half-way: the file made, the lock taken, nothing
 * written (or, every other round, sized but not written). */
static void doomed_initializer(const char *path, int ready, bool sized)
{
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
                       .l_start = (off_t)LOCK_ATTACH, .l_len = 1};
    CHECK(fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0, "initializer lock");
    CHECK(!sized || ftruncate(fd, (off_t)VGPU_FILE_SIZE) == 0, "size");
    put_byte(ready, 'i');
    pause();
    _exit(0);
}

static void waiter(const char *path, int report, int go)
{
    put_byte(report, 'w');
    struct vgpu_region *r = attach_limited(path, LIMIT);
    CHECK(r != NULL, "attached: limited, not unlimited");
    CHECK(vgpu_region_try_charge(r, 0, EACH, VGPU_CHARGE_DATA), "charge");
    CHECK(!vgpu_region_try_charge(r, 0, LIMIT, VGPU_CHARGE_DATA), "limited");
    put_byte(report, vgpu_region_is_local(r) ? 'l' : 's');
    get_byte(go); /* the parent has seen every charge in one region */
    vgpu_region_uncharge(r, 0, EACH, VGPU_CHARGE_DATA);
    vgpu_region_detach(r);
    _exit(0);
}

static void round_once(const char *path, bool sized)
{
    unlink(path);
    int report[2], go[2];
    CHECK(pipe(report) == 0 && pipe(go) == 0, "pipes");
    pid_t init = fork();
    if (init == 0)
        doomed_initializer(path, report[1], sized);
    CHECK(get_byte(report[0]) == 'i', "initializer ready");
    for (int i = 0; i < PROCS; i++)
        if (fork() == 0) {
            close(go[1]); /* the parent's death reads as end of file */
            waiter(path, report[1], go[0]);
        }
    for (int i = 0; i < PROCS; i++)
        CHECK(get_byte(report[0]) == 'w', "waiter started");
    usleep(50000); /* let them queue on the lock; any instant will do */
    kill(init, SIGKILL);
    int status;
    CHECK(waitpid(init, &status, 0) == init, "initializer reaped");
    int alone = 0;
    for (int i = 0; i < PROCS; i++)
        alone += get_byte(report[0]) == 'l';
    WAIT_UNTIL(file_used(path) == (uint64_t)PROCS * EACH);
    for (int i = 0; i < PROCS; i++)
        put_byte(go[1], 'g');
    CHECK(wait_children(PROCS) == 0, "every waiter limited and done");
    CHECK(file_used(path) == 0, "back to zero");
    printf("%d waiters: all limited, %d alone for a while, all in one region "
           "in the end\n", PROCS, alone);
    close(report[0]);
    close(report[1]);
    close(go[0]);
    close(go[1]);
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "killed-init");
    for (int i = 0; i < ROUNDS; i++)
        round_once(path, i % 2 == 1);
    unlink(path);
    printf("region_killed_initializer: ok\n");
    return 0;
}
