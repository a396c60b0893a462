/* Every synchronization mode, briefly: it is stored in the file and wins
 * over a later process's wish; it charges, refuses over the limit, rolls
 * back and uncharges; four processes charging together leave zero behind;
 * and, where a mode holds a lock at run time, a process SIGKILLed while
 * holding it stops the others only for that mode's timeout. */
#include <signal.h>
#include <stdint.h>

#include "testutil.h"
#include "vgpu/region.h"

#define MiB (1ull << 20)
static const char *modes[] = {"default", "legacy", "timeouts", "per-process",
                              "rwlock", "atomics", "seqlock"};
static char path[512];

static struct vgpu_region *attach(const char *mode)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.mode = mode;
    o.limits[0] = 100 * MiB;
    return vgpu_region_attach(&o);
}

static void single(const char *mode)
{
    struct vgpu_region *r = attach(mode);
    CHECK(r && strcmp(vgpu_region_mode(r), mode) == 0, "%s: attach", mode);
    struct vgpu_region *other = attach(strcmp(mode, "default") ? "default" : "legacy");
    CHECK(other && strcmp(vgpu_region_mode(other), mode) == 0,
          "%s: the file's mode wins", mode);
    vgpu_region_detach(other);
    CHECK(vgpu_region_try_charge(r, 0, 60 * MiB, VGPU_CHARGE_DATA), "%s: 60", mode);
    vgpu_region_settle(r, 0, 60 * MiB, VGPU_CHARGE_DATA, true);
    CHECK(vgpu_region_used(r, 0) == 60 * MiB, "%s: used 60", mode);
    CHECK(!vgpu_region_try_charge(r, 0, 41 * MiB, VGPU_CHARGE_DATA), "%s: over", mode);
    CHECK(vgpu_region_try_charge(r, 0, 10 * MiB, VGPU_CHARGE_DATA), "%s: 10", mode);
    vgpu_region_settle(r, 0, 10 * MiB, VGPU_CHARGE_DATA, false);
    CHECK(vgpu_region_used(r, 0) == 60 * MiB, "%s: driver failure", mode);
    vgpu_region_uncharge(r, 0, 60 * MiB, VGPU_CHARGE_DATA);
    CHECK(vgpu_region_used(r, 0) == 0, "%s: back to zero", mode);
    vgpu_region_detach(r);
}

static void concurrent(const char *mode)
{
    /* Attach one after another (the legacy start-up lock file would make
     * simultaneous attaches sleep seconds), then charge together. */
    int go[2];
    CHECK(pipe(go) == 0, "pipe");
    for (int p = 0; p < 4; p++) {
        int ready[2];
        CHECK(pipe(ready) == 0, "pipe");
        if (fork() == 0) {
            struct vgpu_region *r = attach(mode);
            CHECK(r != NULL, "attach");
            close(ready[0]);
            close(ready[1]);
            close(go[1]);
            char c;
            CHECK(read(go[0], &c, 1) == 0, "go");
            uint64_t seed = (uint64_t)getpid();
            for (int i = 0; i < 2000; i++) {
                uint64_t b = 1 + rng_next(&seed) % MiB;
                if (vgpu_region_try_charge(r, 0, b, VGPU_CHARGE_DATA)) {
                    vgpu_region_settle(r, 0, b, VGPU_CHARGE_DATA, true);
                    vgpu_region_uncharge(r, 0, b, VGPU_CHARGE_DATA);
                }
            }
            vgpu_region_detach(r);
            _exit(0);
        }
        close(ready[1]);
        char c;
        CHECK(read(ready[0], &c, 1) == 0, "child attached");
        close(ready[0]);
    }
    close(go[0]);
    close(go[1]);
    CHECK(wait_children(4) == 0, "%s: a child failed", mode);
    struct vgpu_region *view = vgpu_region_open_existing(path);
    CHECK(vgpu_region_used(view, 0) == 0, "%s: used %llu after all left", mode,
          (unsigned long long)vgpu_region_used(view, 0));
    CHECK(vgpu_region_live_count(view) == 0, "%s: slots held", mode);
    vgpu_region_detach(view);
}

/* A process holding the mode's runtime lock dies; the others wait at most
 * the mode's timeout (bounded here by `bound` seconds). */
static void killed_holder(const char *mode, double bound)
{
    struct vgpu_region *r = attach(mode);
    int held[2];
    CHECK(pipe(held) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        vgpu_region_debug_hold(r);
        CHECK(write(held[1], "x", 1) == 1, "signal");
        pause();
    }
    char c;
    CHECK(read(held[0], &c, 1) == 1, "holder ready");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    double t0 = now_seconds();
    CHECK(vgpu_region_try_charge(r, 0, MiB, VGPU_CHARGE_DATA), "%s: charge", mode);
    vgpu_region_settle(r, 0, MiB, VGPU_CHARGE_DATA, true);
    double waited = now_seconds() - t0;
    printf("%s: progress %.3f s after its lock holder was killed\n", mode, waited);
    CHECK(waited < bound, "%s: blocked %.1f s", mode, waited);
    vgpu_region_uncharge(r, 0, MiB, VGPU_CHARGE_DATA);
    vgpu_region_detach(r);
}

int main(void)
{
    test_region_path(path, sizeof path, "modes");
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        unlink(path);
        single(modes[m]);
        concurrent(modes[m]);
        printf("%s: ok\n", modes[m]);
    }
    unlink(path);
    killed_holder("default", 1.0);
    unlink(path);
    killed_holder("timeouts", 10.0);
    unlink(path);
    killed_holder("rwlock", 5.0);
    unlink(path);
    printf("modes_smoke: ok\n");
    return 0;
}
