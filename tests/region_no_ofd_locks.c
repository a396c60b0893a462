/* Issue 10: a file system without open file description locks (fcntl's
 * F_OFD_* fail with EINVAL or ENOLCK). Today every attach step failed
 * silently and the process ran without a limit; now attach says so in one
 * error line and the process enforces its limit alone. Simulated by this
 * program's own fcntl, which the region library calls instead of libc's. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/syscall.h>

#include "faultutil.h"

static int lock_errno = EINVAL;

static int fake_fcntl(int fd, int cmd, va_list ap)
{
    void *arg = va_arg(ap, void *);
    if (cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW || cmd == F_OFD_GETLK) {
        errno = lock_errno;
        return -1;
    }
    return (int)syscall(SYS_fcntl, fd, cmd, arg);
}

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    int rc = fake_fcntl(fd, cmd, ap);
    va_end(ap);
    return rc;
}

int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    int rc = fake_fcntl(fd, cmd, ap);
    va_end(ap);
    return rc;
}

/* Error lines written to stderr while attaching once. */
static int attach_error_lines(const char *path, struct vgpu_region **r)
{
    char log[600];
    snprintf(log, sizeof log, "%s.log", path);
    int saved = dup(2);
    int fd = open(log, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(saved >= 0 && fd >= 0 && dup2(fd, 2) == 2, "redirect stderr");
    *r = attach_limited(path, 1024 * MiB);
    dup2(saved, 2);
    close(saved);
    char text[4096] = {0};
    CHECK(pread(fd, text, sizeof text - 1, 0) >= 0, "read log");
    close(fd);
    unlink(log);
    fputs(text, stderr);
    int lines = 0;
    for (char *p = text; (p = strstr(p, " ERROR ")) != NULL; p++)
        lines++;
    return lines;
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "no-ofd");
    int errs[] = {EINVAL, ENOLCK};
    for (int i = 0; i < 2; i++) {
        lock_errno = errs[i];
        struct vgpu_region *r = NULL;
        int lines = attach_error_lines(path, &r);
        CHECK(lines == 1, "one error line, got %d", lines);
        CHECK(r != NULL && vgpu_region_is_local(r), "limited alone");
        check_room(r, 1024 * MiB, "no file locks");
        vgpu_region_detach(r);
        printf("fcntl failing with %s: one error line, the limit holds alone\n",
               strerror(errs[i]));
    }
    unlink(path);
    printf("region_no_ofd_locks: ok\n");
    return 0;
}
