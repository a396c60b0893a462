/* The fields HAMi's node monitor reads and writes, checked in the file's
 * bytes at the offsets its Go reader (pkg/monitor/nvidia/v1) computes:
 * literal numbers (hami_offsets.h), independent of our struct definitions. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>

#include "hami_offsets.h"
#include "testutil.h"
#include "vgpu/region.h"

static int fd;

static uint64_t u64_at(off_t at)
{
    uint64_t v = 0;
    CHECK(pread(fd, &v, 8, at) == 8, "pread");
    return v;
}

static int32_t i32_at(off_t at)
{
    int32_t v = 0;
    CHECK(pread(fd, &v, 4, at) == 4, "pread");
    return v;
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "layout");
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.limits[2] = 3ull << 30;
    o.device_count = 4;
    setenv("CUDA_TASK_PRIORITY", "0", 1); /* HAMi's webhook: high priority */
    struct vgpu_region *r = vgpu_region_attach(&o);
    CHECK(r != NULL, "attach");
    vgpu_region_set_device(r, 2, "GPU-12345678-abcd-ef01-2345-6789abcdef01");
    CHECK(vgpu_region_try_charge(r, 2, 1000, VGPU_CHARGE_DATA), "data");
    CHECK(vgpu_region_try_charge(r, 2, 24, VGPU_CHARGE_CONTEXT), "context");
    CHECK(vgpu_region_try_charge(r, 2, 8, VGPU_CHARGE_MODULE), "module");
    int slot = vgpu_region_slot(r);
    off_t used2 = OFF_PROCS + (off_t)slot * SLOT_SIZE + SLOT_USED + 2 * SLOT_USED_SIZE;

    fd = open(path, O_RDWR);
    CHECK(fd >= 0, "open");
    struct stat st;
    CHECK(fstat(fd, &st) == 0, "stat");
    CHECK(st.st_size >= HAMI_V1_SIZE && st.st_size != HAMI_V0_SIZE,
          "size %lld must hold the v1 struct and not look like v0",
          (long long)st.st_size);
    CHECK(i32_at(OFF_MAGIC) == HAMI_MAGIC_VALUE, "magic");
    CHECK(i32_at(OFF_MAJOR) == 1 && i32_at(OFF_MINOR) <= 1,
          "major 1, minor <= 1 selects the monitor's base v1 reader");
    CHECK(u64_at(OFF_DEVICE_NUM) == 4, "device_num");
    CHECK(u64_at(OFF_LIMIT + 2 * 8) == 3ull << 30, "limit[2]");
    char uuid[96];
    CHECK(pread(fd, uuid, sizeof uuid, OFF_UUIDS + 2 * UUID_LEN) == 96, "uuid");
    CHECK(strcmp(uuid, "GPU-12345678-abcd-ef01-2345-6789abcdef01") == 0, "uuid[2]");
    CHECK(i32_at(OFF_PROCNUM) > slot, "procnum covers the slot");
    CHECK(i32_at(OFF_PROCS + (off_t)slot * SLOT_SIZE) == getpid(), "slot pid");
    off_t status = OFF_PROCS + (off_t)slot * SLOT_SIZE + SLOT_STATUS;
    CHECK(i32_at(status) == 1, "a live slot has status 1 (the monitor skips 0)");
    CHECK(i32_at(OFF_PRIORITY) == 0, "priority from CUDA_TASK_PRIORITY");
    CHECK(u64_at(used2 + USED_TOTAL) == 1032, "used[2].total");
    CHECK(u64_at(used2 + USED_MODULE) == 8, "used[2].module_size");
    CHECK(u64_at(used2 + USED_DATA) == 1000, "used[2].data_size");
    CHECK(u64_at(used2 + USED_CONTEXT) == 24, "used[2].context_size");

    /* The monitor writes: limit (takes effect at the next charge), sm_limit,
     * utilization_switch, recent_kernel (stored, untouched by vgpu). */
    uint64_t new_limit = 2048;
    CHECK(pwrite(fd, &new_limit, 8, OFF_LIMIT + 2 * 8) == 8, "write limit");
    CHECK(!vgpu_region_try_charge(r, 2, 1017, VGPU_CHARGE_DATA),
          "monitor's new limit applies");
    CHECK(vgpu_region_try_charge(r, 2, 1016, VGPU_CHARGE_DATA), "up to it");
    uint64_t sm = 50;
    int32_t one = 1;
    CHECK(pwrite(fd, &sm, 8, OFF_SM_LIMIT) == 8, "sm_limit");
    CHECK(pwrite(fd, &one, 4, OFF_UTIL_SWITCH) == 4, "switch");
    CHECK(pwrite(fd, &one, 4, OFF_RECENT_KERNEL) == 4, "recent");
    vgpu_region_uncharge(r, 2, 1016, VGPU_CHARGE_DATA);
    vgpu_region_uncharge(r, 2, 1000, VGPU_CHARGE_DATA);
    vgpu_region_uncharge(r, 2, 24, VGPU_CHARGE_CONTEXT);
    vgpu_region_uncharge(r, 2, 8, VGPU_CHARGE_MODULE);
    vgpu_region_detach(r);
    CHECK(i32_at(status) == 0, "a released slot has status 0");
    CHECK(u64_at(used2 + USED_TOTAL) == 0, "slot zeroed after detach");
    CHECK(i32_at(OFF_PROCS + (off_t)slot * SLOT_SIZE) == 0, "slot pid cleared");
    CHECK(u64_at(OFF_SM_LIMIT) == 50 && i32_at(OFF_UTIL_SWITCH) == 1,
          "monitor-written fields kept");
    close(fd);
    unlink(path);
    printf("region_hami_layout: ok\n");
    return 0;
}
