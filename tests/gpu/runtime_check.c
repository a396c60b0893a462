/* CUDA-runtime checks for a real GPU:
 *   runtime_check limit     cudaMemGetInfo shows the limit, 6 GiB refused, 3 GiB ok
 *   runtime_check loop N    ns per 2 MiB cudaMalloc + cudaFree
 *   runtime_check startup   seconds from main() to the first cudaMalloc done */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GiB (1ull << 30)
#define MiB (1ull << 20)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    double t0 = now();
    if (argc < 2)
        return 1;
    void *p = NULL, *q = NULL;
    if (strcmp(argv[1], "startup") == 0) {
        cudaError_t e = cudaMalloc(&p, 2 * MiB);
        printf("runtime_startup_s %.4f\n", now() - t0);
        printf("runtime_startup_ok %d\n", e == cudaSuccess);
        return 0;
    }
    if (strcmp(argv[1], "limit") == 0) {
        size_t free_b, total;
        cudaMemGetInfo(&free_b, &total);
        printf("runtime_total_mib %llu\n", (unsigned long long)(total / MiB));
        cudaError_t e6 = cudaMalloc(&p, 6 * GiB);
        cudaGetLastError();
        cudaError_t e3 = cudaMalloc(&q, 3 * GiB);
        printf("runtime_6g_refused %d\n", e6 == cudaErrorMemoryAllocation);
        printf("runtime_3g_ok %d\n", e3 == cudaSuccess);
        return 0;
    }
    if (strcmp(argv[1], "loop") == 0 && argc > 2) {
        int n = atoi(argv[2]);
        cudaMalloc(&p, 2 * MiB);
        cudaFree(p);
        double t1 = now();
        for (int i = 0; i < n; i++) {
            cudaMalloc(&p, 2 * MiB);
            cudaFree(p);
        }
        printf("runtime_alloc_free_ns %.0f\n", (now() - t1) / n * 1e9);
        return 0;
    }
    return 1;
}
