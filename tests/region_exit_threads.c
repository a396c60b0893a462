/* exit() while other threads charge and uncharge: the slot is given back at
 * exit (vgpu_region_release_slot, as libvgpu's destructor does) while the
 * threads keep running until the kernel stops them. No charge may land in
 * the released slot or on the device counter after that: once every
 * process is gone, the device counter and every slot are exactly 0 (a
 * late uncharge would wrap the counter to ~2^64, a late charge would stay
 * counted). */
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <stdint.h>

#include "region_file.h"
#include "testutil.h"
#include "vgpu/region.h"

#define RUNS ((int)soak_knob("VGPU_SOAK_EXITS", 50))
#define THREADS 4
#define LIMIT (256ull << 20)
#define MAX_CHUNK (8ull << 20)

/* Under TSan: no second of sleep at each child's exit (its default, to
 * let other threads run into races), which would make this test minutes. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "atexit_sleep_ms=0";
}

static struct vgpu_region *region;

static void *churn(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 2654435761u + 1;
    uint64_t held[8] = {0};
    for (;;) {
        int k = (int)(rng_next(&seed) % 8);
        if (held[k]) {
            vgpu_region_uncharge(region, 0, held[k], VGPU_CHARGE_DATA);
            held[k] = 0;
        } else {
            uint64_t bytes = 1 + rng_next(&seed) % MAX_CHUNK;
            if (vgpu_region_try_charge(region, 0, bytes, VGPU_CHARGE_DATA))
                held[k] = bytes;
        }
    }
    return NULL;
}

static void release_at_exit(void)
{
    vgpu_region_release_slot(region);
}

static void run_once(const char *path, int run)
{
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid != 0)
        return;
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.limits[0] = LIMIT;
    region = vgpu_region_attach(&o);
    CHECK(region != NULL, "attach");
    atexit(release_at_exit);
    pthread_t t;
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t, NULL, churn, (void *)(uintptr_t)(run * 16 + i)) == 0,
              "thread");
    usleep((useconds_t)(run % 7) * 300);
    exit(0); /* the threads are still charging */
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "exit");
    for (int run = 0; run < RUNS; run++) {
        run_once(path, run);
        CHECK(wait_children(1) == 0, "run %d: child failed", run);
    }
    struct vgpu_region *view = vgpu_region_open_existing(path);
    CHECK(view != NULL, "open");
    /* A process that could not release at exit left its slot to the crash
     * path: the kernel dropped its lock, reclaim returns it. */
    int reclaimed = vgpu_region_reclaim(view);
    void *file = map_region_file(path);
    const struct hami_region *h = file;
    const struct vgpu_ext *ext = region_ext(file);
    uint64_t used = vgpu_region_used(view, 0);
    printf("%d exits, %d slots left to reclaim, %llu bytes counted after\n",
           RUNS, reclaimed, (unsigned long long)used);
    CHECK(used == 0, "device counter %llu after every process exited",
          (unsigned long long)used);
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) {
        const struct hami_device_memory *m = &h->procs[i].used[0];
        CHECK(m->total == 0 && m->data_size == 0,
              "slot %d holds %llu (data %llu)", i,
              (unsigned long long)m->total, (unsigned long long)m->data_size);
        CHECK(SLOT_STATE(ext->slots[i].word) == SLOT_FREE, "slot %d busy", i);
    }
    CHECK(vgpu_region_live_count(view) == 0, "live processes");
    munmap(file, VGPU_FILE_SIZE);
    vgpu_region_detach(view);
    unlink(path);
    printf("region_exit_threads: ok\n");
    return 0;
}
