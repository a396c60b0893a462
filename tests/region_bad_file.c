/* Guarantee 5: every kind of bad input gets one log line and its documented
 * behaviour, never a crash or a hang:
 *  - refused, enforced alone (a limit is configured: the process counts
 *    itself against it in a local region): missing directory, a directory
 *    or fifo at the path, a symlink, a file of another user, a HAMi-core
 *    file whose processes live, a damaged file while other processes are
 *    attached (briefly: its processes leave it within a second, carrying
 *    their charges, and the first one alone recreates it); a compute limit
 *    alone is enforced alone the same way; without any limit, attach
 *    returns NULL (runs unlimited);
 *  - used after its mode is set back: a file of ours made world-writable;
 *  - recreated, because no process is attached (provably unused): truncated,
 *    oversized, garbage, wrong magic, wrong version;
 *  - ignored with a warning: a limit or mode that does not parse. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "region/layout.h"
#include "testutil.h"
#include "vgpu/region.h"

static char dir[400];

static struct vgpu_region *attach(const char *path)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.limits[0] = 1ull << 30;
    return vgpu_region_attach(&o);
}

static void expect_refused(const char *what, const char *path)
{
    struct vgpu_region *r = attach(path);
    CHECK(r != NULL && vgpu_region_is_local(r), "%s: enforced alone", what);
    CHECK(vgpu_region_try_charge(r, 0, 1ull << 29, VGPU_CHARGE_DATA),
          "%s: within the limit", what);
    CHECK(!vgpu_region_try_charge(r, 0, (1ull << 29) + 1, VGPU_CHARGE_DATA),
          "%s: the limit holds alone", what);
    vgpu_region_uncharge(r, 0, 1ull << 29, VGPU_CHARGE_DATA);
    vgpu_region_detach(r);
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.sm_limits[0] = 30;
    r = vgpu_region_attach(&o);
    CHECK(r != NULL && vgpu_region_is_local(r) && vgpu_region_sm_limit(r, 0) == 30,
          "%s: a compute limit alone holds alone too", what);
    vgpu_region_detach(r);
    o.sm_limits[0] = 0;
    CHECK(vgpu_region_attach(&o) == NULL, "%s: no limit, no region", what);
    CHECK(vgpu_region_try_charge(NULL, 0, 1, VGPU_CHARGE_DATA),
          "a NULL region charges nothing and refuses nothing");
    printf("refused, enforced alone as documented: %s\n", what);
}

static void make_valid(const char *path)
{
    unlink(path);
    struct vgpu_region *r = attach(path);
    CHECK(r != NULL, "attach fresh");
    vgpu_region_detach(r);
}

static void expect_recreated(const char *what, const char *path)
{
    struct vgpu_region *r = attach(path);
    CHECK(r != NULL, "%s: should be recreated", what);
    CHECK(vgpu_region_used(r, 0) == 0, "%s: fresh", what);
    CHECK(vgpu_region_try_charge(r, 0, 4096, VGPU_CHARGE_DATA), "%s: works", what);
    CHECK(!vgpu_region_try_charge(r, 0, 1ull << 30, VGPU_CHARGE_DATA),
          "%s: limit holds", what);
    vgpu_region_detach(r);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (size_t)st.st_size == VGPU_FILE_SIZE,
          "%s: size restored", what);
    printf("recreated as documented: %s\n", what);
}

static void poke(const char *path, off_t at, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, bytes, n, at) == (ssize_t)n, "poke");
    close(fd);
}

static void test_paths(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/no/such/dir/r.cache", dir);
    expect_refused("missing directory", path);

    snprintf(path, sizeof path, "%s/adir", dir);
    mkdir(path, 0700);
    expect_refused("a directory at the path", path);

    snprintf(path, sizeof path, "%s/fifo", dir);
    mkfifo(path, 0600);
    expect_refused("a fifo at the path", path);

    char target[512];
    snprintf(target, sizeof target, "%s/target", dir);
    snprintf(path, sizeof path, "%s/link", dir);
    make_valid(target);
    CHECK(symlink(target, path) == 0, "symlink");
    expect_refused("a symlink at the path", path);

    snprintf(path, sizeof path, "%s/world", dir);
    make_valid(path);
    chmod(path, 0666);
    struct vgpu_region *w = attach(path);
    struct stat st;
    CHECK(w != NULL && !vgpu_region_is_local(w), "world-writable: used");
    CHECK(stat(path, &st) == 0 && (st.st_mode & 022) == 0,
          "world-writable: mode set back, got %o", (unsigned)st.st_mode);
    vgpu_region_detach(w);
    printf("mode set back and used as documented: a world-writable file\n");

    if (geteuid() == 0) {
        snprintf(path, sizeof path, "%s/other", dir);
        make_valid(path);
        CHECK(chown(path, 12345, 12345) == 0, "chown");
        expect_refused("a file of another user", path);
    } else {
        printf("skipped (needs root): a file of another user\n");
    }
}

static void test_contents(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/content", dir);

    make_valid(path);
    CHECK(truncate(path, VGPU_FILE_SIZE / 2) == 0, "truncate");
    expect_recreated("truncated file", path);

    CHECK(truncate(path, VGPU_FILE_SIZE + 12345) == 0, "extend");
    expect_recreated("oversized file", path);

    int fd = open(path, O_WRONLY | O_TRUNC);
    char junk[8192];
    uint64_t seed = 42;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)rng_next(&seed);
    for (size_t done = 0; done < VGPU_FILE_SIZE; done += sizeof junk)
        CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk, "write");
    CHECK(ftruncate(fd, VGPU_FILE_SIZE) == 0, "exact size: garbage content");
    close(fd);
    expect_recreated("garbage file", path);

    int32_t bad = 12345;
    poke(path, 0, &bad, sizeof bad);
    expect_recreated("wrong magic", path);

    int32_t version = 7;
    poke(path, 4, &version, sizeof version);
    expect_recreated("wrong major version", path);

    uint32_t layout = 99;
    poke(path, VGPU_EXT_OFFSET + 8, &layout, sizeof layout);
    expect_recreated("wrong vgpu layout version", path);

    int32_t procnum = 5000;
    poke(path, offsetof(struct hami_region, procnum), &procnum, sizeof procnum);
    expect_recreated("procnum out of range", path);

    /* A HAMi-core file (no vgpu part) with a live process in it. */
    unlink(path);
    fd = open(path, O_RDWR | O_CREAT, 0600);
    CHECK(ftruncate(fd, sizeof(struct hami_region)) == 0, "size");
    close(fd);
    int32_t magic = HAMI_MAGIC, one = 1, live = (int32_t)getppid();
    poke(path, 0, &magic, 4);
    poke(path, 4, &one, 4);
    poke(path, 8, &one, 4);
    poke(path, offsetof(struct hami_region, procnum), &one, 4);
    poke(path, offsetof(struct hami_region, procs), &live, 4);
    expect_refused("a HAMi-core file in use", path);
    live = 0;
    poke(path, offsetof(struct hami_region, procs), &live, 4);
    expect_recreated("a HAMi-core file nobody uses", path);
}

