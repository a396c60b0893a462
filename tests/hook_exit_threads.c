/* exit() while other threads allocate and free through libvgpu: its exit
 * destructor gives the slot back while those threads run on until the
 * kernel stops them. Once every such process is gone, the region counts
 * exactly 0 and every slot is empty (today's fault: counters left non-zero
 * or wrapped to ~2^64, refusing every allocation of the container). */
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#include "hook_util.h"
#include "region/layout.h"

#define RUNS ((int)soak_knob("VGPU_SOAK_EXITS", 25))
#define THREADS 4

/* Under TSan: no second of sleep at each child's exit (its default, to
 * let other threads run into races), which would make this test minutes. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "atexit_sleep_ms=0";
}

static CUcontext ctx;

static void *churn(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 2654435761u + 1;
    CUdeviceptr held[8] = {0};
    if (cuCtxSetCurrent(ctx) != CUDA_SUCCESS)
        return NULL;
    for (;;) {
        int k = (int)(rng_next(&seed) % 8);
        if (held[k]) {
            cuMemFree_v2(held[k]);
            held[k] = 0;
        } else if (cuMemAlloc_v2(&held[k], 1 + rng_next(&seed) % (8 * MiB)) !=
                   CUDA_SUCCESS) {
            held[k] = 0;
        }
    }
    return NULL;
}

static void run_once(int run)
{
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid != 0)
        return;
    ctx = fakegpu_context(0);
    pthread_t t;
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t, NULL, churn, (void *)(uintptr_t)(run * 16 + i)) == 0,
              "thread");
    usleep((useconds_t)(run % 7) * 300);
    exit(0); /* the threads are still allocating */
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    for (int run = 0; run < RUNS; run++) {
        run_once(run);
        CHECK(wait_children(1) == 0, "run %d: child failed", run);
    }
    const char *path = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    struct vgpu_region *view = vgpu_region_open_existing(path);
    CHECK(view != NULL, "open");
    int reclaimed = vgpu_region_reclaim(view);
    uint64_t used = vgpu_region_used(view, 0);
    printf("%d exits, %d slots left to reclaim, %llu bytes counted after\n",
           RUNS, reclaimed, (unsigned long long)used);
    CHECK(used == 0, "device counter %llu after every process exited",
          (unsigned long long)used);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0, "open");
    const struct hami_region *h =
        mmap(NULL, VGPU_FILE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(h != MAP_FAILED, "mmap");
    for (int i = 0; i < VGPU_MAX_SLOTS; i++)
        CHECK(h->procs[i].used[0].total == 0 && h->procs[i].status == 0 &&
                  SLOT_STATE(region_ext((void *)h)->slots[i].word) == SLOT_FREE,
              "slot %d: total %llu, status %d", i,
              (unsigned long long)h->procs[i].used[0].total, h->procs[i].status);
    CHECK(vgpu_region_live_count(view) == 0, "live processes");
    vgpu_region_detach(view);
    printf("hook_exit_threads: ok\n");
    return 0;
}
