/* Counters never go below zero: uncharging more than was charged (a double
 * uncharge, a free the process never charged, a damaged device counter)
 * clamps at zero, in every mode, instead of wrapping to ~2^64 (which would
 * refuse every allocation of the container). */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

#include "region/layout.h"
#include "testutil.h"
#include "vgpu/region.h"

#define MiB (1ull << 20)

static const char *const modes[] = {"default", "legacy",  "timeouts", "per-process",
                                    "rwlock",  "atomics", "seqlock"};

static struct vgpu_region *attach(const char *path, const char *mode)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.mode = mode;
    o.limits[0] = 64 * MiB;
    struct vgpu_region *r = vgpu_region_attach(&o);
    CHECK(r != NULL && strcmp(vgpu_region_mode(r), mode) == 0, "attach %s", mode);
    return r;
}

static void charge(struct vgpu_region *r, uint64_t bytes, enum vgpu_charge_kind kind)
{
    CHECK(vgpu_region_try_charge(r, 0, bytes, kind), "charge %llu",
          (unsigned long long)bytes);
    vgpu_region_settle(r, 0, bytes, kind, true);
}

static void *map_file(const char *path)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0, "open %s", path);
    void *p = mmap(NULL, VGPU_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED, "mmap");
    close(fd);
    return p;
}

static void double_uncharge(const char *path, const char *mode)
{
    unlink(path);
    struct vgpu_region *r = attach(path, mode);
    charge(r, 4 * MiB, VGPU_CHARGE_DATA);
    vgpu_region_uncharge(r, 0, 4 * MiB, VGPU_CHARGE_DATA);
    vgpu_region_uncharge(r, 0, 4 * MiB, VGPU_CHARGE_DATA); /* twice */
    vgpu_region_uncharge(r, 0, 1, VGPU_CHARGE_DATA);
    CHECK(vgpu_region_used(r, 0) == 0, "%s: used %llu after a double uncharge",
          mode, (unsigned long long)vgpu_region_used(r, 0));
    CHECK(vgpu_region_process_used(r, 0) == 0, "%s: slot %llu", mode,
          (unsigned long long)vgpu_region_process_used(r, 0));
    /* The limit still holds exactly afterwards. */
    charge(r, 64 * MiB, VGPU_CHARGE_DATA);
    CHECK(!vgpu_region_try_charge(r, 0, 1, VGPU_CHARGE_DATA), "%s: over", mode);
    vgpu_region_uncharge(r, 0, 64 * MiB, VGPU_CHARGE_DATA);

    /* Too much of one kind takes only that kind's bytes. */
    charge(r, 2 * MiB, VGPU_CHARGE_CONTEXT);
    charge(r, 1 * MiB, VGPU_CHARGE_DATA);
    vgpu_region_uncharge(r, 0, 3 * MiB, VGPU_CHARGE_DATA);
    struct hami_region *file = map_file(path);
    const struct hami_device_memory *m = &file->procs[vgpu_region_slot(r)].used[0];
    CHECK(m->data_size == 0 && m->context_size == 2 * MiB && m->total == 2 * MiB,
          "%s: data %llu context %llu total %llu", mode,
          (unsigned long long)m->data_size, (unsigned long long)m->context_size,
          (unsigned long long)m->total);
    CHECK(vgpu_region_used(r, 0) == 2 * MiB, "%s: used %llu", mode,
          (unsigned long long)vgpu_region_used(r, 0));
    munmap(file, VGPU_FILE_SIZE);
    vgpu_region_detach(r);
}

/* A device counter lower than what a slot holds (a damaged file): the
 * uncharge and the release both stop at zero. */
static void damaged_counter(const char *path)
{
    unlink(path);
    struct vgpu_region *r = attach(path, "default");
    charge(r, 8 * MiB, VGPU_CHARGE_DATA);
    void *file = map_file(path);
    __atomic_store_n(&region_ext(file)->dev[0].used, 1 * MiB, __ATOMIC_RELAXED);
    vgpu_region_uncharge(r, 0, 4 * MiB, VGPU_CHARGE_DATA);
    CHECK(vgpu_region_used(r, 0) == 0, "uncharge: used %llu",
          (unsigned long long)vgpu_region_used(r, 0));
    vgpu_region_release_slot(r); /* the slot still holds 4 MiB */
    CHECK(vgpu_region_used(r, 0) == 0, "release: used %llu",
          (unsigned long long)vgpu_region_used(r, 0));
    munmap(file, VGPU_FILE_SIZE);
    vgpu_region_detach(r);
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "clamp");
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
        double_uncharge(path, modes[i]);
    damaged_counter(path);
    unlink(path);
    printf("region_uncharge_clamp: ok\n");
    return 0;
}
