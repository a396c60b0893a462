#define _GNU_SOURCE
#include "locks.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

static struct flock byte_range(uint64_t at, short type)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)at;
    fl.l_len = 1;
    return fl; /* l_pid stays 0, as OFD locks require */
}

bool byte_lock(int fd, uint64_t at, enum lock_kind kind, bool wait)
{
    struct flock fl = byte_range(at, kind == BYTE_WRITE ? F_WRLCK : F_RDLCK);
    int rc;
    do
        rc = fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
    while (rc != 0 && errno == EINTR);
    return rc == 0;
}

void byte_unlock(int fd, uint64_t at)
{
    struct flock fl = byte_range(at, F_UNLCK);
    (void)fcntl(fd, F_OFD_SETLK, &fl);
}

bool byte_locked_elsewhere(int fd, uint64_t at)
{
    struct flock fl = byte_range(at, F_WRLCK);
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
        return false;
    return fl.l_type != F_UNLCK;
}
