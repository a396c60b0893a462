/* The claim on a context's measurement (src/region/ctxsize.c): one
 * process at a time measures; the claim lapses when its process dies or
 * after its time bound (a stopped process); a published size ends it; a
 * region healed with no process attached drops it; and a claim is never
 * copied as a size, neither into a process-local region nor into the file
 * a process joins again (failover). */
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "region/region_internal.h"
#include "region_file.h"
#include "testutil.h"

#define MiB (1ull << 20)
#define SIZE (300 * MiB)

static struct vgpu_region *attach(const char *path)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.limits[0] = o.limits[1] = 4096 * MiB;
    struct vgpu_region *r = vgpu_region_attach(&o);
    CHECK(r != NULL, "attach");
    return r;
}

/* The word in the file for dev, as the hook never sees it. */
static uint64_t raw_word(const char *path, int dev)
{
    void *p = map_region_file(path);
    uint64_t v = __atomic_load_n(&region_ext(p)->context_bytes[dev], __ATOMIC_RELAXED);
    munmap(p, VGPU_FILE_SIZE);
    return v;
}

static void set_raw_word(const char *path, int dev, uint64_t v)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0, "open %s", path);
    void *p = mmap(NULL, VGPU_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED, "mmap");
    close(fd);
    __atomic_store_n(&region_ext(p)->context_bytes[dev], v, __ATOMIC_RELAXED);
    munmap(p, VGPU_FILE_SIZE);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A process that attaches, claims dev 0 and reports, then waits to be
 * signalled (or _exits without giving anything back if die_at_once). */
static pid_t claimer(const char *path, int report, bool die_at_once)
{
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid != 0)
        return pid;
    alarm(60);
    struct vgpu_region *r = attach(path);
    char ok = vgpu_region_claim_context(r, 0) != 0 ? 'c' : 'n';
    CHECK(write(report, &ok, 1) == 1, "report");
    if (die_at_once)
        _exit(0); /* as a SIGKILL: no release, the claim left behind */
    pause();
    _exit(0);
}

static char got(int fd)
{
    char c = 0;
    CHECK(read(fd, &c, 1) == 1, "read report");
    return c;
}

static void ends(pid_t pid, int sig)
{
    CHECK(kill(pid, sig) == 0, "kill");
    CHECK(waitpid(pid, NULL, 0) == pid, "wait");
}

/* One at a time; a dead, a stopped-too-long or a damaged claim lapses; a
 * size ends a claim; giving up returns the word to "unknown". */
static void claims(const char *path)
{
    unlink(path);
    int rep[2];
    CHECK(pipe(rep) == 0, "pipe");
    struct vgpu_region *r = attach(path);
    uint64_t mine = vgpu_region_claim_context(r, 0);
    CHECK(mine != 0, "the first claims");
    CHECK(vgpu_region_context_bytes(r, 0) == 0, "a claim is not a size");
    CHECK(vgpu_region_claim_context(r, 0) == 0, "ours is alive: no second");
    pid_t q = claimer(path, rep[1], false);
    CHECK(got(rep[0]) == 'n', "another process does not claim a live claim");
    ends(q, SIGKILL);
    vgpu_region_unclaim_context(r, 0, mine);
    CHECK(raw_word(path, 0) == 0, "given up: unknown again");

    q = claimer(path, rep[1], false);
    CHECK(got(rep[0]) == 'c', "the next claims");
    CHECK(vgpu_region_claim_context(r, 0) == 0, "its claim is alive");
    ends(q, SIGKILL);
    mine = vgpu_region_claim_context(r, 0);
    CHECK(mine != 0, "killed: its claim lapsed at once");
    vgpu_region_unclaim_context(r, 0, mine);

    q = claimer(path, rep[1], false);
    CHECK(got(rep[0]) == 'c', "claimed");
    CHECK(kill(q, SIGSTOP) == 0, "stop");
    CHECK(vgpu_region_claim_context(r, 0) == 0, "stopped, but recent: alive");
    /* Six seconds old (the bound is five): its low 40 bits are the ms. */
    uint64_t w = raw_word(path, 0), mask = (1ull << 40) - 1;
    set_raw_word(path, 0, (w & ~mask) | ((now_ms() - 6000) & mask));
    mine = vgpu_region_claim_context(r, 0);
    CHECK(mine != 0, "stopped too long: lapsed");
    ends(q, SIGKILL);

    /* A published size ends the claim; giving up then keeps the size. */
    vgpu_region_set_context_bytes(r, 0, SIZE);
    CHECK(vgpu_region_context_bytes(r, 0) == SIZE, "published");
    vgpu_region_unclaim_context(r, 0, mine);
    CHECK(vgpu_region_context_bytes(r, 0) == SIZE, "a late unclaim keeps it");
    CHECK(vgpu_region_claim_context(r, 0) == 0, "known: nothing to claim");

    /* Damaged: a stamp from the future, a slot past the table. */
    set_raw_word(path, 1, (1ull << 63) | ((now_ms() + 100000) & mask));
    mine = vgpu_region_claim_context(r, 1);
    CHECK(mine != 0, "a stamp from the future lapses");
    set_raw_word(path, 1, (1ull << 63) | (2000ull << 52) | (now_ms() & mask));
    CHECK(vgpu_region_claim_context(r, 1) != 0, "a slot past the table lapses");
    vgpu_region_detach(r);
    printf("claims: one at a time; killed, stopped past 5 s, damaged: lapse\n");
}

