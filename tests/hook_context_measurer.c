/* One measurer per region and GPU (issue 9, start-up tail): while a
 * context's size is unknown, the first process to create one measures it
 * through NVML; the others create with the guess and never read NVML, and
 * take the published size. Counted by the simulated NVML: one measurement
 * is two readings of the process list, however many processes start
 * together. A measurer killed or stopped mid-measurement does not keep
 * the others waiting, and another process measures later. Contexts take
 * 256 MiB here; reconciliation (which reads NVML too) is kept out of the
 * way with a long VGPU_RECONCILE_MS. Each process has an alarm: a hang
 * fails the test. */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "hook_util.h"

#define CTX (256 * MiB)

/* Poll cond every 10 ms until it holds (the alarms and the test's timeout
 * bound it: a hang fails). */
#define WAIT_UNTIL(cond)                                                       \
    do {                                                                       \
        while (!(cond))                                                        \
            usleep(10000);                                                     \
    } while (0)
#define SLOW_MS "100000" /* a creation that never ends unless killed */

static void fresh(const char *limit)
{
    hook_fresh(1, "8g", limit);
    char n[32];
    snprintf(n, sizeof n, "%llu", (unsigned long long)CTX);
    setenv("FAKEGPU_CTX_BYTES", n, 1);
    unsetenv("VGPU_CONTEXT_BYTES"); /* the size is measured, not told */
    setenv("VGPU_RECONCILE_MS", "100000", 1);
}

/* region_used, or UINT64_MAX while there is no region yet (or it is
 * still being made). */
static uint64_t counted(void)
{
    const char *path = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    struct vgpu_region *r =
        access(path, F_OK) == 0 ? vgpu_region_open_existing(path) : NULL;
    uint64_t used = r != NULL ? vgpu_region_used(r, 0) : UINT64_MAX;
    vgpu_region_detach(r);
    return used;
}

/* The write ends of the pipes that gate and hold starters: each starter
 * closes its copies, so that the parent's close is everyone's end of file. */
static int writers[2] = {-1, -1};

/* A process that retains its primary context after reading end of file
 * from gate, then writes a byte to ready; exits 0 with a context, 10
 * refused. Holds it until hold reads end of file (-1: exits at once). */
static pid_t starter(int gate, int hold, int ready, const char *delay_ms)
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid != 0)
        return pid;
    alarm(60); /* a hang fails */
    for (int i = 0; i < 2; i++)
        if (writers[i] >= 0)
            close(writers[i]);
    if (delay_ms)
        setenv("FAKEGPU_CTX_DELAY_MS", delay_ms, 1);
    else
        unsetenv("FAKEGPU_CTX_DELAY_MS");
    char c;
    if (gate >= 0)
        CHECK(read(gate, &c, 1) >= 0, "gate");
    CU_OK(cuInit(0));
    CUcontext ctx;
    CUresult rc = cuDevicePrimaryCtxRetain(&ctx, 0);
    CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY, "retain: %d",
          (int)rc);
    c = rc == CUDA_SUCCESS ? 'y' : 'n';
    if (ready >= 0)
        CHECK(write(ready, &c, 1) == 1, "ready");
    if (hold >= 0)
        CHECK(read(hold, &c, 1) >= 0, "hold");
    _exit(rc == CUDA_SUCCESS ? 0 : 10);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int exit_code(pid_t pid)
{
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "wait");
    CHECK(WIFEXITED(status), "child %d ended by signal %d", (int)pid,
          WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return WEXITSTATUS(status);
}

/* Eight processes start together in a fresh region: exactly one measures
 * (two NVML readings), every context that fits is made, the driver never
 * holds more than the limit, and the guesses come down to the size. */
