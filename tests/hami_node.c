/* A node stood up the way HAMi does it, on the simulated GPU, watched by a
 * reader that applies the rules of HAMi's node monitor (pkg/monitor/nvidia:
 * cudevshr.go's loadCache and the v1 reader, main of August 2026), restated
 * here from their behaviour with literal offsets, independent of vgpu's own
 * struct definitions.
 *
 * The device plugin's side: the host directory
 * $HOOK_PATH/vgpu/containers/<podUID>_<ctr> bind-mounted at the container's
 * $HOOK_PATH/vgpu, the library bind-mounted read-only at
 * $HOOK_PATH/vgpu/libvgpu.so inside it (which leaves an empty "libvgpu.so"
 * mount point in the host directory, as a container runtime does), the
 * plugin's environment, and /etc/ld.so.preload naming the library, bound
 * over /etc/ld.so.preload in a private mount namespace. Workers are exec'd
 * in that namespace without LD_PRELOAD: the loader takes vgpu from
 * /etc/ld.so.preload, as in a HAMi container.
 *
 *   hami_node LIBVGPU            memory, limits, kills, exits (must pass)
 *   hami_node LIBVGPU feedback   recent_kernel and the launch side
 *
 * Exits 77 (ctest SKIP_RETURN_CODE), saying why, where a private mount
 * namespace cannot be made (not root, no CAP_SYS_ADMIN). */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "fakegpu_util.h"
#include "hami_offsets.h"

#define SKIP 77
#define MiB (1ull << 20)
#define DEVICES 2
#define CTX_BYTES (64 * MiB)

/* ---- The monitor's reader ---------------------------------------------- */

#define HEADER_SIZE 12

/* A slot's parts per device, as the monitor names them. */
enum part {
    CONTEXT = USED_CONTEXT,
    MODULE = USED_MODULE,
    BUFFER = USED_DATA,
    TOTAL = USED_TOTAL
};

struct monitor {
    unsigned char *data;
    size_t size;
    char cache[2048];
};

static uint64_t rd64(const struct monitor *m, size_t at)
{
    return __atomic_load_n((const uint64_t *)(const void *)(m->data + at),
                           __ATOMIC_RELAXED);
}

