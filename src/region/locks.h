/* Advisory locks on single bytes of the region file, owned by the open file
 * description (F_OFD_SETLK): the kernel drops them when the owning process
 * dies, however it dies, and a second open() of the same file in the same
 * process does not release them (unlike classic POSIX record locks).
 *
 * Nobody waits on another process's lock without a bound: a holder may be
 * stopped (SIGSTOP, a debugger) for ever. The waiting form polls and gives up
 * after LOCK_WAIT_MS. */
#ifndef VGPU_REGION_LOCKS_H
#define VGPU_REGION_LOCKS_H

#include <stdbool.h>
#include <stdint.h>

/* Not LOCK_READ/LOCK_WRITE: <fcntl.h> defines those for flock(). */
enum lock_kind { BYTE_READ, BYTE_WRITE };

/* What a non-waiting attempt found. */
enum lock_result {
    LOCK_TAKEN,  /* ours now */
    LOCK_BUSY,   /* another description holds a conflicting lock */
    LOCK_BROKEN, /* the file system cannot lock (EINVAL, ENOLCK...) */
};

/* The longest a waiting byte_lock polls before giving up (a stopped or
 * dead-but-unreaped holder costs the others at most this). */
#define LOCK_WAIT_MS 2000

/* Take (or convert, atomically) the lock on byte `at`, without waiting. */
enum lock_result byte_try(int fd, uint64_t at, enum lock_kind kind);

/* Take (or convert) the lock on byte `at`. Without wait, false at once if
 * another description holds a conflicting lock. With wait, polls with short
 * sleeps for at most LOCK_WAIT_MS; false then, or on any other error. */
bool byte_lock(int fd, uint64_t at, enum lock_kind kind, bool wait);

/* Release the lock on byte `at`. */
void byte_unlock(int fd, uint64_t at);

/* True when some other open file description holds a lock on byte `at`. */
bool byte_locked_elsewhere(int fd, uint64_t at);

/* Sleep for the n-th step of a bounded poll (20 us doubling to 2 ms) and
 * return the milliseconds slept, for the caller's budget. */
double lock_backoff(int n);

#endif
