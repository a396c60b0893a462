/* A process alone in its region heals, at a refused charge, what killed
 * processes left counted: it sets each device's count to its own slot's
 * total. Its exit may run on another thread meanwhile (a destructor, or
 * vgpu_region_release_slot) and give that slot back, subtracting the total.
 * The heal must not write a total read before the release (an over-count
 * that outlives the process) nor read the slot after it is gone (slot -1).
 * Each round: 8 MiB charged, 40 MiB left by a "killed" process, a refused
 * 32 MiB charge (which heals) on one thread and the release on another,
 * started a varying few microseconds apart. After both, the device counts
 * 0 (healed, then released) or 40 MiB (released first: nobody alone heals
 * any more), nothing else. */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

#include "faultutil.h"
#include "region/layout.h"

#define ROUNDS 3000

static struct vgpu_region *region;
static int go; /* round number both threads start on; atomic */

static struct vgpu_region *attach(const char *path)
{
    struct vgpu_region *r = attach_limited(path, 64 * MiB);
    CHECK(r != NULL, "attach");
    return r;
}

static void spin_ns(long ns)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < ns);
}

/* How long after the charge starts the release starts: the rounds hover
 * around the point where the release meets the heal (a machine's speed,
 * a sanitizer's or an emulator's, moves it): a round that healed first
 * starts the next release sooner, one that released first later. */
static long delay; /* ns; atomic */

static void steer(bool healed_first, int round)
{
    long d = __atomic_load_n(&delay, __ATOMIC_RELAXED);
    d += (healed_first ? -1 : 1) * (50 + (round % 7) * 20);
    __atomic_store_n(&delay, d < 0 ? 0 : d, __ATOMIC_RELAXED); /* a number */
}

static void *release(void *arg)
{
    (void)arg;
    for (int round = 1; round <= ROUNDS; round++) {
        /* Acquire: this round's region handle, published by main. */
        while (__atomic_load_n(&go, __ATOMIC_ACQUIRE) != round)
            ;
        spin_ns(__atomic_load_n(&delay, __ATOMIC_RELAXED));
        vgpu_region_release_slot(region);
        __atomic_store_n(&go, -round, __ATOMIC_RELEASE); /* done */
    }
    return NULL;
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "heal_exit");
    unlink(path);
    struct vgpu_region *first = attach(path); /* creates the file */
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0, "open");
    void *file = mmap(NULL, VGPU_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(file != MAP_FAILED, "mmap");
    close(fd);
    struct vgpu_device_counter *devs = region_ext(file)->dev;
    uint64_t *used = &devs[0].used;
    vgpu_region_detach(first);

    pthread_t t;
    CHECK(pthread_create(&t, NULL, release, NULL) == 0, "thread");
    int healed = 0, released_first = 0;
    for (int round = 1; round <= ROUNDS; round++) {
        region = attach(path); /* alone: zeroes what the last round left */
        CHECK(vgpu_region_try_charge(region, 0, 8 * MiB, VGPU_CHARGE_DATA), "8 MiB");
        __atomic_add_fetch(used, 40 * MiB, __ATOMIC_RELAXED); /* a killed charger's */
        /* Release: the handle above, to the releasing thread. */
        __atomic_store_n(&go, round, __ATOMIC_RELEASE);
        vgpu_region_try_charge(region, 0, 32 * MiB, VGPU_CHARGE_DATA);
        while (__atomic_load_n(&go, __ATOMIC_ACQUIRE) != -round)
            ;
        uint64_t now = __atomic_load_n(&devs[0].used, __ATOMIC_RELAXED);
        CHECK(now == 0 || now == 40 * MiB,
              "round %d: device 0 counts %llu bytes after the heal and the "
              "release (0 or 40 MiB expected)", round, (unsigned long long)now);
        for (int d = 1; d < VGPU_MAX_DEVICES; d++)
            CHECK(__atomic_load_n(&devs[d].used, __ATOMIC_RELAXED) == 0,
                  "round %d: device %d counts %llu bytes, never charged", round, d,
                  (unsigned long long)__atomic_load_n(&devs[d].used, __ATOMIC_RELAXED));
        healed += now == 0;
        released_first += now != 0;
        steer(now == 0, round);
        vgpu_region_detach(region);
    }
    pthread_join(t, NULL);
    printf("region_heal_exit: %d rounds healed first, %d released first\n", healed,
           released_first);
    munmap(file, VGPU_FILE_SIZE);
    unlink(path);
    printf("region_heal_exit: ok\n");
    return 0;
}
