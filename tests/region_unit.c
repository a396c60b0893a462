/* Single-process behaviour of the region: limits, charge/uncharge, settle,
 * size parsing, limit changes written by the monitor, fork re-attach. */
#include <stdint.h>

#include "region/layout.h"
#include "testutil.h"
#include "vgpu/region.h"

#define MiB (1ull << 20)

static void test_parse_size(void)
{
    uint64_t v = 0;
    CHECK(vgpu_parse_size("4g", &v) && v == 4ull << 30, "4g -> %llu",
          (unsigned long long)v);
    CHECK(vgpu_parse_size("4096m", &v) && v == 4096 * MiB, "4096m");
    CHECK(vgpu_parse_size("10K", &v) && v == 10240, "10K");
    CHECK(vgpu_parse_size("123", &v) && v == 123, "123");
    CHECK(!vgpu_parse_size("", &v), "empty");
    CHECK(!vgpu_parse_size("-1", &v), "negative");
    CHECK(!vgpu_parse_size("4gb", &v), "4gb has two suffix letters");
    CHECK(!vgpu_parse_size("g", &v), "no digits");
    CHECK(!vgpu_parse_size("99999999999999999999", &v), "overflow");
    CHECK(!vgpu_parse_size("17179869184t", &v), "overflow by suffix");
}

static void test_env_limits(void)
{
    setenv("CUDA_DEVICE_MEMORY_LIMIT", "2g", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_3", "512m", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_5", "lots", 1);
    vgpu_config_reload(); /* the table is read once per process */
    uint64_t limits[VGPU_MAX_DEVICES];
    vgpu_config_limits(limits);
    CHECK(limits[0] == 2ull << 30, "device 0 gets the global limit");
    CHECK(limits[3] == 512 * MiB, "device 3 override");
    CHECK(limits[5] == 2ull << 30, "bad override falls back to global");
    unsetenv("CUDA_DEVICE_MEMORY_LIMIT");
    unsetenv("CUDA_DEVICE_MEMORY_LIMIT_3");
    unsetenv("CUDA_DEVICE_MEMORY_LIMIT_5");
}

static struct vgpu_region *attach(const char *path, uint64_t limit0)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.mode = "default";
    o.limits[0] = limit0;
    o.device_count = 2;
    return vgpu_region_attach(&o);
}

static void test_charge(const char *path)
{
    struct vgpu_region *r = attach(path, 100 * MiB);
    CHECK(r != NULL, "attach");
    CHECK(vgpu_region_slot(r) >= 0, "slot claimed");
    CHECK(vgpu_region_try_charge(r, 0, 60 * MiB, VGPU_CHARGE_DATA), "60 of 100");
    CHECK(!vgpu_region_try_charge(r, 0, 41 * MiB, VGPU_CHARGE_DATA), "101 of 100");
    CHECK(vgpu_region_try_charge(r, 0, 40 * MiB, VGPU_CHARGE_DATA), "exactly 100");
    CHECK(vgpu_region_used(r, 0) == 100 * MiB, "used 100");
    CHECK(!vgpu_region_try_charge(r, 0, 1, VGPU_CHARGE_DATA), "1 byte over");
    vgpu_region_uncharge(r, 0, 40 * MiB, VGPU_CHARGE_DATA);
    CHECK(vgpu_region_used(r, 0) == 60 * MiB, "used 60");
    /* A failed driver call rolls the reservation back. */
    CHECK(vgpu_region_try_charge(r, 0, 10 * MiB, VGPU_CHARGE_DATA), "10");
    vgpu_region_settle(r, 0, 10 * MiB, VGPU_CHARGE_DATA, false);
    CHECK(vgpu_region_used(r, 0) == 60 * MiB, "rollback");
    /* Device 1 is unlimited. */
    CHECK(vgpu_region_try_charge(r, 1, 1ull << 40, VGPU_CHARGE_DATA), "unlimited");
    CHECK(!vgpu_region_try_charge(r, 1, UINT64_MAX, VGPU_CHARGE_DATA),
          "a charge that would wrap the counter is refused");
    vgpu_region_uncharge(r, 1, 1ull << 40, VGPU_CHARGE_DATA);
    /* Out-of-range device: documented as not accounted, allowed. */
    CHECK(vgpu_region_try_charge(r, 16, MiB, VGPU_CHARGE_DATA), "dev 16");
    CHECK(vgpu_region_try_charge(r, -1, MiB, VGPU_CHARGE_DATA), "dev -1");

    /* The monitor rewrites the limit in the file: next charge obeys it. */
    struct vgpu_region *view = vgpu_region_open_existing(path);
    CHECK(view != NULL, "open existing");
    struct hami_region *h = *(struct hami_region **)view; /* base pointer */
    h->limit[0] = 50 * MiB;
    CHECK(!vgpu_region_try_charge(r, 0, MiB, VGPU_CHARGE_DATA), "new limit 50 < 60");
    h->limit[0] = 200 * MiB;
    CHECK(vgpu_region_try_charge(r, 0, 100 * MiB, VGPU_CHARGE_DATA), "new limit 200");
    vgpu_region_uncharge(r, 0, 100 * MiB, VGPU_CHARGE_DATA);

    /* Per-process attribution is where HAMi's monitor reads it. */
    int slot = vgpu_region_slot(r);
    CHECK(h->procs[slot].used[0].total == 60 * MiB, "slot total %llu",
          (unsigned long long)h->procs[slot].used[0].total);
    CHECK(h->procs[slot].used[0].data_size == 60 * MiB, "slot data_size");
    CHECK(h->procs[slot].pid == getpid(), "slot pid");
    CHECK(h->procnum > slot, "procnum covers our slot");

    /* A fork child that charges gets its own slot; the parent keeps its own. */
    pid_t child = fork();
    if (child == 0) {
        CHECK(vgpu_region_try_charge(r, 0, 5 * MiB, VGPU_CHARGE_DATA), "child");
        CHECK(vgpu_region_slot(r) != slot, "child slot differs");
        CHECK(vgpu_region_used(r, 0) == 65 * MiB, "child sees 65");
        vgpu_region_detach(r);
        _exit(0);
    }
    CHECK(wait_children(1) == 0, "fork child failed");
    CHECK(vgpu_region_used(r, 0) == 60 * MiB, "child's charge returned at exit");
    CHECK(h->procs[slot].pid == getpid(), "parent slot intact");

    vgpu_region_detach(r);
    CHECK(h->procs[slot].pid == 0 && h->procs[slot].used[0].total == 0,
          "slot zeroed after detach");
    struct vgpu_snapshot *snap = malloc(sizeof *snap);
    vgpu_region_snapshot(view, snap);
    CHECK(snap->used[0] == 0 && snap->proc_count == 0, "empty after detach");
    CHECK(snap->peak[0] == 160 * MiB, "peak %llu", (unsigned long long)snap->peak[0]);
    free(snap);
    vgpu_region_detach(view);
}

