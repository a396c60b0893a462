/* The seed's remedies against vgpu's default mode, on the same work:
 *   start-up  N processes (8, 32, 64, 128) started at the same instant under
 *             libvgpu.so on the simulated GPU: time from launch to the first
 *             successful allocation (p50, p99, max) and for all of them;
 *   runtime   charge+uncharge and usage-query ns/op, 8 processes at once;
 *   limit     16 processes racing 64 MiB allocations to a 4 GiB limit: bytes
 *             over the limit at the worst instant (the chunks all of them hold
 *             at once, or the simulated driver's own peak if higher);
 *   crash     a process SIGKILLed while holding what the mode holds: time
 *             until the others progress again, bytes not returned.
 * Every run is capped (CAP_SECONDS); a capped run says so.
 *
 *   modes_bench BUILD_DIR OUT_DIR [modes...]
 * VGPU_BENCH_REAL=1 uses the machine's driver; VGPU_BENCH_SIZES=8,32 picks
 * the start-up sizes.
 * writes OUT_DIR/modes.md (a Markdown table) and OUT_DIR/startup.dat. */
#define _GNU_SOURCE
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "../tests/testutil.h"
#include "vgpu/region.h"

#define CAP_SECONDS 60.0
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define MAX_PROCS 128

static const char *all_modes[] = {"legacy", "timeouts", "per-process", "rwlock",
                                  "atomics", "seqlock", "default"};
static int startup_sizes[] = {8, 32, 64, 128};
#define MAX_SIZES 4
static int n_sizes = MAX_SIZES;
/* VGPU_BENCH_REAL=1: the machine's own driver instead of the simulated one. */
static bool real_driver;

/* PATH_MAX: realpath writes up to it (and FORTIFY_SOURCE checks it). */
static char build_dir[PATH_MAX], out_dir[PATH_MAX];
static char region[PATH_MAX + 64], state[PATH_MAX + 64];

struct startup_result {
    double p50, p99, max, wall;
    int done, capped;
};

