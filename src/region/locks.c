#define _GNU_SOURCE
#include "locks.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>

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

enum lock_result byte_try(int fd, uint64_t at, enum lock_kind kind)
{
    struct flock fl = byte_range(at, kind == BYTE_WRITE ? F_WRLCK : F_RDLCK);
    int rc;
    do
        rc = fcntl(fd, F_OFD_SETLK, &fl);
    while (rc != 0 && errno == EINTR);
    if (rc == 0)
        return LOCK_TAKEN;
    return errno == EAGAIN || errno == EACCES ? LOCK_BUSY : LOCK_BROKEN;
}

double lock_backoff(int n)
{
    long us = 20L << (n < 7 ? n : 7);
    if (us > 2000)
        us = 2000;
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
    return (double)us / 1000.0;
}

bool byte_lock(int fd, uint64_t at, enum lock_kind kind, bool wait)
{
    double waited = 0;
    for (int n = 0;; n++) {
        enum lock_result got = byte_try(fd, at, kind);
        if (got != LOCK_BUSY)
            return got == LOCK_TAKEN;
        if (!wait || waited >= LOCK_WAIT_MS)
            return false;
        waited += lock_backoff(n);
    }
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