/* A claimer died and nobody is attached: the next attacher's heal drops
 * the claim (sizes stay). */
static void healed(const char *path)
{
    unlink(path);
    struct vgpu_region *r = attach(path);
    vgpu_region_set_context_bytes(r, 1, SIZE);
    vgpu_region_detach(r);
    int rep[2];
    CHECK(pipe(rep) == 0, "pipe");
    pid_t q = claimer(path, rep[1], true);
    CHECK(got(rep[0]) == 'c', "claimed");
    CHECK(waitpid(q, NULL, 0) == q, "died");
    CHECK(raw_word(path, 0) >> 63, "the claim is left behind");
    r = attach(path); /* alone: heals */
    CHECK(raw_word(path, 0) == 0, "the heal dropped the claim: %llx",
          (unsigned long long)raw_word(path, 0));
    CHECK(raw_word(path, 1) == SIZE, "and kept the size");
    vgpu_region_detach(r);
    printf("healed: a dead claimer's claim dropped, the size kept\n");
}

#define WAIT_UNTIL(cond)                                                       \
    do {                                                                       \
        while (!(cond))                                                        \
            usleep(10000);                                                     \
    } while (0)

/* A process holding a claim in the file moves to a process-local region
 * (the path became a directory), claims there, and joins a new file: the
 * size it knew goes with it each time, the claims never. */
static void copies(const char *path)
{
    unlink(path);
    struct vgpu_region *r = attach(path);
    vgpu_region_set_context_bytes(r, 1, SIZE);
    CHECK(vgpu_region_claim_context(r, 0) != 0, "claimed in the file");
    sleep(2); /* the watcher remembers the file's sizes every second */
    CHECK(unlink(path) == 0 && mkdir(path, 0700) == 0, "the path unusable");
    WAIT_UNTIL(vgpu_region_is_local(r));
    CHECK(r->ext->context_bytes[0] == 0, "the claim was copied into the "
          "local region: %llx", (unsigned long long)r->ext->context_bytes[0]);
    CHECK(vgpu_region_context_bytes(r, 1) == SIZE, "the size was");
    CHECK(vgpu_region_claim_context(r, 0) != 0, "claimed in the local region");
    CHECK(rmdir(path) == 0, "the path usable again");
    WAIT_UNTIL(!vgpu_region_is_local(r));
    CHECK(raw_word(path, 0) == 0, "the local claim was copied into the file: "
          "%llx", (unsigned long long)raw_word(path, 0));
    CHECK(raw_word(path, 1) == SIZE, "the size was");
    vgpu_region_detach(r);
    printf("copies: sizes carried to the local region and back, claims not\n");
}

static void in_child(void (*scenario)(const char *), const char *path)
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        alarm(60); /* a hang fails */
        scenario(path);
        fflush(stdout);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0, "scenario failed");
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "ctxclaim");
    in_child(claims, path);
    in_child(healed, path);
    in_child(copies, path);
    unlink(path);
    rmdir(path);
    printf("region_context_claim: ok\n");
    return 0;
}