struct mode_result {
    const char *mode;
    struct startup_result startup[MAX_SIZES];
    double charge_ns, charge_machine_ns, query_ns;
    uint64_t over_limit;
    int granted_min, granted_max;
    int limit_capped;
    double recovery_s;
    uint64_t not_returned;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- Processes under libvgpu.so on the simulated GPU ---- */

static void fresh_files(const char *tag)
{
    snprintf(region, sizeof region, "%s/%s.cache", out_dir, tag);
    snprintf(state, sizeof state, "%s/%s.state", out_dir, tag);
    char lock[PATH_MAX + 80];
    snprintf(lock, sizeof lock, "%s.lock", region);
    unlink(region);
    unlink(state);
    unlink(lock);
}

static void set_child_env(const char *mode)
{
    char lib[PATH_MAX + 32], fake[PATH_MAX + 32];
    snprintf(lib, sizeof lib, "%s/libvgpu.so", build_dir);
    snprintf(fake, sizeof fake, "%s/fakegpu", build_dir);
    setenv("LD_PRELOAD", lib, 1);
    if (!real_driver) {
        setenv("LD_LIBRARY_PATH", fake, 1);
        setenv("FAKEGPU_STATE", state, 1);
        setenv("FAKEGPU_DEVICES", "1", 1);
        setenv("FAKEGPU_MEMORY", "80g", 1);
        setenv("FAKEGPU_CTX_DELAY_MS", "300", 1);
        setenv("FAKEGPU_ALLOC_DELAY_US", "50", 1);
    }
    setenv("CUDA_DEVICE_MEMORY_LIMIT", "4g", 1);
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", region, 1);
    setenv("VGPU_REGION_MODE", mode, 1);
    setenv("LIBCUDA_LOG_LEVEL", "0", 1);
    /* HAMi-core's host-PID detection under its lock file creates a context:
     * model it as one context creation (seed modes only; see README). */
    setenv("VGPU_LEGACY_STARTUP_WORK_MS", "300", 1);
}

static void clear_child_env(void)
{
    const char *names[] = {"LD_PRELOAD", "LD_LIBRARY_PATH", "FAKEGPU_STATE",
                           "FAKEGPU_CTX_DELAY_MS", "FAKEGPU_ALLOC_DELAY_US",
                           "CUDA_DEVICE_MEMORY_SHARED_CACHE", "VGPU_REGION_MODE"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unsetenv(names[i]);
}

struct launch {
    pid_t pid[MAX_PROCS];
    int n;
    int results;    /* read end: one line per process */
    int hold;       /* write end of the children's stdin */
    double t0;
};

/* Fork n children that block on a gate, then exec start_rank `what` at the
 * same instant. Lines they write to fd 3 arrive on l->results. */
static void launch(struct launch *l, int n, const char *what)
{
    int gate[2], results[2], hold[2];
    CHECK(pipe(gate) == 0 && pipe(results) == 0 && pipe(hold) == 0, "pipes");
    double *t0 = mmap(NULL, sizeof *t0, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char exe[PATH_MAX + 32];
    snprintf(exe, sizeof exe, "%s/start_rank", build_dir);
    l->n = n;
    for (int i = 0; i < n; i++) {
        l->pid[i] = fork();
        CHECK(l->pid[i] >= 0, "fork");
        if (l->pid[i] == 0) {
            close(gate[1]);
            close(results[0]);
            close(hold[1]);
            char c;
            if (read(gate[0], &c, 1) != 0)
                _exit(1);
            char text[32];
            snprintf(text, sizeof text, "%.6f", *t0);
            setenv("VGPU_BENCH_T0", text, 1);
            dup2(hold[0], 0);
            dup2(results[1], 3);
            execl(exe, "start_rank", what, (char *)NULL);
            _exit(127);
        }
    }
    close(gate[0]);
    close(results[1]);
    close(hold[0]);
    usleep(200000); /* every child waits at the gate */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    *t0 = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    l->t0 = now_seconds();
    close(gate[1]);
    l->results = results[0];
    l->hold = hold[1];
    munmap(t0, sizeof *t0);
}

/* Read up to n lines of numbers within the cap; returns how many. */
static int collect(struct launch *l, double *values, int n)
{
    char buf[16384];
    size_t len = 0;
    int got = 0;
    while (got < n) {
        double left = CAP_SECONDS - (now_seconds() - l->t0);
        struct pollfd p = {l->results, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)(left * 1000)) <= 0)
            break;
        ssize_t r = read(l->results, buf + len, sizeof buf - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n')) != NULL && got < n) {
            *nl = '\0';
            values[got++] = atof(line);
            line = nl + 1;
        }
        len = strlen(line);
        memmove(buf, line, len + 1);
    }
    return got;
}

static void finish(struct launch *l)
{
    close(l->hold);
    double deadline = now_seconds() + 5;
    for (int i = 0; i < l->n; i++) {
        while (waitpid(l->pid[i], NULL, WNOHANG) == 0) {
            if (now_seconds() > deadline)
                kill(l->pid[i], SIGKILL);
            usleep(1000);
        }
    }
    close(l->results);
}

static struct startup_result startup(const char *mode, int n)
{
    struct startup_result res = {0};
    fresh_files("startup");
    set_child_env(mode);
    struct launch l;
    launch(&l, n, "startup");
    clear_child_env();
    double t[MAX_PROCS];
    res.done = collect(&l, t, n);
    res.wall = now_seconds() - l.t0;
    res.capped = res.done < n;
    for (int i = 0; i < l.n && res.capped; i++)
        kill(l.pid[i], SIGKILL);
    finish(&l);
    if (res.done > 0) {
        qsort(t, (size_t)res.done, sizeof t[0], cmp_double);
        res.p50 = t[(res.done - 1) / 2];
        res.p99 = t[(res.done * 99 + 99) / 100 - 1];
        res.max = t[res.done - 1];
    }
    return res;
}

static uint64_t ledger_peak(void)
{
    if (real_driver)
        return 0; /* the real driver keeps no peak we can read */
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "FAKEGPU_STATE='%s' '%s/fakegpu-ledger' --json",
             state, build_dir);
    FILE *f = popen(cmd, "r");
    char out[4096] = "";
    size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
    out[n] = '\0';
    if (f)
        pclose(f);
    char *peak = strstr(out, "\"peak\":");
    return peak ? strtoull(peak + 7, NULL, 10) : 0;
}

