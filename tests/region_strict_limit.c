/* Guarantee 1: many processes x threads charge and uncharge random sizes
 * near the limit; an independent ledger (bytes each thread holds, added
 * after a successful charge and removed before the uncharge) never exceeds
 * the limit, and everything returns to zero. */
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#include "testutil.h"
#include "vgpu/region.h"

#define PROCS 8
#define THREADS 4
#define HELD 4
#define LIMIT (1ull << 30)
#define MAX_CHUNK (200ull << 20)
#define SECONDS ((double)soak_knob("VGPU_SOAK_SECONDS", 2))

struct shared {
    uint64_t ledger;   /* bytes the test believes are charged */
    uint64_t ledger_max;
    uint64_t charges, refusals;
};

static struct shared *sh;
static struct vgpu_region *region;

static void ledger_add(uint64_t bytes)
{
    uint64_t now = __atomic_add_fetch(&sh->ledger, bytes, __ATOMIC_SEQ_CST);
    uint64_t max = __atomic_load_n(&sh->ledger_max, __ATOMIC_SEQ_CST);
    while (now > max && !__atomic_compare_exchange_n(&sh->ledger_max, &max, now,
                                                     false, __ATOMIC_SEQ_CST,
                                                     __ATOMIC_SEQ_CST))
        ;
}

static void *worker(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 7919 + (uint64_t)getpid();
    uint64_t held[HELD] = {0};
    double end = now_seconds() + SECONDS;
    while (now_seconds() < end) {
        int k = (int)(rng_next(&seed) % HELD);
        if (held[k] != 0) {
            __atomic_sub_fetch(&sh->ledger, held[k], __ATOMIC_SEQ_CST);
            vgpu_region_uncharge(region, 0, held[k], VGPU_CHARGE_DATA);
            held[k] = 0;
            continue;
        }
        uint64_t bytes = 1 + rng_next(&seed) % MAX_CHUNK;
        if (vgpu_region_try_charge(region, 0, bytes, VGPU_CHARGE_DATA)) {
            ledger_add(bytes);
            held[k] = bytes;
            __atomic_add_fetch(&sh->charges, 1, __ATOMIC_RELAXED);
        } else {
            __atomic_add_fetch(&sh->refusals, 1, __ATOMIC_RELAXED);
        }
    }
    for (int k = 0; k < HELD; k++)
        if (held[k] != 0) {
            __atomic_sub_fetch(&sh->ledger, held[k], __ATOMIC_SEQ_CST);
            vgpu_region_uncharge(region, 0, held[k], VGPU_CHARGE_DATA);
        }
    return NULL;
}

static int child(const char *path)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.limits[0] = LIMIT;
    region = vgpu_region_attach(&o);
    CHECK(region != NULL, "attach");
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    vgpu_region_detach(region);
    return 0;
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "strict");
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED, "mmap");
    for (int i = 0; i < PROCS; i++)
        if (fork() == 0)
            _exit(child(path));
    CHECK(wait_children(PROCS) == 0, "a child failed");

    printf("charges %llu, refusals %llu, ledger max %llu of limit %llu\n",
           (unsigned long long)sh->charges, (unsigned long long)sh->refusals,
           (unsigned long long)sh->ledger_max, (unsigned long long)LIMIT);
    CHECK(sh->charges > 0 && sh->refusals > 0,
          "the run must reach the limit to test it");
    CHECK(sh->ledger_max <= LIMIT, "limit exceeded: %llu > %llu",
          (unsigned long long)sh->ledger_max, (unsigned long long)LIMIT);
    CHECK(sh->ledger == 0, "ledger not back to zero");

    struct vgpu_region *view = vgpu_region_open_existing(path);
    CHECK(view != NULL, "open");
    CHECK(vgpu_region_used(view, 0) == 0, "region used %llu after all left",
          (unsigned long long)vgpu_region_used(view, 0));
    CHECK(vgpu_region_live_count(view) == 0, "slots still held");
    vgpu_region_detach(view);
    unlink(path);
    printf("region_strict_limit: ok\n");
    return 0;
}
