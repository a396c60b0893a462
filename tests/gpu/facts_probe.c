/* Facts about memory the driver attributes to processes, read through NVML
 * (no vgpu): where NVML counts VMM memory shared between processes, and
 * when the graph memory pool takes and gives back memory.
 *   facts_probe ipc     A creates 1 GiB (cuMemCreate), exports a POSIX fd,
 *                       B imports and maps it; A releases, A exits, B
 *                       unmaps, B releases: per-process NVML at each step
 *   facts_probe graph   a graph with a 1 GiB alloc node: NVML and the graph
 *                       pool's reserved/used at instantiate, upload, launch,
 *                       free, trim
 *   facts_probe pool    fresh pools, one cuMemAllocAsync each of several
 *                       sizes: what each pool reserves for it
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nvml_decl.h"

#define MiB (1ull << 20)
#define CHECK(x) do { CUresult rc_ = (x); if (rc_) { printf("%s: error %d\n", #x, (int)rc_); exit(1); } } while (0)

typedef nvmlReturn_t (*procs_fn)(nvmlDevice_t, unsigned int *, nvmlProcessInfo_t *);
static procs_fn procs;
static nvmlDevice_t gpu;

static void nvml_open(void)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    nvmlReturn_t (*init)(void) = dlsym(lib, "nvmlInit_v2");
    nvmlReturn_t (*handle)(unsigned, nvmlDevice_t *) =
        dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    procs = dlsym(lib, "nvmlDeviceGetComputeRunningProcesses_v3");
    init();
    handle(0, &gpu);
}

static void show(const char *step)
{
    nvmlProcessInfo_t info[64];
    unsigned n = 64;
    usleep(300 * 1000);
    procs(gpu, &n, info);
    printf("%-28s", step);
    for (unsigned i = 0; i < n; i++)
        printf(" pid%u=%lluMiB", info[i].pid, info[i].usedGpuMemory / MiB);
    printf("\n");
    fflush(stdout);
}

static CUcontext context(void)
{
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    return ctx;
}

static void send_fd(int sock, int fd)
{
    char c = 0, buf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&c, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = buf, .msg_controllen = sizeof buf};
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof fd);
    sendmsg(sock, &m, 0);
}

static int recv_fd(int sock)
{
    char c, buf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&c, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = buf, .msg_controllen = sizeof buf};
    if (recvmsg(sock, &m, 0) <= 0)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
    return fd;
}

static void wait_go(int p) { char c; if (read(p, &c, 1) != 1) exit(1); }
static void done(int p) { char c = 1; if (write(p, &c, 1) != 1) exit(1); }

static void describe_fd(const char *who, int fd)
{
    struct stat st;
    char path[64], target[256] = "";
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n > 0)
        target[n] = 0;
    fstat(fd, &st);
    printf("%s fd %d -> %s dev %lu ino %lu rdev %lu\n", who, fd, target,
           (unsigned long)st.st_dev, (unsigned long)st.st_ino,
           (unsigned long)st.st_rdev);
}

static size_t granularity(CUmemAllocationProp *prop)
{
    size_t g;
    CHECK(cuMemGetAllocationGranularity(&g, prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    return g;
}

static void props(CUmemAllocationProp *prop)
{
    memset(prop, 0, sizeof *prop);
    prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop->location.id = 0;
    prop->requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
}

static CUdeviceptr map(CUmemGenericAllocationHandle h, size_t size)
{
    CUdeviceptr va;
    CUmemAccessDesc acc = {{CU_MEM_LOCATION_TYPE_DEVICE, 0},
                           CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK(cuMemAddressReserve(&va, size, 0, 0, 0));
    CHECK(cuMemMap(va, size, 0, h, 0));
    CHECK(cuMemSetAccess(va, size, &acc, 1));
    return va;
}

static void exporter(int sock, int go, int ack)
{
    context();
    CUmemAllocationProp prop;
    props(&prop);
    size_t size = (1024 * MiB + granularity(&prop) - 1) / granularity(&prop) * granularity(&prop);
    CUmemGenericAllocationHandle h;
    CHECK(cuMemCreate(&h, size, &prop, 0));
    CUdeviceptr va = map(h, size);
    int fd, fd2;
    CHECK(cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    CHECK(cuMemExportToShareableHandle(&fd2, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    describe_fd("A export1", fd);
    describe_fd("A export2", fd2);
    send_fd(sock, fd);
    done(ack);                      /* 1: created, exported */
    wait_go(go);                    /* 2: release */
    CHECK(cuMemUnmap(va, size));
    CHECK(cuMemAddressFree(va, size));
    CHECK(cuMemRelease(h));
    close(fd);
    close(fd2);
    done(ack);
    wait_go(go);                    /* 3: exit */
    exit(0);
}

