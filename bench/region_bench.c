/* Benchmarks of the shared region alone (no CUDA), printed as Markdown:
 *  - attach latency p50/p99/max with 1, 8, 64, 256 processes released at
 *    the same instant;
 *  - charge+uncharge ns/op with 1, 8, 32 processes charging concurrently;
 *  - "used bytes on device d" query ns.
 * Timings are printed, never checked: see BENCHMARKS.md. */
#include <stdint.h>
#include <sys/mman.h>

#include "../tests/testutil.h"
#include "vgpu/region.h"

static char path[512];

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct vgpu_region *attach(void)
{
    struct vgpu_attach_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.limits[0] = 1ull << 40;
    return vgpu_region_attach(&o);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void attach_storm(int n)
{
    unlink(path);
    double *lat = mmap(NULL, sizeof(double) * 2 * (size_t)n,
                       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double *cpu = lat + n;
    int *held = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int gate[2];
    CHECK(pipe(gate) == 0, "pipe");
    for (int i = 0; i < n; i++)
        if (fork() == 0) {
            close(gate[1]);
            char c;
            if (read(gate[0], &c, 1) != 0)
                _exit(1);
            double t0 = now_seconds(), c0 = cpu_seconds();
            struct vgpu_region *r = attach();
            lat[i] = now_seconds() - t0;
            cpu[i] = cpu_seconds() - c0;
            __atomic_add_fetch(held, 1, __ATOMIC_SEQ_CST);
            while (__atomic_load_n(held, __ATOMIC_SEQ_CST) < n)
                usleep(500);
            vgpu_region_detach(r);
            _exit(r == NULL);
        }
    close(gate[0]);
    usleep(200000); /* let every child block on the gate */
    close(gate[1]);
    CHECK(wait_children(n) == 0, "attach failed");
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    qsort(cpu, (size_t)n, sizeof *cpu, cmp);
    int p99 = (n * 99 + 99) / 100 - 1;
    printf("| attach, %d processes at once: wall | %.1f | %.1f | %.1f |\n", n,
           lat[(n - 1) / 2] * 1e6, lat[p99] * 1e6, lat[n - 1] * 1e6);
    printf("| attach, %d processes at once: CPU time of the attaching process "
           "| %.1f | %.1f | %.1f |\n", n, cpu[(n - 1) / 2] * 1e6, cpu[p99] * 1e6,
           cpu[n - 1] * 1e6);
    munmap(lat, sizeof(double) * 2 * (size_t)n);
}

static void charge_loop(int procs, long iters)
{
    unlink(path);
    double *ns = mmap(NULL, sizeof(double) * 2 * (size_t)procs,
                      PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double *cpu_ns = ns + procs; /* CPU time: meaningful on a loaded machine */
    double t_all = now_seconds();
    for (int p = 0; p < procs; p++)
        if (fork() == 0) {
            struct vgpu_region *r = attach();
            double t0 = now_seconds(), c0 = cpu_seconds();
            for (long i = 0; i < iters; i++) {
                vgpu_region_try_charge(r, 0, 2 << 20, VGPU_CHARGE_DATA);
                vgpu_region_uncharge(r, 0, 2 << 20, VGPU_CHARGE_DATA);
            }
            ns[p] = (now_seconds() - t0) / (double)iters * 1e9;
            cpu_ns[p] = (cpu_seconds() - c0) / (double)iters * 1e9;
            vgpu_region_detach(r);
            _exit(0);
        }
    CHECK(wait_children(procs) == 0, "charge failed");
    double aggregate = (now_seconds() - t_all) / ((double)iters * procs) * 1e9;
    qsort(ns, (size_t)procs, sizeof *ns, cmp);
    qsort(cpu_ns, (size_t)procs, sizeof *cpu_ns, cmp);
    printf("| charge+uncharge, %d processes concurrently: wall per op in each "
           "process | %.1f | - | %.1f |\n", procs, ns[(procs - 1) / 2], ns[procs - 1]);
    printf("| charge+uncharge, %d processes concurrently: CPU time per op in each "
           "process | %.1f | - | %.1f |\n", procs, cpu_ns[(procs - 1) / 2],
           cpu_ns[procs - 1]);
    printf("| charge+uncharge, %d processes concurrently: machine-wide, all ops "
           "/ elapsed | %.1f | - | - |\n", procs, aggregate);
}

static void query(long iters)
{
    unlink(path);
    struct vgpu_region *r = attach();
    volatile uint64_t sink = 0;
    double t0 = now_seconds();
    for (long i = 0; i < iters; i++)
        sink += vgpu_region_used(r, 0);
    printf("| used-bytes query, 1 process | %.2f | - | - |\n",
           (now_seconds() - t0) / (double)iters * 1e9);
    vgpu_region_detach(r);
}

int main(void)
{
    test_region_path(path, sizeof path, "bench");
    printf("| operation | p50 (us for attach, ns otherwise) | p99 | max |\n");
    printf("|---|---|---|---|\n");
    int storms[] = {1, 8, 64, 256};
    for (int i = 0; i < 4; i++)
        attach_storm(storms[i]);
    int procs[] = {1, 8, 32};
    for (int i = 0; i < 3; i++)
        charge_loop(procs[i], 2000000);
    query(100000000);
    unlink(path);
    return 0;
}
