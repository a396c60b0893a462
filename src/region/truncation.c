/* The file truncated under the process: every access to the pages past the
 * new end raises SIGBUS, which would kill the application. A SIGBUS handler
 * answers faults inside a region's mapping, and only those: it puts a local
 * region (local.c, built from this process's own charges and last known
 * limits) at the same address in one mremap, marks the handle lost, and
 * returns, so that the faulting access runs again on the local region.
 * failover.c then drops the file and rejoins the region when it can.
 *
 * Every other SIGBUS goes to the handler that was there before (or to the
 * default action: the process dies as it would have). The handler uses
 * only system calls and plain stores (async-signal-safe); two threads that
 * fault together build one local region (the others wait for it).
 *
 * Caveat: a handler the application installs later replaces this one (then
 * truncation kills it, as before vgpu).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>

#include "atomic.h"
#include "region_internal.h"

#define GUARD_MAX 16

static struct vgpu_region *guarded[GUARD_MAX];
static struct sigaction previous;
static pthread_once_t installed = PTHREAD_ONCE_INIT;

static bool in_region(const struct vgpu_region *r, const void *addr)
{
    /* Relaxed: r->base changes only in a fork child before it is shared. */
    const char *base = atomic_load_n(&r->base, RELAXED);
    return base != NULL && (const char *)addr >= base &&
           (const char *)addr < base + VGPU_FILE_SIZE;
}

/* lost: 0 attached, 2 a handler is building, 1 built. */
static bool answer(struct vgpu_region *r)
{
    int expected = 0;
    /* Relaxed: the mremap is the publication; other threads' accesses
     * fault until it is done and then see the new pages. */
    if (!atomic_cas(&r->lost, &expected, 2, RELAXED, RELAXED)) {
        while (atomic_load_n(&r->lost, RELAXED) == 2)
            sched_yield(); /* another thread builds it */
        return true;
    }
    void *fresh = local_build(r);
    if (fresh == NULL || mremap(fresh, VGPU_FILE_SIZE, VGPU_FILE_SIZE,
                                MREMAP_MAYMOVE | MREMAP_FIXED,
                                r->base) == MAP_FAILED) {
        atomic_store_n(&r->lost, 0, RELAXED);
        return false;
    }
    atomic_store_n(&r->lost, 1, RELAXED);
    return true;
}

static void chain(int sig, siginfo_t *info, void *uctx)
{
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, uctx);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    /* Default: die as without us. A fault re-runs its access on return;
     * a sent signal must be sent again. */
    signal(sig, SIG_DFL);
    if (info->si_code <= 0)
        raise(sig);
}

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    int saved = errno;
    if (info->si_code > 0) { /* raised by a fault, not sent */
        for (int i = 0; i < GUARD_MAX; i++) {
            /* Acquire: pairs with the release in truncation_guard_add. */
            struct vgpu_region *r = atomic_load_n(&guarded[i], ACQUIRE);
            if (r != NULL && in_region(r, info->si_addr) && answer(r)) {
                errno = saved;
                return;
            }
        }
    }
    chain(sig, info, uctx);
    errno = saved;
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous);
}

void truncation_guard_add(struct vgpu_region *r)
{
    pthread_once(&installed, install);
    for (int i = 0; i < GUARD_MAX; i++) {
        struct vgpu_region *none = NULL;
        /* Release: the handle is complete before the handler can see it. */
        if (atomic_cas(&guarded[i], &none, r, RELEASE, RELAXED))
            return;
    }
}

void truncation_guard_remove(struct vgpu_region *r)
{
    for (int i = 0; i < GUARD_MAX; i++) {
        struct vgpu_region *mine = r;
        /* Relaxed: the caller unmaps only after; a handler that already
         * read r finishes with a mapping that is still there. */
        atomic_cas(&guarded[i], &mine, NULL, RELAXED, RELAXED);
    }
}
