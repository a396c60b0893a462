/* 8 processes race 64 MiB allocations to a 1 GiB limit on an 8 GiB device:
 * the simulated driver's own ledger never holds more than the limit (its
 * peak), exactly 16 allocations succeed, and all comes back. */
#include <sys/mman.h>

#include "hook_util.h"

#define PROCS 8
#define CHUNK (64 * MiB)

struct shared { int got[PROCS]; int ready; int go; };

static void child(int idx, struct shared *sh)
{
    fakegpu_context(0);
    __atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&sh->go, __ATOMIC_SEQ_CST))
        ;
    CUdeviceptr p[32];
    int n = 0;
    for (int tries = 0; tries < 64 && n < 32; tries++)
        if (cuMemAlloc_v2(&p[n], CHUNK) == CUDA_SUCCESS)
            n++;
    sh->got[idx] = n;
    __atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) < 2 * PROCS)
        usleep(1000);
    for (int i = 0; i < n; i++)
        CU_OK(cuMemFree_v2(p[i]));
    _exit(0);
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < PROCS; i++)
        if (fork() == 0)
            child(i, sh);
    while (__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) < PROCS)
        usleep(100);
    __atomic_store_n(&sh->go, 1, __ATOMIC_SEQ_CST);
    CHECK(wait_children(PROCS) == 0, "a child failed");
    int total = 0;
    for (int i = 0; i < PROCS; i++)
        total += sh->got[i];
    printf("allocations granted %d, driver peak %llu MiB\n", total,
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held more than the limit");
    CHECK(total == 16, "exactly limit / chunk allocations granted");
    CHECK(fakegpu_device_used(0) == 0 && region_used(0) == 0, "all returned");
    printf("hook_multiprocess_limit: ok\n");
    return 0;
}
