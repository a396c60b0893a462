/* A dead process's slot is reclaimed exactly once, also when several
 * threads of one process reclaim at the same moment. The slots' byte locks
 * are file-description locks, which the threads of a process share: the
 * lock alone lets a second thread in while the first empties the slot, and
 * that second one, still emptying after the first let go, would empty a
 * slot another process has claimed meanwhile (its charges subtracted from
 * the device while it holds them: the limit exceeded by as much). Here:
 * 8 threads reclaim the dead slots of 24 killed processes together (those
 * their own attaches did not reclaim already), 20 rounds; the reclaims
 * they report add up to those slots, and the device counts what the live
 * process holds. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "testutil.h"
#include "vgpu/region.h"

#define THREADS 8
#define DEAD 24
#define ROUNDS 20
#define HELD (1ull << 20)

static struct vgpu_region *r;
static pthread_barrier_t start;
static int reclaimed;

static void *reclaimer(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&start);
    __atomic_add_fetch(&reclaimed, vgpu_region_reclaim(r), __ATOMIC_RELAXED);
    return NULL;
}

/* A process that attaches, charges HELD and is killed holding it. */
static void die_holding(const char *path)
{
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        struct vgpu_attach_options o;
        memset(&o, 0, sizeof o);
        o.path = path;
        o.limits[0] = 1ull << 30;
        struct vgpu_region *mine = vgpu_region_attach(&o);
        if (mine == NULL || !vgpu_region_try_charge(mine, 0, HELD, VGPU_CHARGE_DATA))
            _exit(2);
        kill(getpid(), SIGKILL);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status), "killed");
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "reclaim_threads");
    unlink(path);
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.limits[0] = 1ull << 30;
    r = vgpu_region_attach(&o);
    CHECK(r != NULL, "attach");
    CHECK(vgpu_region_try_charge(r, 0, HELD, VGPU_CHARGE_DATA), "our own charge");
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < DEAD; i++)
            die_holding(path);
        /* Each attach reclaims a few dead slots itself: these are left. */
        int dead = (int)((vgpu_region_used(r, 0) - HELD) / HELD);
        CHECK(dead > 0, "round %d: dead slots left to reclaim", round);
        reclaimed = 0;
        CHECK(pthread_barrier_init(&start, NULL, THREADS) == 0, "barrier");
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++)
            CHECK(pthread_create(&t[i], NULL, reclaimer, NULL) == 0, "thread");
        for (int i = 0; i < THREADS; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start);
        CHECK(reclaimed == dead, "round %d: %d reclaims of %d dead slots", round,
              reclaimed, dead);
        CHECK(vgpu_region_used(r, 0) == HELD, "round %d: the device counts %llu",
              round, (unsigned long long)vgpu_region_used(r, 0));
    }
    vgpu_region_uncharge(r, 0, HELD, VGPU_CHARGE_DATA);
    vgpu_region_detach(r);
    unlink(path);
    printf("region_reclaim_threads: ok\n");
    return 0;
}