static int32_t rd32(const struct monitor *m, size_t at)
{
    return __atomic_load_n((const int32_t *)(const void *)(m->data + at),
                           __ATOMIC_RELAXED);
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int no_dots(const struct dirent *e)
{
    return strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
}

/* Go's os.ReadDir sorts by name, byte by byte. */
static int bytewise(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* How many names the monitor's two-file rule counts in dir. */
static int rule_matches(const char *dir)
{
    struct dirent **list;
    int n = scandir(dir, &list, no_dots, bytewise);
    CHECK(n >= 0, "scandir %s", dir);
    int matched = 0;
    for (int i = 0; i < n; i++) {
        const char *name = list[i]->d_name;
        matched += strstr(name, "libvgpu.so") != NULL || has_suffix(name, ".cache");
        free(list[i]);
    }
    free(list);
    return matched;
}

/* loadCache: false (with why) where the monitor would skip the directory. */
static bool monitor_load(const char *dir, struct monitor *m, const char **why)
{
    if (rule_matches(dir) > 2) {
        *why = "cache num not matched";
        return false;
    }
    struct dirent **list;
    int n = scandir(dir, &list, no_dots, bytewise);
    CHECK(n >= 0, "scandir");
    m->cache[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *name = list[i]->d_name;
        if (m->cache[0] == '\0' && strstr(name, "libvgpu.so") == NULL &&
            has_suffix(name, ".cache"))
            CHECK(snprintf(m->cache, sizeof m->cache, "%s/%s", dir, name) <
                      (int)sizeof m->cache, "path too long");
        free(list[i]);
    }
    free(list);
    *why = "no cache file (no CUDA process yet)";
    if (m->cache[0] == '\0')
        return false;
    struct stat st;
    CHECK(stat(m->cache, &st) == 0, "stat %s", m->cache);
    *why = "cache file size too small";
    if (st.st_size < HEADER_SIZE)
        return false;
    int fd = open(m->cache, O_RDWR);
    CHECK(fd >= 0, "open %s read-write", m->cache);
    m->size = (size_t)st.st_size;
    m->data = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    CHECK(m->data != MAP_FAILED, "mmap");
    *why = "magic flag not matched";
    if (rd32(m, OFF_MAGIC) != HAMI_MAGIC_VALUE)
        return false;
    *why = "cast as v0 (HAMi-core's old layout), not v1";
    if (m->size >= HAMI_V0_SIZE && m->size < HAMI_V1_SIZE)
        return false;
    *why = "unknown cache file size or version";
    return rd32(m, OFF_MAJOR) == 1 && m->size >= HAMI_V1_SIZE;
}

static int device_num(const struct monitor *m)
{
    uint64_t n = rd64(m, OFF_DEVICE_NUM);
    return n < 16 ? (int)n : 16;
}

static int procnum(const struct monitor *m)
{
    int32_t n = rd32(m, OFF_PROCNUM);
    return n < 0 ? 0 : n > 1024 ? 1024 : n;
}

static size_t slot_at(int i)
{
    return OFF_PROCS + (size_t)i * SLOT_SIZE;
}

/* DeviceMemory{Total,ContextSize,ModuleSize,BufferSize}: live slots only. */
static uint64_t device_sum(const struct monitor *m, int dev, enum part p)
{
    uint64_t v = 0;
    for (int i = 0; i < procnum(m); i++)
        if (rd32(m, slot_at(i) + SLOT_STATUS) != 0)
            v += rd64(m, slot_at(i) + SLOT_USED + (size_t)dev * SLOT_USED_SIZE + p);
    return v;
}

/* SetDeviceMemoryLimit: every device at once. */
static void monitor_set_limit(const struct monitor *m, uint64_t bytes)
{
    for (int i = 0; i < device_num(m); i++)
        __atomic_store_n((uint64_t *)(void *)(m->data + OFF_LIMIT + 8 * i), bytes,
                         __ATOMIC_RELAXED);
}

/* ---- The simulated driver's ground truth -------------------------------- */

static void device_uuid(int dev, char out[48])
{
    CUuuid u;
    CU_OK(cuDeviceGetUuid_v2(&u, dev));
    const unsigned char *b = (const unsigned char *)u.bytes;
    snprintf(out, 48, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5],
             b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* ---- Workers: the container's processes ------------------------------- */

struct worker {
    pid_t pid;
    int to;
    FILE *from;
    bool live;
    uint64_t context[DEVICES], buffer[DEVICES]; /* what it holds, expected */
};

#define MAX_WORKERS 8
static struct worker workers[MAX_WORKERS];
static int nworkers;
static char self_exe[4096];

static void say(struct worker *w, const char *line)
{
    size_t n = strlen(line);
    CHECK(write(w->to, line, n) == (ssize_t)n, "write to worker %d", (int)w->pid);
}

/* The worker's next line; waits at most ms (-1: for good; a hang is then
 * ctest's timeout). NULL when nothing came in time. */
static char *hear(struct worker *w, int ms, char *buf, size_t n)
{
    struct pollfd p = {.fd = fileno(w->from), .events = POLLIN};
    if (ms >= 0 && poll(&p, 1, ms) == 0)
        return NULL;
    CHECK(fgets(buf, (int)n, w->from) != NULL, "worker %d said nothing",
          (int)w->pid);
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

/* threads 0: the main thread allocates; each allocating thread takes
 * `bytes` on every device in devs (a bit mask). */
static struct worker *spawn(int threads, uint64_t bytes, unsigned devs)
{
    CHECK(nworkers < MAX_WORKERS, "too many workers");
    struct worker *w = &workers[nworkers++];
    /* Close-on-exec: a worker holds no pipe but its own stdin and stdout,
     * so each sees end-of-file when the node goes. */
    int down[2], up[2];
    CHECK(pipe2(down, O_CLOEXEC) == 0 && pipe2(up, O_CLOEXEC) == 0, "pipe");
    w->pid = fork();
    CHECK(w->pid >= 0, "fork");
    if (w->pid == 0) {
        dup2(down[0], 0);
        dup2(up[1], 1);
        char t[16], b[32], d[16];
        snprintf(t, sizeof t, "%d", threads);
        snprintf(b, sizeof b, "%llu", (unsigned long long)bytes);
        snprintf(d, sizeof d, "%u", devs);
        execl(self_exe, "hami_node", "worker", t, b, d, (char *)NULL);
        _exit(127);
    }
    close(down[0]);
    close(up[1]);
    w->to = down[1];
    w->from = fdopen(up[0], "r");
    w->live = true;
    int allocators = threads > 0 ? threads : 1;
    for (int d = 0; d < DEVICES; d++)
        if (devs & (1u << d)) {
            w->context[d] = CTX_BYTES;
            w->buffer[d] = (uint64_t)allocators * bytes;
        }
    char line[128];
    CHECK(strcmp(hear(w, -1, line, sizeof line), "ready") == 0,
          "worker %d: %s", (int)w->pid, line);
    return w;
}

static void reaped(struct worker *w, bool killed)
{
    int status;
    CHECK(waitpid(w->pid, &status, 0) == w->pid, "waitpid");
    if (killed)
        CHECK(WIFSIGNALED(status), "worker %d was killed", (int)w->pid);
    else
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "worker %d exited with %d", (int)w->pid, status);
    fclose(w->from);
    close(w->to);
    w->live = false;
}

/* ---- What the monitor must see ----------------------------------------- */

struct expect {
    uint64_t part[DEVICES][2]; /* context, buffer */
    int live;
};

static struct expect expected(void)
{
    struct expect e;
    memset(&e, 0, sizeof e);
    for (int i = 0; i < nworkers; i++) {
        if (!workers[i].live)
            continue;
        e.live++;
        for (int d = 0; d < DEVICES; d++) {
            e.part[d][0] += workers[i].context[d];
            e.part[d][1] += workers[i].buffer[d];
        }
    }
    return e;
}

static int region_dev_of(const struct monitor *m, const char *uuid)
{
    for (int i = 0; i < device_num(m); i++)
        if (m->data[OFF_UUIDS + i * UUID_LEN] != 0 &&
            strncmp((const char *)m->data + OFF_UUIDS + i * UUID_LEN, uuid, 40) == 0)
            return i;
    return -1;
}

/* Everything the monitor exports for the container, against the driver's
 * ledger (per GPU, by UUID) and against what the workers hold (per part). */
static void at_rest(const struct monitor *m, const char *dir, const char *when,
                    const uint64_t limits[DEVICES])
{
    CHECK(rule_matches(dir) <= 2, "%s: the monitor would refuse %s", when, dir);
    struct expect e = expected();
    for (int phys = 0; phys < DEVICES; phys++) {
        char uuid[48];
        device_uuid(phys, uuid);
        int d = region_dev_of(m, uuid);
        CHECK(d >= 0, "%s: %s not among the region's uuids", when, uuid);
        uint64_t ledger = fakegpu_device_used(phys);
        uint64_t total = device_sum(m, d, TOTAL), ctx = device_sum(m, d, CONTEXT);
        uint64_t module = device_sum(m, d, MODULE), buf = device_sum(m, d, BUFFER);
        printf("%s: GPU %d: ledger %llu, monitor total %llu (context %llu, "
               "module %llu, buffer %llu), limit %llu\n", when, phys,
               (unsigned long long)ledger, (unsigned long long)total,
               (unsigned long long)ctx, (unsigned long long)module,
               (unsigned long long)buf,
               (unsigned long long)rd64(m, OFF_LIMIT + 8 * (size_t)d));
        CHECK(total == ledger, "%s: GPU %d: monitor %llu != driver %llu", when,
              phys, (unsigned long long)total, (unsigned long long)ledger);
        CHECK(ctx == e.part[phys][0], "%s: GPU %d: context %llu, expected %llu",
              when, phys, (unsigned long long)ctx,
              (unsigned long long)e.part[phys][0]);
        CHECK(buf == e.part[phys][1], "%s: GPU %d: buffer %llu, expected %llu",
              when, phys, (unsigned long long)buf,
              (unsigned long long)e.part[phys][1]);
        CHECK(ctx + module + buf == total, "%s: GPU %d: parts do not add up",
              when, phys);
        CHECK(rd64(m, OFF_LIMIT + 8 * (size_t)d) == limits[phys],
              "%s: GPU %d: limit", when, phys);
    }
    int live = 0;
    for (int i = 0; i < procnum(m); i++) {
        size_t s = slot_at(i);
        if (rd32(m, s + SLOT_STATUS) == 0)
            continue;
        live++;
        int32_t pid = rd32(m, s + SLOT_PID), host = rd32(m, s + SLOT_HOSTPID);
        bool ours = false;
        for (int k = 0; k < nworkers; k++)
            ours |= workers[k].live && workers[k].pid == pid;
        CHECK(ours, "%s: live slot %d of pid %d, not a live worker", when, i, pid);
        /* One pid namespace here: the host's pid is the pid, or unknown. */
        CHECK(host == 0 || host == pid, "%s: slot %d hostpid %d", when, i, host);
    }
    CHECK(live == e.live, "%s: %d live slots for %d workers", when, live, e.live);
    CHECK(rd32(m, OFF_PRIORITY) == 0, "%s: priority from CUDA_TASK_PRIORITY", when);
}

/* ---- The worker program ------------------------------------------------ */

static CUcontext ctxs[DEVICES];
static uint64_t alloc_bytes;
static unsigned alloc_devs;
static CUdeviceptr held[64][DEVICES];

static void *allocator(void *arg)
{
    intptr_t k = (intptr_t)arg;
    for (int d = 0; d < DEVICES; d++)
        if (alloc_devs & (1u << d)) {
            CU_OK(cuCtxSetCurrent(ctxs[d]));
            CU_OK(cuMemAlloc_v2(&held[k][d], alloc_bytes));
        }
    return NULL;
}

static bool preloaded_from_etc(void)
{
    if (getenv("LD_PRELOAD") != NULL)
        return false;
    FILE *f = fopen("/proc/self/maps", "re");
    char line[4200];
    bool found = false;
    while (f && fgets(line, sizeof line, f))
        found |= strstr(line, "/vgpu/libvgpu.so") != NULL;
    if (f)
        fclose(f);
    return found;
}

/* One 100 us kernel on GPU 0 (the simulated driver takes any function and
 * reads the duration from the first parameter), found by name. */
static bool launch_one(void)
{
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, unsigned, CUstream, void **, void **);
    *(void **)&launch = dlsym(RTLD_DEFAULT, "cuLaunchKernel");
    if (launch == NULL)
        return false;
    static char function; /* any non-NULL handle */
    uint32_t us = 100;
    void *params[] = {&us};
    CU_OK(cuCtxSetCurrent(ctxs[0]));
    return launch((CUfunction)(void *)&function, 1, 1, 1, 1, 1, 1, 0, NULL,
                  params, NULL) == CUDA_SUCCESS &&
           cuCtxSynchronize() == CUDA_SUCCESS;
}

static int worker(int threads, uint64_t bytes, unsigned devs)
{
    CHECK(preloaded_from_etc(), "libvgpu.so not loaded through /etc/ld.so.preload");
    alloc_bytes = bytes;
    alloc_devs = devs;
    CU_OK(cuInit(0));
    for (int d = 0; d < DEVICES; d++)
        if (devs & (1u << d)) {
            CUdevice dev;
            CU_OK(cuDeviceGet(&dev, d));
            CU_OK(cuDevicePrimaryCtxRetain(&ctxs[d], dev));
        }
    int n = threads > 0 ? threads : 1;
    CHECK(n <= 64, "threads");
    if (threads == 0) {
        allocator((void *)0);
    } else {
        pthread_t t[64];
        for (intptr_t k = 0; k < threads; k++)
            CHECK(pthread_create(&t[k], NULL, allocator, (void *)k) == 0, "thread");
        for (int k = 0; k < threads; k++)
            pthread_join(t[k], NULL);
    }
    printf("ready\n");
    fflush(stdout);
    char line[128];
    while (fgets(line, sizeof line, stdin) != NULL) {
        int dev;
        unsigned long long size;
        if (sscanf(line, "try %d %llu", &dev, &size) == 2) {
            CUdeviceptr p;
            CU_OK(cuCtxSetCurrent(ctxs[dev]));
            CUresult rc = cuMemAlloc_v2(&p, size);
            if (rc == CUDA_SUCCESS)
                CU_OK(cuMemFree_v2(p));
            printf("%s\n", rc == CUDA_SUCCESS ? "ok" : "oom");
        } else if (strncmp(line, "launch", 6) == 0) {
            printf("%s\n", launch_one() ? "ok" : "no-launch");
        } else if (strncmp(line, "free-exit", 9) == 0) {
            for (int k = 0; k < n; k++)
                for (int d = 0; d < DEVICES; d++)
                    if (held[k][d])
                        CU_OK(cuMemFree_v2(held[k][d]));
            for (int d = 0; d < DEVICES; d++)
                if (ctxs[d])
                    CU_OK(cuDevicePrimaryCtxRelease_v2(d));
            return 0;
        } else if (strncmp(line, "exit", 4) == 0) {
            return 0; /* holding everything: the driver frees it */
        }
        fflush(stdout);
    }
    return 0;
}

/* ---- The node: namespace, mounts, environment -------------------------- */

static char top[512], hostdir[1024], ctrdir[1024];

static void mkdirs(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0755);
            *p = '/';
        }
    CHECK(mkdir(buf, 0755) == 0 || errno == EEXIST, "mkdir %s", buf);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "we");
    CHECK(f != NULL, "create %s", path);
    fputs(text, f);
    fclose(f);
}

