/* A reconciliation that meets frees never charges memory nobody holds.
 * Two threads allocate and free plain memory near the limit, reconciled
 * every millisecond (VGPU_RECONCILE_MS=1), and the driver holds nothing
 * the hooks do not charge (no context, no code): no reading of NVML may
 * find anything to charge as the driver's own (module bytes, which a
 * third thread watches in the region file as HAMi's monitor reads it),
 * beyond the one probe a process whose host pid is hidden makes to learn
 * it. What the threads hold together is below the limit, so no
 * allocation may be refused, and once all is freed the region counts
 * nothing.
 *
 * The faults it was written from: the reconciliation compared NVML's
 * figure with this process's charges read again after the reading was
 * checked, so a free that landed between the check and that read (NVML
 * still showing it, the charges not) was charged as the driver's own
 * memory: refusals under the limit, and a region that stayed above zero
 * after every free (hook_pool_threads under qemu, CI); and the check
 * compared totals, which one thread's charge and another's uncharge of the
 * same size leave alike. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "hami_offsets.h"
#include "hook_util.h"

#define THREADS 2
#define RUN_NS (1500ull * 1000 * 1000)
#define PROBE_BYTES (64 * MiB) /* reconcile.c's, to learn a hidden pid */

static CUcontext ctx;
static atomic_int refused;
static atomic_long rounds;
static atomic_int done;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Each thread holds one allocation at a time, of one size (so that one's
 * charge and the other's uncharge cancel in the total): two of them
 * (400 MiB and a few bytes each) fit under 1 GiB, and with the other's
 * held each charge is near the limit and reconciles; a third (a free
 * counted as the driver's own memory) does not fit. */
static void *worker(void *arg)
{
    (void)arg;
    uint64_t bytes = 400 * MiB + 17;
    CU_OK(cuCtxSetCurrent(ctx));
    uint64_t end = now_ns() + RUN_NS;
    while (now_ns() < end) {
        CUdeviceptr p;
        CUresult rc = cuMemAlloc_v2(&p, bytes);
        if (rc != CUDA_SUCCESS) {
            atomic_fetch_add(&refused, 1);
            continue;
        }
        CU_OK(cuMemFree_v2(p));
        atomic_fetch_add(&rounds, 1);
    }
    return NULL;
}

/* The most module bytes any slot of the region held on device 0 while the
 * workers ran, read from the file's bytes. */
static void *watch_module_bytes(void *arg)
{
    uint64_t *most = arg;
    int fd = open(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"), O_RDONLY);
    CHECK(fd >= 0, "open the region file");
    void *map = mmap(NULL, HAMI_V1_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(map != MAP_FAILED, "map the region file");
    const unsigned char *base = map;
    while (!atomic_load(&done)) {
        int32_t procs = __atomic_load_n((const int32_t *)(base + OFF_PROCNUM),
                                        __ATOMIC_RELAXED);
        for (int32_t i = 0; i < procs && i < VGPU_MAX_SLOTS; i++) {
            const uint64_t *module = (const uint64_t *)(base + OFF_PROCS +
                                                        (size_t)i * SLOT_SIZE +
                                                        SLOT_USED + USED_MODULE);
            uint64_t v = __atomic_load_n(module, __ATOMIC_RELAXED);
            *most = v > *most ? v : *most;
        }
        sched_yield(); /* the cores are the workers' (CI has two) */
    }
    munmap(map, HAMI_V1_SIZE);
    close(fd);
    return NULL;
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    setenv("VGPU_RECONCILE_MS", "1", 1);
    ctx = fakegpu_context(0);
    CUdeviceptr first; /* makes the region file */
    CU_OK(cuMemAlloc_v2(&first, MiB));
    CU_OK(cuMemFree_v2(first));
    uint64_t most_module = 0;
    pthread_t watcher, t[THREADS];
    CHECK(pthread_create(&watcher, NULL, watch_module_bytes, &most_module) == 0,
          "watcher");
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1)) == 0,
              "thread");
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&done, 1);
    pthread_join(watcher, NULL);
    printf("%ld allocations, %d refused, at most %llu module bytes, region %llu "
           "bytes after all freed, driver peak %llu MiB\n",
           atomic_load(&rounds), atomic_load(&refused),
           (unsigned long long)most_module,
           (unsigned long long)region_used(0),
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(atomic_load(&rounds) > 0, "some allocations were made");
    CHECK(most_module <= PROBE_BYTES,
          "%llu bytes nobody held were charged as the driver's own",
          (unsigned long long)most_module);
    CHECK(atomic_load(&refused) == 0, "refused under the limit");
    CHECK(region_used(0) == 0, "the region counts %llu bytes after all freed",
          (unsigned long long)region_used(0));
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held more than the limit");
    printf("hook_reconcile_race: ok\n");
    return 0;
}
