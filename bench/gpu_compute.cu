// The compute-limit benchmark's tenant (scripts/gpu-compute.sh): a spin
// kernel of calibrated length on every SM, with a device-side work counter
// in host-mapped memory, so that the host reads the work done in a window
// without synchronizing.
//
//   gpu_compute spin  <kernel_us> <async|sync> <warmup_s> <window_s>
//   gpu_compute graph <kernel_us> <warmup_s> <window_s>   (10 kernels a graph)
//   gpu_compute launch <count>          (empty kernels: host ns per launch)
//   gpu_compute call <count> <gap_us>   (empty kernels <gap_us> apart: host
//                                        ns inside each launch call, mean
//                                        and median)
//
// Prints "work_per_s <units/s>" (a unit = one block finishing one spin) and
// "first_s_work_per_s" over the first second, "ns_per_launch" or
// "ns_per_call" and "ns_per_call_median".
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                            \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));        \
            exit(2);                                                           \
        }                                                                      \
    } while (0)

__global__ void spin(long long cycles, unsigned long long *work)
{
    long long start = clock64();
    while (clock64() - start < cycles)
        ;
    __syncthreads();
    if (threadIdx.x == 0)
        atomicAdd_system(work, 1ull);
}

__global__ void empty(void) {}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static volatile unsigned long long *work;
static unsigned long long *dwork;
static int sms;
static long long cycles;

static void setup(int kernel_us)
{
    int khz = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
    cycles = (long long)kernel_us * khz / 1000;
    unsigned long long *h;
    CHECK(cudaHostAlloc(&h, sizeof *h, cudaHostAllocMapped));
    *h = 0;
    work = h;
    CHECK(cudaHostGetDevicePointer(&dwork, h, 0));
}

// Run `step` until warmup + window seconds; report the window's rate.
template <typename F> static void measure(F step, double warmup, double window)
{
    double t0 = now(), first_end = t0 + 1.0, w_end = t0 + warmup + window;
    unsigned long long first = 0, at_warm = 0;
    bool first_done = false, warm_done = false;
    double warm_t = 0;
    for (;;) {
        step();
        double t = now();
        if (!first_done && t >= first_end) {
            first = *work;
            first_done = true;
        }
        if (!warm_done && t >= t0 + warmup) {
            at_warm = *work;
            warm_t = t;
            warm_done = true;
        }
        if (t >= w_end)
            break;
    }
    unsigned long long end = *work;
    double t = now();
    CHECK(cudaDeviceSynchronize());
    printf("work_per_s %.1f\n", (end - at_warm) / (t - warm_t));
    printf("first_s_work_per_s %.1f\n", first / 1.0);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: see the file's head\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "call") == 0 && argc == 4) {
        /* The host time of the launch call alone, with the GPU mostly idle
         * (a gap between launches), so that no cap binds and no queue
         * fills: what the hook adds to each launch. */
        long n = atol(argv[2]);
        double gap = atof(argv[3]) * 1e-6, inside = 0;
        double *each = n > 0 ? (double *)malloc(sizeof(double) * n) : NULL;
        if (each == NULL)
            return 2;
        empty<<<1, 1>>>();
        CHECK(cudaDeviceSynchronize());
        for (long i = 0; i < n; i++) {
            double t = now();
            empty<<<1, 1>>>();
            double u = now();
            each[i] = u - t;
            inside += u - t;
            while (now() - u < gap)
                ;
        }
        CHECK(cudaDeviceSynchronize());
        /* The median: a call the host interrupted (tens of us) moves the
         * mean of a round by hundreds of ns, not the median. */
        qsort(each, n, sizeof *each, by_value);
        printf("ns_per_call %.1f\n", inside * 1e9 / n);
        printf("ns_per_call_median %.1f\n", each[n / 2] * 1e9);
        free(each);
        return 0;
    }
    if (strcmp(mode, "launch") == 0) {
        long n = atol(argv[2]);
        empty<<<1, 1>>>();
        CHECK(cudaDeviceSynchronize());
        double t = now();
        for (long i = 0; i < n; i++)
            empty<<<1, 1>>>();
        double host = now() - t;
        CHECK(cudaDeviceSynchronize());
        printf("ns_per_launch %.1f\n", host * 1e9 / n);
        return 0;
    }
    int us = atoi(argv[2]);
    setup(us);
    if (strcmp(mode, "spin") == 0 && argc == 6) {
        bool sync = strcmp(argv[3], "sync") == 0;
        measure([&] {
            spin<<<sms, 32>>>(cycles, dwork);
            if (sync)
                CHECK(cudaStreamSynchronize(0));
        }, atof(argv[4]), atof(argv[5]));
        return 0;
    }
    if (strcmp(mode, "graph") == 0 && argc == 5) {
        cudaStream_t s;
        cudaGraph_t g;
        cudaGraphExec_t exec;
        CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        for (int i = 0; i < 10; i++)
            spin<<<sms, 32, 0, s>>>(cycles, dwork);
        CHECK(cudaStreamEndCapture(s, &g));
        CHECK(cudaGraphInstantiate(&exec, g, 0));
        measure([&] {
            CHECK(cudaGraphLaunch(exec, s));
            CHECK(cudaStreamSynchronize(s));
        }, atof(argv[3]), atof(argv[4]));
        return 0;
    }
    fprintf(stderr, "bad arguments\n");
    return 2;
}
