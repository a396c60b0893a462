/* Issue 10: the 1025th process of a region (every slot taken) enforces the
 * limit alone, with one error line, instead of running unlimited (today);
 * when a slot frees it joins the region, carrying its charges. The 1024
 * slot holders are handles of this process (each its own open file
 * description, as separate processes would be). */
#include <sys/resource.h>

#include "faultutil.h"

#define LIMIT (1024 * MiB)
#define HELD (64 * MiB)

int main(void)
{
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
    if (rl.rlim_cur < VGPU_MAX_SLOTS + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < VGPU_MAX_SLOTS + 64) {
        printf("region_slots_full: skipped (%llu file descriptors)\n",
               (unsigned long long)rl.rlim_cur);
        return 0;
    }
    char path[512];
    test_region_path(path, sizeof path, "slots-full");
    static struct vgpu_region *slot[VGPU_MAX_SLOTS];
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) {
        slot[i] = attach_limited(path, LIMIT);
        CHECK(slot[i] != NULL && !vgpu_region_is_local(slot[i]), "slot %d", i);
    }
    int report[2], go[2];
    CHECK(pipe(report) == 0 && pipe(go) == 0, "pipes");
    pid_t pid = fork();
    if (pid == 0) {
        close(go[1]);
        struct vgpu_region *r = attach_limited(path, LIMIT);
        CHECK(r != NULL && vgpu_region_is_local(r), "the 1025th: alone");
        CHECK(vgpu_region_try_charge(r, 0, HELD, VGPU_CHARGE_DATA), "charge");
        check_room(r, LIMIT - HELD, "the 1025th");
        put_byte(report[1], 'l');
        get_byte(go[0]); /* a slot is free now */
        /* A charge that would be refused looks for the region first (so
         * does the watcher, every second, where there is one). */
        while (vgpu_region_is_local(r)) {
            CHECK(!vgpu_region_try_charge(r, 0, LIMIT, VGPU_CHARGE_DATA),
                  "over the limit");
            usleep(10000);
        }
        CHECK(vgpu_region_used(r, 0) == HELD, "joined, carrying its charge");
        vgpu_region_uncharge(r, 0, HELD, VGPU_CHARGE_DATA);
        vgpu_region_detach(r);
        _exit(0);
    }
    CHECK(get_byte(report[0]) == 'l', "the 1025th limited alone");
    vgpu_region_detach(slot[0]);
    put_byte(go[1], 'g');
    CHECK(wait_children(1) == 0, "the 1025th");
    for (int i = 1; i < VGPU_MAX_SLOTS; i++)
        vgpu_region_detach(slot[i]);
    unlink(path);
    printf("region_slots_full: ok\n");
    return 0;
}