static void limit_race(struct mode_result *m)
{
    m->granted_min = 1 << 30;
    for (int round = 0; round < 3; round++) {
        fresh_files("race");
        set_child_env(m->mode);
        struct launch l;
        launch(&l, 16, "race");
        clear_child_env();
        double counts[16];
        int got = collect(&l, counts, 16);
        uint64_t peak = ledger_peak();
        if (got < 16)
            m->limit_capped = 1;
        for (int i = 0; i < l.n && got < 16; i++)
            kill(l.pid[i], SIGKILL);
        finish(&l);
        int granted = 0;
        for (int i = 0; i < got; i++)
            granted += (int)counts[i];
        /* Every process holds its chunks until released: at that instant
         * the driver has handed out all of them at once. */
        uint64_t held = (uint64_t)granted * 64 * MiB;
        if (held > peak)
            peak = held;
        if (granted < m->granted_min)
            m->granted_min = granted;
        if (granted > m->granted_max)
            m->granted_max = granted;
        if (peak > 4 * GiB && peak - 4 * GiB > m->over_limit)
            m->over_limit = peak - 4 * GiB;
    }
}

/* ---- The region alone, processes forked from here ---- */

static struct vgpu_region *attach(const char *mode)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = region;
    o.mode = mode;
    o.limits[0] = 1ull << 40;
    return vgpu_region_attach(&o);
}

struct shared {
    uint64_t ops[16];
    int stop;
};

/* Attach n workers one after another (the seed's lock file would make
 * simultaneous attaches sleep: that is measured by startup, not here), then
 * run `work` in all of them. */
static void run_workers(const char *mode, int n, struct shared *sh,
                        void (*work)(struct vgpu_region *, struct shared *, int),
                        int *go_write)
{
    int go[2];
    CHECK(pipe(go) == 0, "pipe");
    for (int i = 0; i < n; i++) {
        int ready[2];
        CHECK(pipe(ready) == 0, "pipe");
        if (fork() == 0) {
            close(go[1]);
            close(ready[0]);
            struct vgpu_region *r = attach(mode);
            close(ready[1]);
            char c;
            if (read(go[0], &c, 1) != 0 || r == NULL)
                _exit(1);
            work(r, sh, i);
            vgpu_region_detach(r);
            _exit(0);
        }
        close(ready[1]);
        char c;
        CHECK(read(ready[0], &c, 1) == 0, "worker attached");
        close(ready[0]);
    }
    close(go[0]);
    *go_write = go[1];
}

static void charge_work(struct vgpu_region *r, struct shared *sh, int i)
{
    double end = now_seconds() + 1.0;
    uint64_t ops = 0;
    while (now_seconds() < end)
        for (int k = 0; k < 64; k++, ops++) {
            if (vgpu_region_try_charge(r, 0, 2 * MiB, VGPU_CHARGE_DATA))
                vgpu_region_settle(r, 0, 2 * MiB, VGPU_CHARGE_DATA, true);
            vgpu_region_uncharge(r, 0, 2 * MiB, VGPU_CHARGE_DATA);
        }
    sh->ops[i] = ops;
}

static void query_work(struct vgpu_region *r, struct shared *sh, int i)
{
    double end = now_seconds() + 1.0;
    uint64_t ops = 0;
    volatile uint64_t sink = 0;
    while (now_seconds() < end)
        for (int k = 0; k < 64; k++, ops++)
            sink += vgpu_region_used(r, 0);
    sh->ops[i] = ops;
}