static void together(uint64_t limit)
{
    char text[32];
    snprintf(text, sizeof text, "%llu", (unsigned long long)limit);
    fresh(text);
    int go[2], hold[2], ready[2];
    CHECK(pipe(go) == 0 && pipe(hold) == 0 && pipe(ready) == 0, "pipes");
    writers[0] = go[1];
    writers[1] = hold[1];
    pid_t kids[8];
    for (int i = 0; i < 8; i++)
        kids[i] = starter(go[0], hold[0], ready[1], "100"); /* creations overlap */
    close(go[0]);
    close(hold[0]);
    close(go[1]); /* go */
    /* All eight hold a context (they fit; the last waiters need the
     * others' guesses back): every guess settles to the size. */
    for (int i = 0; i < 8; i++) {
        char c;
        CHECK(read(ready[0], &c, 1) == 1, "a starter's answer");
        CHECK(c == 'y', "every context fits, one was refused");
    }
    WAIT_UNTIL(counted() == 8 * CTX);
    uint64_t lists = fakegpu_nvml_process_lists(), peak = fakegpu_device_peak(0);
    close(hold[1]);
    writers[0] = writers[1] = -1;
    int made = 0;
    for (int i = 0; i < 8; i++)
        made += exit_code(kids[i]) == 0;
    printf("  8 together under %llu MiB: %d contexts, %llu NVML list readings, "
           "driver peak %llu MiB\n", (unsigned long long)(limit / MiB), made,
           (unsigned long long)lists, (unsigned long long)(peak / MiB));
    CHECK(made == 8, "all 8 contexts fit: %d made", made);
    CHECK(lists == 2, "one measurement (2 readings), not %llu readings",
          (unsigned long long)lists);
    CHECK(peak <= limit, "the driver held more than the limit");
    CHECK(region_context_bytes(0) == CTX, "the size is published");
    /* They ended with _exit: their slots come back as dead ones. */
    struct vgpu_region *r =
        vgpu_region_open_existing(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    CHECK(r != NULL, "region readable");
    vgpu_region_reclaim(r);
    CHECK(vgpu_region_used(r, 0) == 0, "all returned: %llu MiB",
          (unsigned long long)(vgpu_region_used(r, 0) / MiB));
    vgpu_region_detach(r);
}

static void together_roomy(void) { together(8 * GiB); }
static void together_tight(void) { together(4 * GiB); } /* guesses wait */

/* Late starters: the size is published while other creations still hold
 * their guesses (the driver serializes creations: on an H100, 32 processes
 * took 7 s). Starters that come after the publication fill what is left;
 * the last one finds no room until those guesses shrink, and waits for
 * that (bounded) instead of being refused: every context fits. */
static void late_starters(void)
{
    fresh("4g");
    int hold[2], ready[2];
    CHECK(pipe(hold) == 0 && pipe(ready) == 0, "pipes");
    writers[0] = hold[1]; /* every starter holds its context until the end */
    pid_t a = starter(-1, hold[0], -1, "300"); /* the measurer */
    WAIT_UNTIL(fakegpu_nvml_process_lists() == 1);
    pid_t guessers[3];
    for (int i = 0; i < 3; i++) /* guesses of 1 GiB, held for 3 s */
        guessers[i] = starter(-1, hold[0], -1, "3000");
    WAIT_UNTIL(counted() == 4 * GiB);
    WAIT_UNTIL(region_context_bytes(0) != 0); /* 256 + 3 x 1024 MiB now */
    pid_t late[4];
    for (int i = 0; i < 4; i++) { /* one at a time: 3 fit now, the 4th later */
        late[i] = starter(-1, hold[0], ready[1], NULL);
        char c;
        CHECK(read(ready[0], &c, 1) == 1, "a late starter's answer");
    }
    close(hold[1]); /* all hold their contexts until the last has answered */
    writers[0] = -1;
    int made = 0;
    for (int i = 0; i < 4; i++)
        made += exit_code(late[i]) == 0;
    for (int i = 0; i < 3; i++)
        made += exit_code(guessers[i]) == 0;
    made += exit_code(a) == 0;
    close(hold[0]);
    close(ready[0]);
    close(ready[1]);
    printf("  4 starters after the size was published, 3 guesses still held: "
           "%d of 8 contexts made, driver peak %llu MiB\n", made,
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(made == 8, "8 x 256 MiB fit in 4 GiB: %d made", made);
    CHECK(fakegpu_device_peak(0) <= 4 * GiB, "the driver held more than the limit");
}

/* A region file from before a reboot: its guess mark lies far ahead of
 * this boot's clock. A context that does not fit at the known size is
 * refused at once, not after the bound (10 s); the next guess replaces
 * the mark. */
static void stale_mark(void)
{
    fresh("1g");
    CHECK(exit_code(starter(-1, -1, -1, NULL)) == 0, "the measurer");
    CHECK(region_context_bytes(0) == CTX, "the size is known");
    struct vgpu_region *r =
        vgpu_region_open_existing(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    CHECK(r != NULL, "region readable");
    uint64_t day = 86400ull * 1000 * 1000 * 1000;
    vgpu_region_note_guess(r, 0, (uint64_t)now_ms() * 1000000 + day);
    int hold[2];
    CHECK(pipe(hold) == 0, "pipe");
    writers[0] = hold[1];
    pid_t kids[4];
    for (int i = 0; i < 4; i++) /* 4 x 256 MiB: the limit is full */
        kids[i] = starter(-1, hold[0], -1, NULL);
    WAIT_UNTIL(counted() == GiB);
    uint64_t t0 = now_ms();
    CHECK(exit_code(starter(-1, -1, -1, NULL)) == 10, "the fifth is refused");
    uint64_t waited = now_ms() - t0;
    close(hold[1]);
    writers[0] = -1;
    for (int i = 0; i < 4; i++)
        CHECK(exit_code(kids[i]) == 0, "a context");
    close(hold[0]);
    printf("  a guess mark a day ahead: the fifth context refused after %llu ms\n",
           (unsigned long long)waited);
    CHECK(waited < 5000, "waited for a stale mark: %llu ms", (unsigned long long)waited);
    vgpu_region_note_guess(r, 0, 1); /* a new guess's mark replaces it */
    CHECK(vgpu_region_guesses_until(r, 0) == 1, "the stale mark is replaced");
    vgpu_region_detach(r);
}

/* A measurer in the middle of its measurement: it has read NVML once and
 * its context creation never ends. */
static pid_t stuck_measurer(void)
{
    pid_t a = starter(-1, -1, -1, SLOW_MS);
    WAIT_UNTIL(fakegpu_nvml_process_lists() == 1);
    return a;
}

/* Killed mid-measurement: its claim dies with it; the next measures. */
static void killed_measurer(void)
{
    fresh("4g");
    pid_t a = stuck_measurer();
    CHECK(kill(a, SIGKILL) == 0, "kill");
    int status;
    CHECK(waitpid(a, &status, 0) == a, "wait");
    pid_t b = starter(-1, -1, -1, NULL);
    CHECK(exit_code(b) == 0, "the next process gets its context");
    uint64_t lists = fakegpu_nvml_process_lists();
    printf("  measurer killed: the next one measured (%llu readings in all), "
           "size %llu MiB\n", (unsigned long long)lists,
           (unsigned long long)(region_context_bytes(0) / MiB));
    CHECK(lists == 3, "the next process measured: %llu readings",
          (unsigned long long)lists);
    CHECK(region_context_bytes(0) == CTX, "and published the size");
}

/* Stopped mid-measurement: the others create meanwhile without measuring
 * (no wait); once the claim is older than its bound (5 s), the next
 * process measures. */
static void stopped_measurer(void)
{
    fresh("4g");
    pid_t a = stuck_measurer();
    uint64_t claimed = now_ms();
    CHECK(kill(a, SIGSTOP) == 0, "stop");
    pid_t b = starter(-1, -1, -1, NULL);
    CHECK(exit_code(b) == 0, "a process gets its context meanwhile");
    CHECK(fakegpu_nvml_process_lists() == 1, "without measuring: %llu readings",
          (unsigned long long)fakegpu_nvml_process_lists());
    CHECK(region_context_bytes(0) == 0, "nothing published yet");
    while (now_ms() < claimed + 5500) /* the claim lapses */
        usleep(100000);
    pid_t c = starter(-1, -1, -1, NULL);
    CHECK(exit_code(c) == 0, "a later process gets its context");
    uint64_t lists = fakegpu_nvml_process_lists();
    printf("  measurer stopped: one process created meanwhile without "
           "measuring; a later one measured (%llu readings in all)\n",
           (unsigned long long)lists);
    CHECK(lists == 3, "the later process measured: %llu readings",
          (unsigned long long)lists);
    CHECK(region_context_bytes(0) == CTX, "and published the size");
    CHECK(kill(a, SIGKILL) == 0, "kill");
    CHECK(waitpid(a, NULL, 0) == a, "wait");
}

/* Stopped mid-measurement, holding its guess, which is the whole limit:
 * the next process's guess does not fit, it waits for a measurement that
 * does not come, a bounded time, and is refused (never created over the
 * limit, never hung). */
static void stopped_measurer_waiter(void)
{
    fresh("1g");
    pid_t a = stuck_measurer();
    CHECK(kill(a, SIGSTOP) == 0, "stop");
    pid_t b = starter(-1, -1, -1, NULL);
    CHECK(exit_code(b) == 10, "refused after a bounded wait");
    printf("  measurer stopped with the limit held: the next process was "
           "refused after its bounded wait, driver peak %llu MiB\n",
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held more than the limit");
    CHECK(kill(a, SIGKILL) == 0, "kill");
    CHECK(waitpid(a, NULL, 0) == a, "wait");
}

/* While a measurer's slow creation is under way (*measurer), three
 * processes make their contexts with the guess (1 GiB each); once all
 * hold one, each runs then(i) and exits with what it returns. Returns with
 * the measurement still under way and the three running then(). */
static void guess_holders(pid_t *measurer, pid_t kids[3], int (*then)(int i))
{
    fresh("4g");
    *measurer = starter(-1, -1, -1, "2000");
    WAIT_UNTIL(fakegpu_nvml_process_lists() == 1);
    int ready[2], go[2];
    CHECK(pipe(ready) == 0 && pipe(go) == 0, "pipes");
    for (int i = 0; i < 3; i++) {
        fflush(stdout);
        kids[i] = fork();
        CHECK(kids[i] >= 0, "fork");
        if (kids[i] == 0) {
            alarm(60);
            close(go[1]);
            unsetenv("FAKEGPU_CTX_DELAY_MS");
            CUcontext ctx = fakegpu_context(0); /* with the guess: 1 GiB */
            (void)ctx;
            char c = 'r';
            CHECK(write(ready[1], &c, 1) == 1, "ready");
            CHECK(read(go[0], &c, 1) == 0, "all hold their guess");
            _exit(then(i));
        }
    }
    close(go[0]);
    for (int i = 0; i < 3; i++) {
        char c;
        CHECK(read(ready[0], &c, 1) == 1, "a context");
    }
    CHECK(region_context_bytes(0) == 0, "not measured yet");
    close(go[1]);
}

static int allocate_448(int i)
{
    (void)i;
    CUdeviceptr p;
    return cuMemAlloc_v2(&p, 448 * MiB) == CUDA_SUCCESS ? 0 : 10;
}

/* Processes that create while another measures hold the guess; their
 * first allocation, made before the size is published and refused for
 * the guesses' sake, waits for the measurement instead (the driver never
 * holds more than the limit meanwhile). */
static void allocate_before_published(void)
{
    pid_t a, kids[3];
    guess_holders(&a, kids, allocate_448); /* the limit is full of guesses */
    int granted = 0;
    for (int i = 0; i < 3; i++)
        granted += exit_code(kids[i]) == 0;
    CHECK(exit_code(a) == 0, "the measurer");
    printf("  allocations while the measurement is under way: %d of 3 granted, "
           "%llu NVML readings, driver peak %llu MiB\n", granted,
           (unsigned long long)fakegpu_nvml_process_lists(),
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(granted == 3, "4 x 256 MiB contexts and 3 x 448 MiB fit in 4 GiB");
    CHECK(fakegpu_nvml_process_lists() == 2, "one measurement");
    CHECK(fakegpu_device_peak(0) <= 4 * GiB, "the driver held more than the limit");
}

/* The first two make no CUDA call (their reconciliation threads give the
 * guess back); the third allocates 2 GiB, which fits in what 4 contexts
 * of 256 MiB leave (3 GiB) only once the other two guesses are back. */
static int two_wait_one_allocates(int i)
{
    if (i < 2) {
        sleep(3);
        return 0;
    }
    CUdeviceptr p;
    return cuMemAlloc_v2(&p, 2 * GiB) == CUDA_SUCCESS ? 0 : 10;
}

/* A process whose own guess is settled is refused for the others': two
 * processes made their contexts with the guess and then make no CUDA call
 * (ranks waiting in a barrier: their reconciliation threads give the
 * guess back within 10 ms of the size's publication); a third allocates
 * what fits only once theirs are back. It waits for them instead of being
 * refused (mpi_allreduce_sim refused 256 MiB this way, once in 60 runs). */
static void allocate_beside_guesses(void)
{
    pid_t a, kids[3];
    guess_holders(&a, kids, two_wait_one_allocates);
    int third = exit_code(kids[2]);
    for (int i = 0; i < 2; i++)
        CHECK(exit_code(kids[i]) == 0, "a guess holder");
    CHECK(exit_code(a) == 0, "the measurer");
    printf("  2 GiB beside two others' guesses: %s, driver peak %llu MiB\n",
           third == 0 ? "granted" : "refused",
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(third == 0, "2 GiB refused for other processes' guesses");
    CHECK(fakegpu_device_peak(0) <= 4 * GiB, "the driver held more than the limit");
}

/* The test's fork handler, registered before vgpu's, so that it runs
 * after them in a fork's prepare stage: with vgpu's reconciliation lock
 * held, the forking thread sleeps 2 s. */
static void slow_prepare(void) { usleep(2000 * 1000); }

/* Is this process's reconciliation thread running (by its name)? */
static bool reconcile_thread_runs(void)
{
    bool found = false;
    DIR *d = opendir("/proc/self/task");
    CHECK(d != NULL, "/proc/self/task");
    for (struct dirent *e; !found && (e = readdir(d)) != NULL;) {
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = e->d_name[0] != '.' ? fopen(path, "r") : NULL;
        if (f != NULL) {
            found = fgets(name, sizeof name, f) != NULL &&
                    strcmp(name, "vgpu-reconcile\n") == 0;
            fclose(f);
        }
    }
    closedir(d);
    return found;
}

/* Once this process's reconciliation thread runs (its fork handlers are
 * registered then): a fork, which holds vgpu's reconciliation lock through
 * its slow prepare stage. */
static void *fork_slowly(void *unused)
{
    (void)unused;
    WAIT_UNTIL(reconcile_thread_runs());
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0)
        _exit(0);
    CHECK(waitpid(pid, NULL, 0) == pid, "wait");
    return NULL;
}

/* A context made with the guess wakes its process's reconciliation
 * thread, which gives the guess back once the size is published (ranks
 * in a barrier make no other CUDA call). Here the wake comes while
 * another thread of the process holds the reconciliation lock (a fork;
 * a charge that reads NVML does too): the guess still comes back
 * promptly, not at the thread's next round (VGPU_RECONCILE_MS x 5, 500 s
 * here; the alarm fails the test first). */
static void wake_while_locked(void)
{
    fresh("8g");
    pid_t a = starter(-1, -1, -1, "2000");
    WAIT_UNTIL(fakegpu_nvml_process_lists() == 1);
    fflush(stdout);
    pid_t kid = fork();
    CHECK(kid >= 0, "fork");
    if (kid == 0) {
        alarm(30); /* the guess held till the next round: killed */
        CHECK(pthread_atfork(slow_prepare, NULL, NULL) == 0, "atfork");
        setenv("FAKEGPU_CTX_DELAY_MS", "1000", 1); /* the wake at 1 s */
        CU_OK(cuInit(0));
        pthread_t t;
        CHECK(pthread_create(&t, NULL, fork_slowly, NULL) == 0, "thread");
        CUcontext ctx;
        CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0)); /* with the guess: 1 GiB */
        uint64_t woke = now_ms();
        CHECK(pthread_join(t, NULL) == 0, "join");
        WAIT_UNTIL(region_context_bytes(0) != 0 && counted() == 2 * CTX);
        printf("  a wake while the reconciliation lock was held: the guess "
               "back %llu ms after it\n", (unsigned long long)(now_ms() - woke));
        fflush(stdout);
        _exit(0);
    }
    CHECK(exit_code(kid) == 0, "the guess holder");
    CHECK(exit_code(a) == 0, "the measurer");
}

/* Each scenario its own simulated machine and region file, so that two
 * ctest entries of this program may run at once. */
static void own_files(const char *scenario)
{
    const char *names[] = {"FAKEGPU_STATE", "CUDA_DEVICE_MEMORY_SHARED_CACHE"};
    for (int i = 0; i < 2; i++) {
        const char *was = getenv(names[i]);
        CHECK(was != NULL, "%s must be set", names[i]);
        char path[4200];
        snprintf(path, sizeof path, "%s.%s", was, scenario);
        setenv(names[i], path, 1);
    }
}

static void in_child(const char *name, void (*scenario)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        own_files(name);
        scenario();
        fflush(stdout);
        _exit(0);
    }
    CHECK(exit_code(pid) == 0, "scenario %s failed", name);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*run)(void);
        bool by_name_only; /* a ctest entry of its own (its wait is long) */
    } scenarios[] = {{"roomy", together_roomy, false},
                     {"tight", together_tight, false},
                     {"alloc", allocate_before_published, false},
                     {"beside", allocate_beside_guesses, false},
                     {"wake", wake_while_locked, false},
                     {"late", late_starters, false},
                     {"stalemark", stale_mark, false},
                     {"killed", killed_measurer, false},
                     {"stopped", stopped_measurer, false},
                     {"waiter", stopped_measurer_waiter, true}};
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (argc < 2 ? !scenarios[i].by_name_only
                     : strcmp(argv[1], scenarios[i].name) == 0)
            in_child(scenarios[i].name, scenarios[i].run);
    printf("hook_context_measurer: ok\n");
    return 0;
}
