/* Issue 10: the region file truncated while a process is attached and its
 * threads charge and free. Accessing the lost pages raises SIGBUS; the
 * process must not die of it (today: rc 135). It goes on with its charges
 * in a local region (the limit holds, counting what it holds), then joins
 * the region again (recreated) carrying them, where another process sees
 * them. Truncated to zero and to half. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/wait.h>

#include "faultutil.h"

#define LIMIT (1024 * MiB)
#define HELD (768 * MiB)
#define THREADS 3

static struct vgpu_region *region;
static int stop;

static void *churn(void *unused)
{
    (void)unused;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
        if (vgpu_region_try_charge(region, 0, MiB, VGPU_CHARGE_DATA))
            vgpu_region_uncharge(region, 0, MiB, VGPU_CHARGE_DATA);
    return NULL;
}

static void other_process_sees(const char *path, uint64_t used)
{
    pid_t pid = fork();
    if (pid == 0) {
        struct vgpu_region *r = attach_limited(path, LIMIT);
        CHECK(r != NULL && !vgpu_region_is_local(r), "another process joins");
        CHECK(vgpu_region_used(r, 0) == used, "it sees the carried charges: "
              "%llu", (unsigned long long)vgpu_region_used(r, 0));
        check_room(r, LIMIT - used, "the other process");
        vgpu_region_detach(r);
        _exit(0);
    }
    CHECK(wait_children(1) == 0, "other process");
}

static void truncate_under(const char *path, off_t size)
{
    unlink(path);
    region = attach_limited(path, LIMIT);
    CHECK(region != NULL && !vgpu_region_is_local(region), "attach");
    CHECK(vgpu_region_try_charge(region, 0, HELD, VGPU_CHARGE_DATA), "hold");
    __atomic_store_n(&stop, 0, __ATOMIC_RELAXED);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, churn, NULL) == 0, "thread");
    usleep(20000);
    CHECK(truncate(path, size) == 0, "truncate");
    usleep(50000);
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* Alive. Alone or joined again already: the limit counts what it holds. */
    CHECK(vgpu_region_process_used(region, 0) == HELD, "what it holds");
    check_room(region, LIMIT - HELD, "after the truncation");
    WAIT_UNTIL(!vgpu_region_is_local(region));
    CHECK(vgpu_region_used(region, 0) == HELD, "joined again, carrying it");
    other_process_sees(path, HELD);
    vgpu_region_uncharge(region, 0, HELD, VGPU_CHARGE_DATA);
    CHECK(vgpu_region_used(region, 0) == 0, "back to zero");
    vgpu_region_detach(region);
    printf("truncated to %lld bytes under 4 threads: alive, limited, rejoined\n",
           (long long)size);
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "truncate");
    for (long i = 0; i < soak_knob("VGPU_SOAK_ROUNDS", 1); i++) {
        truncate_under(path, 0);
        truncate_under(path, 1 << 20);
    }
    unlink(path);
    printf("region_truncate: ok\n");
    return 0;
}
