/* A process killed between the two steps of a charge leaves its bytes
 * counted on the device (never too low). They used to come back only when
 * no process was attached; a process that is alone in the region now heals
 * them at its next refused charge. One that is not alone never does (the
 * others' charges in flight are not its to judge). */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

#include "region/layout.h"
#include "testutil.h"
#include "vgpu/region.h"

#define MiB (1ull << 20)

static struct vgpu_region *attach(const char *path)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.limits[0] = 64 * MiB;
    struct vgpu_region *r = vgpu_region_attach(&o);
    CHECK(r != NULL, "attach");
    return r;
}

/* What a process SIGKILLed right after its charge's first step leaves. */
static void leak(const char *path, uint64_t bytes)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0, "open");
    void *p = mmap(NULL, VGPU_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED, "mmap");
    close(fd);
    __atomic_add_fetch(&region_ext(p)->dev[0].used, bytes, __ATOMIC_RELAXED);
    munmap(p, VGPU_FILE_SIZE);
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "heal");
    struct vgpu_region *r = attach(path);
    CHECK(vgpu_region_try_charge(r, 0, 8 * MiB, VGPU_CHARGE_DATA), "8 MiB");
    leak(path, 40 * MiB);

    /* Not alone: another process is attached; nothing is healed. */
    int go[2];
    CHECK(pipe(go) == 0, "pipe");
    pid_t other = fork();
    CHECK(other >= 0, "fork");
    if (other == 0) {
        struct vgpu_region *o = attach(path);
        char c;
        CHECK(read(go[0], &c, 1) == 1, "read");
        vgpu_region_detach(o);
        _exit(0);
    }
    while (vgpu_region_live_count(r) < 2)
        usleep(1000);
    CHECK(!vgpu_region_try_charge(r, 0, 32 * MiB, VGPU_CHARGE_DATA),
          "8 + 40 leaked + 32 is over 64 while another process is attached");
    CHECK(vgpu_region_used(r, 0) == 48 * MiB, "nothing healed: %llu",
          (unsigned long long)vgpu_region_used(r, 0));
    CHECK(write(go[1], "x", 1) == 1, "write");
    CHECK(wait_children(1) == 0, "other");

    /* Alone: the refused charge heals the 40 MiB and then succeeds. */
    CHECK(vgpu_region_try_charge(r, 0, 32 * MiB, VGPU_CHARGE_DATA),
          "alone, the leak is healed at the refusal");
    CHECK(vgpu_region_used(r, 0) == 40 * MiB, "used %llu after the heal",
          (unsigned long long)vgpu_region_used(r, 0));
    CHECK(!vgpu_region_try_charge(r, 0, 25 * MiB, VGPU_CHARGE_DATA),
          "the limit still holds");
    vgpu_region_uncharge(r, 0, 40 * MiB, VGPU_CHARGE_DATA);
    CHECK(vgpu_region_used(r, 0) == 0, "back to 0");
    vgpu_region_detach(r);
    unlink(path);
    printf("region_heal_alone: ok\n");
    return 0;
}