static void runtime(struct mode_result *m, struct shared *sh)
{
    for (int phase = 0; phase < 2; phase++) {
        fresh_files("runtime");
        memset(sh, 0, sizeof *sh);
        int go;
        run_workers(m->mode, 8, sh, phase ? query_work : charge_work, &go);
        double t0 = now_seconds();
        close(go);
        CHECK(wait_children(8) == 0, "runtime worker failed");
        double elapsed = now_seconds() - t0;
        double per[8], total = 0;
        for (int i = 0; i < 8; i++) {
            per[i] = sh->ops[i] ? 1e9 / (double)sh->ops[i] : 0;
            total += (double)sh->ops[i];
        }
        qsort(per, 8, sizeof per[0], cmp_double);
        if (phase == 0) {
            m->charge_ns = per[3];
            m->charge_machine_ns = total ? elapsed * 1e9 / total : 0;
        } else {
            m->query_ns = per[3];
        }
    }
}

static void crash_work(struct vgpu_region *r, struct shared *sh, int i)
{
    while (!__atomic_load_n(&sh->stop, __ATOMIC_RELAXED)) {
        if (vgpu_region_try_charge(r, 0, MiB, VGPU_CHARGE_DATA))
            vgpu_region_settle(r, 0, MiB, VGPU_CHARGE_DATA, true);
        vgpu_region_uncharge(r, 0, MiB, VGPU_CHARGE_DATA);
        __atomic_add_fetch(&sh->ops[i], 1, __ATOMIC_RELAXED);
    }
}

static void crash(struct mode_result *m, struct shared *sh)
{
    fresh_files("crash");
    memset(sh, 0, sizeof *sh);
    int go;
    run_workers(m->mode, 4, sh, crash_work, &go);
    int held[2];
    CHECK(pipe(held) == 0, "pipe");
    pid_t victim = fork();
    if (victim == 0) {
        struct vgpu_region *r = attach(m->mode);
        if (r && vgpu_region_try_charge(r, 0, 256 * MiB, VGPU_CHARGE_DATA))
            vgpu_region_settle(r, 0, 256 * MiB, VGPU_CHARGE_DATA, true);
        vgpu_region_debug_hold(r);
        if (write(held[1], "x", 1) != 1)
            _exit(1);
        pause();
    }
    close(go); /* the workers start */
    char c;
    CHECK(read(held[0], &c, 1) == 1, "victim holds");
    kill(victim, SIGKILL);
    waitpid(victim, NULL, 0);
    double t0 = now_seconds();
    uint64_t before[4];
    for (int i = 0; i < 4; i++)
        before[i] = __atomic_load_n(&sh->ops[i], __ATOMIC_RELAXED);
    int progressed = 0;
    while (progressed < 4 && now_seconds() - t0 < CAP_SECONDS) {
        progressed = 0;
        for (int i = 0; i < 4; i++)
            progressed += __atomic_load_n(&sh->ops[i], __ATOMIC_RELAXED) > before[i] + 1;
        usleep(1000);
    }
    m->recovery_s = progressed < 4 ? -1 : now_seconds() - t0;
    __atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
    double deadline = now_seconds() + CAP_SECONDS;
    int left = 4;
    while (left > 0 && now_seconds() < deadline)
        if (waitpid(-1, NULL, WNOHANG) > 0)
            left--;
        else
            usleep(1000);
    struct vgpu_region *view = vgpu_region_open_existing(region);
    if (view) {
        vgpu_region_reclaim(view); /* as `vgpuctl reclaim` would */
        m->not_returned = vgpu_region_used(view, 0);
        vgpu_region_detach(view);
    }
}

/* ---- Report ---- */