static void bind_mount(const char *from, const char *to, bool read_only)
{
    CHECK(mount(from, to, NULL, MS_BIND, NULL) == 0, "bind %s on %s: %s", from,
          to, strerror(errno));
    if (read_only)
        CHECK(mount(NULL, to, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0,
              "read-only %s: %s", to, strerror(errno));
}

/* This machine has no /etc/ld.so.preload to bind over: give this namespace
 * an /etc of links to the real one plus an empty ld.so.preload (nothing is
 * created in the host's /etc). */
static void make_preload_mount_point(void)
{
    char real[1024], view[1024];
    snprintf(real, sizeof real, "%s/etc.host", top);
    snprintf(view, sizeof view, "%s/etc.view", top);
    mkdirs(real);
    mkdirs(view);
    CHECK(mount("/etc", real, NULL, MS_BIND | MS_REC, NULL) == 0, "bind /etc");
    DIR *d = opendir(real);
    CHECK(d != NULL, "opendir %s", real);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!no_dots(e))
            continue;
        char link[2048], target[2048];
        snprintf(link, sizeof link, "%s/%s", view, e->d_name);
        snprintf(target, sizeof target, "%s/%s", real, e->d_name);
        CHECK(symlink(target, link) == 0, "symlink %s", link);
    }
    closedir(d);
    char point[2048];
    snprintf(point, sizeof point, "%s/ld.so.preload", view);
    write_file(point, "");
    bind_mount(view, "/etc", false);
}

