/* Issue 10: a region file planted by another uid, who could write any limit
 * into it. It is never used: a process with a limit enforces it alone (one
 * error line) instead of running unlimited (today), and a process attached
 * to the real file when another uid's file is renamed over it leaves it and
 * goes on alone, its charges carried. Needs root (setuid, chown); CI runs
 * as root. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>

#include "faultutil.h"

#define LIMIT (1024 * MiB)
#define HELD (256 * MiB)
#define OTHER_UID 12345

static void plant(const char *path)
{
    pid_t pid = fork();
    if (pid == 0) {
        CHECK(setgid(OTHER_UID) == 0 && setuid(OTHER_UID) == 0, "setuid");
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
        CHECK(fd >= 0, "planted");
        CHECK(ftruncate(fd, 4096) == 0, "size");
        close(fd);
        _exit(0);
    }
    CHECK(wait_children(1) == 0, "planter");
}

int main(void)
{
    if (geteuid() != 0) {
        printf("region_plant: skipped (needs root)\n");
        return 0;
    }
    char dir[512], path[600], other[600];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/vgpu-plant-%d", tmp ? tmp : "/tmp", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0 && chmod(dir, 01777) == 0, "a /tmp-like dir");
    snprintf(path, sizeof path, "%s/r.cache", dir);
    snprintf(other, sizeof other, "%s/other.cache", dir);

    plant(path);
    struct vgpu_region *r = attach_limited(path, LIMIT);
    CHECK(r != NULL && vgpu_region_is_local(r), "another uid's file: alone");
    check_room(r, LIMIT, "alone");
    vgpu_region_detach(r);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_uid == OTHER_UID && st.st_size == 4096,
          "the planted file is left alone");
    printf("a planted file is not used; the limit holds alone\n");

    /* Planted over the file of a running process. */
    CHECK(unlink(path) == 0, "clean");
    struct vgpu_region *held = attach_limited(path, LIMIT);
    CHECK(held != NULL && !vgpu_region_is_local(held), "attach");
    CHECK(vgpu_region_try_charge(held, 0, HELD, VGPU_CHARGE_DATA), "hold");
    plant(other);
    CHECK(rename(other, path) == 0, "planted over it");
    WAIT_UNTIL(vgpu_region_is_local(held)); /* the watcher left it */
    check_room(held, LIMIT - HELD, "alone, charges carried");
    vgpu_region_uncharge(held, 0, HELD, VGPU_CHARGE_DATA);
    vgpu_region_detach(held);
    printf("planted over a running process's file: it goes on alone\n");

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cleanup");
    printf("region_plant: ok\n");
    return 0;
}