static void test_damaged_while_attached(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/busy", dir);
    make_valid(path);
    struct vgpu_region *a = attach(path);
    CHECK(a != NULL, "attach a");
    CHECK(vgpu_region_try_charge(a, 0, 4096, VGPU_CHARGE_DATA), "charge");
    int32_t bad = 1;
    poke(path, 0, &bad, 4);
    /* The attached process leaves the damaged file within a second (its
     * watcher), the first one alone recreates it carrying its charges, and
     * the newcomer (waiting at most 2 s, or alone meanwhile) joins it. */
    struct vgpu_region *b = attach(path);
    CHECK(b != NULL, "a damaged file others are attached to: limited");
    while (vgpu_region_is_local(a) || vgpu_region_is_local(b) ||
           vgpu_region_used(b, 0) != 4096)
        usleep(20000); /* bounded by the test's timeout */
    CHECK(vgpu_region_try_charge(b, 0, (1ull << 30) - 4096, VGPU_CHARGE_DATA),
          "room left");
    CHECK(!vgpu_region_try_charge(b, 0, 1, VGPU_CHARGE_DATA),
          "a's charge counts in the recreated file");
    vgpu_region_uncharge(b, 0, (1ull << 30) - 4096, VGPU_CHARGE_DATA);
    vgpu_region_uncharge(a, 0, 4096, VGPU_CHARGE_DATA);
    CHECK(vgpu_region_used(a, 0) == 0, "back to zero");
    vgpu_region_detach(b);
    vgpu_region_detach(a);
    printf("recreated with the charges carried over: a file damaged while "
           "in use\n");
}

static void test_bad_environment(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/env", dir);
    unlink(path);
    setenv("CUDA_DEVICE_MEMORY_LIMIT", "four gigs", 1);
    setenv("VGPU_REGION_MODE", "no-such-mode", 1);
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", path, 1);
    vgpu_config_reload(); /* the table is read once per process */
    struct vgpu_attach_options o;
    vgpu_attach_options_from_env(&o);
    o.mode = NULL;
    CHECK(o.limits[0] == 0, "an unparsable limit leaves the device unlimited");
    struct vgpu_region *r = vgpu_region_attach(&o);
    CHECK(r != NULL, "attach with bad env");
    CHECK(strcmp(vgpu_region_mode(r), "default") == 0, "bad mode -> default");
    CHECK(vgpu_region_try_charge(r, 0, 1ull << 40, VGPU_CHARGE_DATA), "unlimited");
    vgpu_region_uncharge(r, 0, 1ull << 40, VGPU_CHARGE_DATA);
    vgpu_region_detach(r);
    unsetenv("CUDA_DEVICE_MEMORY_LIMIT");
    unsetenv("VGPU_REGION_MODE");
    unsetenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    printf("ignored with a warning: bad limit, bad mode\n");
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/vgpu-bad-%d", tmp ? tmp : "/tmp", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    test_paths();
    test_contents();
    test_damaged_while_attached();
    test_bad_environment();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cleanup");
    printf("region_bad_file: ok\n");
    return 0;
}