/* Returns false (after saying why) where no private mount namespace can be
 * had: the test is then skipped, visibly. */
static bool stand_up_node(const char *libvgpu)
{
    if (unshare(CLONE_NEWNS) != 0) {
        printf("SKIP: unshare(CLONE_NEWNS) failed (%s): the HAMi node test "
               "needs root or CAP_SYS_ADMIN for a private mount namespace\n",
               strerror(errno));
        return false;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        printf("SKIP: cannot make mounts private (%s)\n", strerror(errno));
        return false;
    }
    /* The plugin's HOOK_PATH is <top>/usr/local; the monitor's is
     * <top>/usr/local/vgpu; the container sees its directory at
     * <top>/ctr/usr/local/vgpu (in a real container: /usr/local/vgpu). */
    snprintf(hostdir, sizeof hostdir,
             "%s/usr/local/vgpu/containers/1f0e9a52-3c4b-4d6e-8f70-a1b2c3d4e5f6_main",
             top);
    snprintf(ctrdir, sizeof ctrdir, "%s/ctr/usr/local/vgpu", top);
    mkdirs(hostdir);
    chmod(hostdir, 0777); /* as the plugin does */
    mkdirs(ctrdir);
    bind_mount(hostdir, ctrdir, false);
    char lib[2048], preload[1024], content[2100];
    snprintf(lib, sizeof lib, "%s/libvgpu.so", ctrdir);
    write_file(lib, ""); /* the runtime's mount point, seen by the monitor */
    bind_mount(libvgpu, lib, true);
    snprintf(preload, sizeof preload, "%s/usr/local/vgpu/ld.so.preload", top);
    snprintf(content, sizeof content, "%s\n", lib);
    write_file(preload, content);
    if (access("/etc/ld.so.preload", F_OK) != 0)
        make_preload_mount_point();
    bind_mount(preload, "/etc/ld.so.preload", true);

    /* The device plugin's environment (server.go's Allocate) and the
     * webhook's CUDA_TASK_PRIORITY; no LD_PRELOAD. */
    unsetenv("LD_PRELOAD");
    setenv("CUDA_DEVICE_MEMORY_LIMIT_0", "1024m", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_1", "768m", 1);
    setenv("CUDA_DEVICE_SM_LIMIT", "30", 1);
    char cache[2048];
    snprintf(cache, sizeof cache, "%s/9d3c1e7a-5b2f-4c8d-a6e0-7f1b2c3d4e5a.cache",
             ctrdir);
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", cache, 1);
    setenv("CUDA_OVERSUBSCRIBE", "true", 1);
    setenv("LIBCUDA_LOG_LEVEL", "2", 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", "force", 1);
    setenv("CUDA_TASK_PRIORITY", "0", 1);
    /* The simulated GPU; its context size; sanitizers with a library that
     * is not first in the link order. */
    setenv("FAKEGPU_CTX_BYTES", "67108864", 1);
    setenv("ASAN_OPTIONS", "verify_asan_link_order=0", 1);
    return true;
}

/* ---- The scenarios ------------------------------------------------------ */

static struct monitor first_look(void)
{
    struct monitor m;
    const char *why = NULL;
    CHECK(monitor_load(hostdir, &m, &why), "the monitor skips %s: %s", hostdir, why);
    return m;
}

static int memory_and_lifecycle(void)
{
    uint64_t limits[DEVICES] = {1024 * MiB, 768 * MiB};
    struct worker *w1 = spawn(0, 32 * MiB, 1);      /* no threads, GPU 0 */
    struct worker *w2 = spawn(4, 16 * MiB, 3);      /* 4 threads, both */
    struct worker *w3 = spawn(8, 6 * MiB, 2);       /* 8 threads, GPU 1 */
    struct worker *w4 = spawn(0, 10 * MiB, 3);      /* to be killed */
    struct worker *w5 = spawn(2, 4 * MiB, 2);       /* to be killed */
    struct monitor m = first_look();
    at_rest(&m, hostdir, "at rest", limits);
    CHECK(device_num(&m) >= DEVICES, "device_num %d", device_num(&m));

    /* The monitor lowers the limit of every device at once to 8 MiB over
     * GPU 0's usage (GPU 1 ends up over it): the next allocations obey. */
    uint64_t lowered = device_sum(&m, 0, TOTAL) + 8 * MiB;
    monitor_set_limit(&m, lowered);
    char line[128];
    say(w1, "try 0 16777216\n");
    CHECK(strcmp(hear(w1, -1, line, sizeof line), "oom") == 0,
          "16 MiB past the monitor's limit on GPU 0: %s", line);
    say(w1, "try 0 4194304\n");
    CHECK(strcmp(hear(w1, -1, line, sizeof line), "ok") == 0,
          "4 MiB under the monitor's limit on GPU 0: %s", line);
    say(w3, "try 1 4194304\n");
    CHECK(strcmp(hear(w3, -1, line, sizeof line), "oom") == 0,
          "GPU 1 is over the monitor's limit: %s", line);
    uint64_t lowered_limits[DEVICES] = {lowered, lowered};
    at_rest(&m, hostdir, "after the monitor's limit", lowered_limits);
    for (int d = 0; d < DEVICES; d++) /* back to the plugin's limits */
        __atomic_store_n((uint64_t *)(void *)(m.data + OFF_LIMIT + 8 * d),
                         limits[d], __ATOMIC_RELAXED);

    /* Kills: the driver frees at once; the region counts the dead until
     * a process of the container next starts (too high, never too low). */
    kill(w4->pid, SIGKILL);
    kill(w5->pid, SIGKILL);
    reaped(w4, true);
    reaped(w5, true);
    for (int d = 0; d < DEVICES; d++)
        CHECK(device_sum(&m, d, TOTAL) >= fakegpu_device_used(d),
              "after kills: GPU %d counted too low", d);
    spawn(0, 2 * MiB, 1);
    at_rest(&m, hostdir, "after kills and a new process", limits);

    /* Exits, with and without freeing first. */
    say(w1, "exit\n");
    say(w2, "free-exit\n");
    say(w3, "exit\n");
    say(&workers[5], "free-exit\n");
    reaped(w1, false);
    reaped(w2, false);
    reaped(w3, false);
    reaped(&workers[5], false);
    at_rest(&m, hostdir, "after exits", limits);
    for (int d = 0; d < DEVICES; d++)
        CHECK(device_sum(&m, d, TOTAL) == 0, "GPU %d: nothing left", d);
    munmap(m.data, m.size);
    return 0;
}

/* The monitor's scheduling writes: recent_kernel (a launch marks the
 * container active; -1 holds its launches, 0 lets them go). The launch
 * side arrives with the compute limit: until then this fails. */
static int feedback(void)
{
    struct worker *w = spawn(0, 2 * MiB, 1);
    struct monitor m = first_look();
    char line[128];
    say(w, "launch\n");
    CHECK(strcmp(hear(w, -1, line, sizeof line), "ok") == 0,
          "a kernel launch through vgpu: %s", line);
    CHECK(rd32(&m, OFF_RECENT_KERNEL) > 0, "a launch marks recent_kernel");
    __atomic_store_n((int32_t *)(void *)(m.data + OFF_RECENT_KERNEL), -1,
                     __ATOMIC_RELAXED);
    say(w, "launch\n");
    CHECK(hear(w, 500, line, sizeof line) == NULL,
          "a launch went through while the monitor held the container");
    __atomic_store_n((int32_t *)(void *)(m.data + OFF_RECENT_KERNEL), 0,
                     __ATOMIC_RELAXED);
    CHECK(strcmp(hear(w, -1, line, sizeof line), "ok") == 0,
          "the held launch goes once released: %s", line);
    say(w, "free-exit\n");
    reaped(w, false);
    munmap(m.data, m.size);
    return 0;
}

/* In a child: its private mount namespace, and every mount in it, ends
 * with it, so the parent can remove the directory without ever seeing the
 * host's /etc bound inside it. */
static int node(const char *libvgpu, bool feedback_only)
{
    if (!stand_up_node(libvgpu))
        return SKIP;
    CU_OK(cuInit(0)); /* the node reads UUIDs and the ledger; no memory */
    int rc = feedback_only ? feedback() : memory_and_lifecycle();
    printf("hami_node%s: ok\n", feedback_only ? " feedback" : "");
    fflush(stdout);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "worker") == 0)
        return worker(atoi(argv[2]), strtoull(argv[3], NULL, 10),
                      (unsigned)atoi(argv[4]));
    CHECK(argc >= 2, "usage: hami_node LIBVGPU [feedback]");
    CHECK(realpath("/proc/self/exe", self_exe) != NULL, "own path");
    char libvgpu[4096];
    CHECK(realpath(argv[1], libvgpu) != NULL, "libvgpu.so at %s", argv[1]);
    fakegpu_fresh(DEVICES, "4g");
    const char *tmp = getenv("TMPDIR");
    snprintf(top, sizeof top, "%s/hami-node-XXXXXX", tmp ? tmp : "/tmp");
    CHECK(mkdtemp(top) != NULL, "mkdtemp");
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0)
        _exit(node(libvgpu, argc > 2 && strcmp(argv[2], "feedback") == 0));
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", top);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", top);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
