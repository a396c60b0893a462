/* Advisory locks on single bytes of the region file, owned by the open file
 * description (F_OFD_SETLK): the kernel drops them when the owning process
 * dies, however it dies, and a second open() of the same file in the same
 * process does not release them (unlike classic POSIX record locks). */
#ifndef VGPU_REGION_LOCKS_H
#define VGPU_REGION_LOCKS_H

#include <stdbool.h>
#include <stdint.h>

/* Not LOCK_READ/LOCK_WRITE: <fcntl.h> defines those for flock(). */
enum lock_kind { BYTE_READ, BYTE_WRITE };

/* Take (or convert, atomically) the lock on byte `at`. Without wait, returns
 * false at once if another description holds a conflicting lock. With wait,
 * blocks until it can take it; errors other than a conflict return false. */
bool byte_lock(int fd, uint64_t at, enum lock_kind kind, bool wait);

/* Release the lock on byte `at`. */
void byte_unlock(int fd, uint64_t at);

/* True when some other open file description holds a lock on byte `at`. */
bool byte_locked_elsewhere(int fd, uint64_t at);

#endif
