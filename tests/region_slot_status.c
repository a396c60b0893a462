/* Every slot is live (status 1, pid set, parts adding up to the total) or
 * empty (status 0, pid 0, every counter 0), in every mode, at claim,
 * release, fork child, kill and reclaim: HAMi's monitor sums the slots of
 * procs[0, procnum) whose status is not 0. Also: nothing but the region
 * appears in its directory while a process attaches (the monitor refuses a
 * directory with a third "*.cache" file; older ones any third file).
 * Offsets are HAMi's v1 reader's, as literal numbers. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "hami_offsets.h"
#include "testutil.h"
#include "vgpu/region.h"


static const char *const modes[] = {"default", "legacy", "timeouts",
                                    "per-process", "rwlock", "atomics",
                                    "seqlock"};

static unsigned char *map_file(const char *path)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0, "open %s", path);
    void *p = mmap(NULL, HAMI_V1_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    CHECK(p != MAP_FAILED, "mmap");
    return p;
}

static int32_t i32(const unsigned char *b, size_t at)
{
    int32_t v;
    memcpy(&v, b + at, sizeof v);
    return v;
}

static uint64_t u64(const unsigned char *b, size_t at)
{
    uint64_t v;
    memcpy(&v, b + at, sizeof v);
    return v;
}

static int32_t status_of(const unsigned char *b, int slot)
{
    return i32(b, OFF_PROCS + (size_t)slot * SLOT_SIZE + SLOT_STATUS);
}

/* The invariant over procs[0, procnum); returns the number of live slots. */
static int check_slots(const unsigned char *b, const char *mode, const char *when)
{
    int n = i32(b, OFF_PROCNUM), live = 0;
    CHECK(n >= 0 && n <= 1024, "%s %s: procnum %d", mode, when, n);
    for (int i = 0; i < n; i++) {
        size_t s = OFF_PROCS + (size_t)i * SLOT_SIZE;
        int32_t status = i32(b, s + SLOT_STATUS), pid = i32(b, s);
        CHECK(status == 0 || status == 1, "%s %s: slot %d status %d", mode,
              when, i, status);
        for (int d = 0; d < 16; d++) {
            size_t u = s + SLOT_USED + (size_t)d * 64;
            uint64_t parts = u64(b, u) + u64(b, u + 8) + u64(b, u + 16);
            CHECK(parts == u64(b, u + 32), "%s %s: slot %d dev %d: parts %llu "
                  "!= total %llu", mode, when, i, d, (unsigned long long)parts,
                  (unsigned long long)u64(b, u + 32));
            CHECK(status == 1 || u64(b, u + 32) == 0, "%s %s: empty slot %d "
                  "holds bytes", mode, when, i);
        }
        CHECK((status == 1) == (pid > 0), "%s %s: slot %d status %d pid %d",
              mode, when, i, status, pid);
        CHECK(status == 1 || i32(b, s + SLOT_HOSTPID) == 0, "%s %s: hostpid "
              "left in empty slot %d", mode, when, i);
        live += status;
    }
    return live;
}

/* A child that charges (claiming its own slot), reports the slot, then
 * either releases it and exits, or waits to be killed. */
static pid_t child(struct vgpu_region *r, bool leave, int *slot)
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        CHECK(vgpu_region_try_charge(r, 0, 50, VGPU_CHARGE_DATA), "child charge");
        vgpu_region_settle(r, 0, 50, VGPU_CHARGE_DATA, true);
        CHECK(vgpu_region_try_charge(r, 0, 5, VGPU_CHARGE_MODULE), "child module");
        vgpu_region_settle(r, 0, 5, VGPU_CHARGE_MODULE, true);
        int mine = vgpu_region_slot(r);
        CHECK(write(fds[1], &mine, sizeof mine) == sizeof mine, "write");
        if (leave) {
            vgpu_region_detach(r);
            _exit(0);
        }
        pause();
        _exit(0);
    }
    close(fds[1]);
    CHECK(read(fds[0], slot, sizeof *slot) == sizeof *slot, "read slot");
    close(fds[0]);
    return pid;
}

static void one_mode(const char *mode, const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.cache", dir, mode);
    unlink(path);
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.mode = mode;
    o.limits[0] = 1ull << 30;
    struct vgpu_region *r = vgpu_region_attach(&o);
    CHECK(r != NULL, "%s: attach", mode);
    unsigned char *b = map_file(path);
    int me = vgpu_region_slot(r);
    CHECK(status_of(b, me) == 1, "%s: claimed slot is live", mode);
    CHECK(vgpu_region_try_charge(r, 0, 100, VGPU_CHARGE_DATA), "%s: data", mode);
    vgpu_region_settle(r, 0, 100, VGPU_CHARGE_DATA, true);
    CHECK(vgpu_region_try_charge(r, 0, 10, VGPU_CHARGE_CONTEXT), "%s: ctx", mode);
    vgpu_region_settle(r, 0, 10, VGPU_CHARGE_CONTEXT, true);
    CHECK(check_slots(b, mode, "attached") == 1, "%s: one live slot", mode);

    int kept, left;
    pid_t victim = child(r, false, &kept);
    CHECK(kept != me && status_of(b, kept) == 1, "%s: fork child live", mode);
    CHECK(check_slots(b, mode, "with child") == 2, "%s: two live", mode);
    pid_t leaver = child(r, true, &left);
    CHECK(waitpid(leaver, NULL, 0) == leaver, "wait");
    CHECK(status_of(b, left) == 0, "%s: released slot is empty", mode);
    CHECK(check_slots(b, mode, "after exit") == 2, "%s: two live", mode);

    kill(victim, SIGKILL);
    CHECK(waitpid(victim, NULL, 0) == victim, "wait");
    /* Dead but not yet reclaimed: still counted, whole. */
    CHECK(check_slots(b, mode, "after kill") == 2, "%s: dead slot whole", mode);
    CHECK(vgpu_region_reclaim(r) == 1, "%s: one reclaimed", mode);
    CHECK(status_of(b, kept) == 0, "%s: reclaimed slot is empty", mode);
    CHECK(check_slots(b, mode, "after reclaim") == 1, "%s: one live", mode);

    vgpu_region_detach(r);
    CHECK(check_slots(b, mode, "after detach") == 0, "%s: none live", mode);
    munmap(b, HAMI_V1_SIZE);
    unlink(path);
}

static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL, "opendir");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* A legacy-mode process spends 300 ms in its start-up lock (HAMi-core's
 * host-pid detection); the directory must hold only the region meanwhile. */
static void lonely_directory(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/lonely.cache", dir);
    unlink(path);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        setenv("VGPU_LEGACY_STARTUP_WORK_MS", "300", 1);
        struct vgpu_attach_options o;
        memset(&o, 0, sizeof o);
        o.path = path;
        o.mode = "legacy";
        struct vgpu_region *r = vgpu_region_attach(&o);
        vgpu_region_detach(r);
        _exit(r != NULL ? 0 : 1);
    }
    int most = 0, status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        int n = entries(dir);
        most = n > most ? n : most;
        usleep(1000);
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "legacy attach");
    CHECK(most <= 1, "%d files at once next to the region", most);
    unlink(path);
}

int main(void)
{
    char dir[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/vgpu-status-XXXXXX", tmp ? tmp : "/tmp");
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        one_mode(modes[i], dir);
    lonely_directory(dir);
    rmdir(dir);
    printf("region_slot_status: ok\n");
    return 0;
}