static void print_table(FILE *f, struct mode_result *res, int n)
{
    fprintf(f, "| metric |");
    for (int i = 0; i < n; i++)
        fprintf(f, " %s |", res[i].mode);
    fprintf(f, "\n|---|");
    for (int i = 0; i < n; i++)
        fprintf(f, "---|");
    fprintf(f, "\n");
    for (int s = 0; s < n_sizes; s++) {
        fprintf(f, "| start-up, %d processes: p50 / p99 / max s |", startup_sizes[s]);
        for (int i = 0; i < n; i++) {
            struct startup_result *r = &res[i].startup[s];
            if (r->capped)
                fprintf(f, " capped at %.0f s: %d of %d done |", CAP_SECONDS,
                        r->done, startup_sizes[s]);
            else
                fprintf(f, " %.2f / %.2f / %.2f |", r->p50, r->p99, r->max);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "| charge+uncharge ns/op, 8 processes (each / machine-wide) |");
    for (int i = 0; i < n; i++)
        fprintf(f, " %.0f / %.0f |", res[i].charge_ns, res[i].charge_machine_ns);
    fprintf(f, "\n| usage query ns/op, 8 processes |");
    for (int i = 0; i < n; i++)
        fprintf(f, " %.0f |", res[i].query_ns);
    fprintf(f, "\n| 16 processes racing 64 MiB to 4 GiB: worst MiB over the limit held at once, 3 rounds |");
    for (int i = 0; i < n; i++)
        fprintf(f, " %llu%s |", (unsigned long long)(res[i].over_limit / MiB),
                res[i].limit_capped ? " (capped)" : "");
    fprintf(f, "\n| chunks granted per round (min-max; 64 = exactly the limit) |");
    for (int i = 0; i < n; i++)
        fprintf(f, " %d-%d |", res[i].granted_min, res[i].granted_max);
    fprintf(f, "\n| holder SIGKILLed: s until the others progress |");
    for (int i = 0; i < n; i++)
        if (res[i].recovery_s < 0)
            fprintf(f, " > %.0f (capped) |", CAP_SECONDS);
        else
            fprintf(f, " %.3f |", res[i].recovery_s);
    fprintf(f, "\n| holder SIGKILLed: MiB not returned after reclaim |");
    for (int i = 0; i < n; i++)
        fprintf(f, " %llu |", (unsigned long long)(res[i].not_returned / MiB));
    fprintf(f, "\n");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: modes_bench BUILD_DIR OUT_DIR [modes...]\n");
        return 2;
    }
    CHECK(realpath(argv[1], build_dir) != NULL, "build dir");
    mkdir(argv[2], 0755);
    CHECK(realpath(argv[2], out_dir) != NULL, "out dir");
    real_driver = getenv("VGPU_BENCH_REAL") && strcmp(getenv("VGPU_BENCH_REAL"), "1") == 0;
    if (getenv("VGPU_BENCH_SIZES")) { /* e.g. "8,32" */
        char list[64];
        snprintf(list, sizeof list, "%s", getenv("VGPU_BENCH_SIZES"));
        n_sizes = 0;
        for (char *t = strtok(list, ","); t && n_sizes < MAX_SIZES; t = strtok(NULL, ","))
            if (atoi(t) > 0 && atoi(t) <= MAX_PROCS)
                startup_sizes[n_sizes++] = atoi(t);
    }
    const char **modes = argc > 3 ? (const char **)argv + 3 : all_modes;
    int n = argc > 3 ? argc - 3 : (int)(sizeof all_modes / sizeof all_modes[0]);
    struct mode_result res[16];
    memset(res, 0, sizeof res);
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < n; i++) {
        res[i].mode = modes[i];
        for (int s = 0; s < n_sizes; s++) {
            res[i].startup[s] = startup(modes[i], startup_sizes[s]);
            fprintf(stderr, "%s: %d processes started, max %.2f s%s\n", modes[i],
                    startup_sizes[s], res[i].startup[s].max,
                    res[i].startup[s].capped ? " (capped)" : "");
        }
        runtime(&res[i], sh);
        limit_race(&res[i]);
        crash(&res[i], sh);
        fprintf(stderr, "%s: done\n", modes[i]);
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/modes.md", out_dir);
    FILE *f = fopen(path, "w");
    print_table(f, res, n);
    fclose(f);
    print_table(stdout, res, n);
    snprintf(path, sizeof path, "%s/startup.dat", out_dir);
    f = fopen(path, "w");
    fprintf(f, "# processes, then max start-up seconds per mode (-1: capped)\n#");
    for (int i = 0; i < n; i++)
        fprintf(f, " %s", res[i].mode);
    fprintf(f, "\n");
    for (int s = 0; s < n_sizes; s++) {
        fprintf(f, "%d", startup_sizes[s]);
        for (int i = 0; i < n; i++)
            fprintf(f, " %.4f", res[i].startup[s].capped ? CAP_SECONDS
                                                         : res[i].startup[s].max);
        fprintf(f, "\n");
    }
    fclose(f);
    return 0;
}