static void importer(int sock, int go, int ack)
{
    context();
    wait_go(go);                    /* 1: import */
    int fd = recv_fd(sock);
    describe_fd("B received", fd);
    CUmemGenericAllocationHandle h;
    CHECK(cuMemImportFromShareableHandle(&h, (void *)(long)fd,
                                         CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
    CUmemAllocationProp prop;
    CHECK(cuMemGetAllocationPropertiesFromHandle(&prop, h));
    size_t size = (1024 * MiB + granularity(&prop) - 1) / granularity(&prop) * granularity(&prop);
    CUdeviceptr va = map(h, size);
    CHECK(cuMemsetD8(va, 1, size));
    CHECK(cuCtxSynchronize());
    done(ack);
    wait_go(go);                    /* 2: unmap */
    CHECK(cuMemUnmap(va, size));
    CHECK(cuMemAddressFree(va, size));
    done(ack);
    wait_go(go);                    /* 3: release */
    CHECK(cuMemRelease(h));
    close(fd);
    done(ack);
    wait_go(go);
    exit(0);
}

static int ipc(void)
{
    int sv[2], goA[2], ackA[2], goB[2], ackB[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    if (pipe(goA) || pipe(ackA) || pipe(goB) || pipe(ackB))
        return 1;
    pid_t a = fork();
    if (a == 0)
        exporter(sv[0], goA[0], ackA[1]);
    pid_t b = fork();
    if (b == 0)
        importer(sv[1], goB[0], ackB[1]);
    nvml_open();
    printf("A=%d B=%d\n", a, b);
    wait_go(ackA[0]);
    show("A created+mapped");
    done(goB[1]); wait_go(ackB[0]);
    show("B imported+mapped+written");
    done(goA[1]); wait_go(ackA[0]);
    show("A unmapped+released");
    done(goA[1]); waitpid(a, NULL, 0);
    show("A exited");
    done(goB[1]); wait_go(ackB[0]);
    show("B unmapped (holds handle)");
    done(goB[1]); wait_go(ackB[0]);
    show("B released");
    done(goB[1]); waitpid(b, NULL, 0);
    show("B exited");
    return 0;
}

static void graph_attrs(const char *step)
{
    cuuint64_t res = 0, used = 0;
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDeviceGetGraphMemAttribute(dev, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT, &res));
    CHECK(cuDeviceGetGraphMemAttribute(dev, CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT, &used));
    printf("%-28s reserved=%lluMiB used=%lluMiB |", step,
           (unsigned long long)res / MiB, (unsigned long long)used / MiB);
    show("");
}

static int graph(void)
{
    nvml_open();
    context();
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    graph_attrs("context");
    CUgraph g;
    CHECK(cuGraphCreate(&g, 0));
    CUDA_MEM_ALLOC_NODE_PARAMS p;
    memset(&p, 0, sizeof p);
    p.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.poolProps.location.id = 0;
    p.bytesize = 1000 * MiB;
    CUgraphNode n;
    CHECK(cuGraphAddMemAllocNode(&n, g, NULL, 0, &p));
    printf("alloc node dptr=%llx\n", (unsigned long long)p.dptr);
    graph_attrs("node added");
    CUgraphExec e;
    CHECK(cuGraphInstantiate(&e, g, 0));
    graph_attrs("instantiated");
    CHECK(cuGraphUpload(e, NULL));
    CHECK(cuCtxSynchronize());
    graph_attrs("uploaded");
    CHECK(cuGraphLaunch(e, NULL));
    CHECK(cuCtxSynchronize());
    graph_attrs("launched");
    CHECK(cuMemFreeAsync(p.dptr, NULL));
    CHECK(cuCtxSynchronize());
    graph_attrs("freed (cuMemFreeAsync)");
    CHECK(cuGraphLaunch(e, NULL));
    CHECK(cuCtxSynchronize());
    graph_attrs("launched again");
    CHECK(cuMemFreeAsync(p.dptr, NULL));
    CHECK(cuCtxSynchronize());
    CHECK(cuDeviceGraphMemTrim(dev));
    graph_attrs("freed+trimmed");
    CHECK(cuGraphExecDestroy(e));
    CHECK(cuDeviceGraphMemTrim(dev));
    graph_attrs("exec destroyed+trimmed");
    /* a second graph, alloc + free node: what stays reserved after a run */
    CUgraph g2;
    CHECK(cuGraphCreate(&g2, 0));
    p.dptr = 0;
    CHECK(cuGraphAddMemAllocNode(&n, g2, NULL, 0, &p));
    CUgraphNode f;
    CHECK(cuGraphAddMemFreeNode(&f, g2, &n, 1, p.dptr));
    CHECK(cuGraphInstantiate(&e, g2, 0));
    graph_attrs("g2 alloc+free instantiated");
    CHECK(cuGraphLaunch(e, NULL));
    CHECK(cuCtxSynchronize());
    graph_attrs("g2 launched");
    CUdeviceptr plain;
    CUresult rc = cuMemAlloc(&plain, 512 * MiB);
    graph_attrs(rc ? "cuMemAlloc failed" : "cuMemAlloc 512 after");
    return 0;
}

static int pool(void)
{
    static const unsigned long long kib[] = {
        4, 1024, 2048, 3 * 1024, 8 * 1024, 30 * 1024, 33 * 1024, 64 * 1024 + 4,
        100 * 1024, 1000 * 1024, 3 * 1024 * 1024};
    context();
    CUstream s;
    CHECK(cuStreamCreate(&s, 0));
    for (unsigned i = 0; i < sizeof kib / sizeof kib[0]; i++) {
        CUmemPoolProps pp;
        memset(&pp, 0, sizeof pp);
        pp.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        pp.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        pp.location.id = 0;
        CUmemoryPool mp;
        CHECK(cuMemPoolCreate(&mp, &pp));
        CUdeviceptr d, d2;
        CHECK(cuMemAllocFromPoolAsync(&d, kib[i] << 10, mp, s));
        CHECK(cuStreamSynchronize(s));
        cuuint64_t r1 = 0, r2 = 0;
        CHECK(cuMemPoolGetAttribute(mp, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &r1));
        CHECK(cuMemAllocFromPoolAsync(&d2, kib[i] << 10, mp, s));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuMemPoolGetAttribute(mp, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &r2));
        printf("pool alloc %llu KiB: reserved %llu KiB, after a second %llu KiB\n",
               kib[i], (unsigned long long)r1 >> 10, (unsigned long long)r2 >> 10);
        CHECK(cuMemFreeAsync(d, s));
        CHECK(cuMemFreeAsync(d2, s));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuMemPoolDestroy(mp));
    }
    /* the default pool */
    CUmemoryPool dp;
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDeviceGetDefaultMemPool(&dp, dev));
    for (unsigned i = 0; i < sizeof kib / sizeof kib[0]; i++) {
        CUdeviceptr d;
        cuuint64_t r = 0;
        CHECK(cuMemAllocAsync(&d, kib[i] << 10, s));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuMemPoolGetAttribute(dp, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &r));
        printf("default pool alloc %llu KiB: reserved %llu KiB\n", kib[i],
               (unsigned long long)r >> 10);
        CHECK(cuMemFreeAsync(d, s));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuMemPoolTrimTo(dp, 0));
    }
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "ipc") == 0)
        return ipc();
    if (argc == 2 && strcmp(argv[1], "graph") == 0)
        return graph();
    if (argc == 2 && strcmp(argv[1], "pool") == 0)
        return pool();
    fprintf(stderr, "usage: facts_probe ipc|graph|pool\n");
    return 2;
}