/* A mark of the process's charges says whether any moved since, also
 * when a charge and its uncharge leave the total where it was. */
static void test_process_mark(const char *path)
{
    struct vgpu_region *r = attach(path, 100 * MiB);
    CHECK(r != NULL, "attach");
    struct vgpu_process_mark m;
    vgpu_region_process_mark(r, 0, &m);
    CHECK(vgpu_region_process_unmoved(r, 0, &m), "nothing moved");
    CHECK(vgpu_region_try_charge(r, 0, MiB, VGPU_CHARGE_DATA), "charge");
    CHECK(!vgpu_region_process_unmoved(r, 0, &m), "a charge moved");
    vgpu_region_uncharge(r, 0, MiB, VGPU_CHARGE_DATA);
    CHECK(vgpu_region_process_used(r, 0) == m.used, "the total is back");
    CHECK(!vgpu_region_process_unmoved(r, 0, &m), "a charge and its uncharge moved");
    vgpu_region_process_mark(r, 0, &m);
    CHECK(vgpu_region_try_charge(r, 1, MiB, VGPU_CHARGE_DATA), "device 1");
    CHECK(vgpu_region_process_unmoved(r, 0, &m), "device 1's charge is not 0's");
    vgpu_region_uncharge(r, 1, MiB, VGPU_CHARGE_DATA);
    CHECK(vgpu_region_try_charge(r, 0, MiB, VGPU_CHARGE_DATA), "charge");
    vgpu_region_process_mark(r, 0, &m);
    vgpu_region_uncharge(r, 0, MiB, VGPU_CHARGE_DATA);
    CHECK(!vgpu_region_process_unmoved(r, 0, &m), "an uncharge moved");
    vgpu_region_detach(r);
}

static void test_limits_disagree(const char *path)
{
    /* The first process's limits are in the file; a later one asking for
     * different limits gets the file's. */
    struct vgpu_region *a = attach(path, 100 * MiB);
    struct vgpu_region *b = attach(path, 300 * MiB);
    CHECK(a && b, "two attaches");
    CHECK(vgpu_region_limit(b, 0) == 100 * MiB, "file's limit wins");
    vgpu_region_detach(b);
    vgpu_region_detach(a);
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "unit");
    test_parse_size();
    test_env_limits();
    test_charge(path);
    unlink(path);
    test_process_mark(path);
    unlink(path);
    test_limits_disagree(path);
    unlink(path);
    printf("region_unit: ok\n");
    return 0;
}
