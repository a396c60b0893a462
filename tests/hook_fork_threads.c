/* fork() from a multi-threaded process (PyTorch DataLoader workers): while
 * other threads allocate and free without pause (taking the ledger's locks
 * and the region's), the main thread forks many times. Every child must
 * finish: it may not take a lock that another parent thread held at the
 * fork (that thread does not exist in the child). Each child allocates
 * under the limit on its own slot and exits; a child that hangs is killed
 * by its alarm and fails the test. */
#include <pthread.h>
#include <signal.h>

#include "hook_util.h"

#define FORKS ((int)soak_knob("VGPU_SOAK_FORKS", 60))
/* Under TSan one: two threads allocating at once meet a race TSan reports
 * in src/hook/reconcile.c ('unpaid'), which is not this test's (reported
 * to its owners); one thread still holds the ledger's locks at forks. */
#if defined(__SANITIZE_THREAD__)
#define THREADS 1
#else
#define THREADS 3
#endif
#define CHILD_SECONDS 20

/* Under ASan: a child inherits the objects other parent threads were just
 * allocating or freeing; nothing in the child can reach them, by the
 * nature of fork, so leak checking would fail the child for them. Under
 * TSan: no second of sleep at each child's exit (its default). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    /* die_after_fork=0: a child that claims its slot may start a thread
     * (the region's watcher); TSan cannot follow threads started in the
     * child of a multi-threaded fork (glibc can) and would kill it. */
    return "atexit_sleep_ms=0:die_after_fork=0";
}

static CUcontext ctx;
static int stop;

/* This GCC's ASan allocator takes no lock around fork(): a child may hang
 * in malloc on a lock of ASan's that another parent thread held, whatever
 * libvgpu does (seen: a child waiting in SizeClassAllocator64's mutex,
 * from ledger_put). Under ASan only, the churn threads are kept out of the
 * driver at the instant of the fork; the plain and TSan builds test the
 * race itself. */
#if defined(__SANITIZE_ADDRESS__)
static pthread_rwlock_t asan_guard;
static void guard_init(void)
{
    /* Writer first: the forking thread must not starve behind readers. */
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&asan_guard, &a);
}
#define CHURN_BEGIN() pthread_rwlock_rdlock(&asan_guard)
#define CHURN_END() pthread_rwlock_unlock(&asan_guard)
#define FORK_BEGIN() pthread_rwlock_wrlock(&asan_guard)
#define FORK_END() pthread_rwlock_unlock(&asan_guard)
#else
static void guard_init(void) {}
#define CHURN_BEGIN() (void)0
#define CHURN_END() (void)0
#define FORK_BEGIN() (void)0
#define FORK_END() (void)0
#endif

static void *churn(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 2654435761u + 1;
    CUdeviceptr held[16] = {0};
    CHECK(cuCtxSetCurrent(ctx) == CUDA_SUCCESS, "context");
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        int k = (int)(rng_next(&seed) % 16);
        CHURN_BEGIN();
        if (held[k]) {
            CU_OK(cuMemFree_v2(held[k]));
            held[k] = 0;
        } else if (cuMemAlloc_v2(&held[k], 1 + rng_next(&seed) % MiB) !=
                   CUDA_SUCCESS) {
            held[k] = 0;
        }
        CHURN_END();
    }
    for (int k = 0; k < 16; k++)
        if (held[k])
            CU_OK(cuMemFree_v2(held[k]));
    return NULL;
}

static void child(void)
{
    alarm(CHILD_SECONDS); /* a hang fails the test instead of stalling it */
    fakegpu_context(0);
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, 64 * MiB));
    CHECK(cuMemAlloc_v2(&p, 2 * GiB) == CUDA_ERROR_OUT_OF_MEMORY, "limited");
    exit(0); /* p is returned at exit */
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    ctx = fakegpu_context(0);
    guard_init();
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1)) == 0,
              "thread");
    int failed = 0;
    for (int i = 0; i < FORKS; i++) {
        FORK_BEGIN();
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0)
            child();
        FORK_END();
        failed += wait_children(1);
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK(failed == 0, "%d of %d children hung or failed", failed, FORKS);
    struct vgpu_region *view =
        vgpu_region_open_existing(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    CHECK(view != NULL, "open");
    CHECK(vgpu_region_live_count(view) == 1, "only the parent is left: %d",
          vgpu_region_live_count(view));
    vgpu_region_detach(view);
    printf("hook_fork_threads: %d forks, ok\n", FORKS);
    return 0;
}
