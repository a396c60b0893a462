/* Stream-ordered pool probes for a real GPU (issue 9), under a 4 GiB limit:
 *   pool_probe cache [hold_ms]  the default pool keeps 3 GiB after
 *       cudaFreeAsync (release threshold UINT64_MAX, as PyTorch's
 *       cudaMallocAsync backend sets); then a plain cudaMalloc of 3 GiB.
 *       Under vgpu it succeeds only after vgpu trimmed the pool, and the
 *       driver never holds both (NVML peak ~3.5 GiB with the context);
 *       without vgpu both are held (~6.5 GiB).
 *   pool_probe live [hold_ms]   3 GiB live from the pool, then a plain
 *       3 GiB: refused under vgpu.
 *   pool_probe first [hold_ms]  fills all but 10 MiB of what cudaMemGetInfo
 *       says is free (at most 3.5 GiB), then 1 MiB from a fresh pool: the
 *       driver grows a pool by 32 MiB, past the limit unless vgpu charges
 *       the chunk first (refused under vgpu).
 * Prints "key value" lines; holds everything hold_ms (default 1000) before
 * exiting, so that a 20 ms NVML sampler sees the peak. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GiB (1ull << 30)

static int first_growth(int hold_ms)
{
    size_t free_b = 0, total = 0;
    void *big = NULL, *small = NULL;
    cudaStream_t s;
    cudaMemPool_t pool;
    struct cudaMemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = 0;
    if (cudaMemGetInfo(&free_b, &total) != cudaSuccess ||
        cudaStreamCreate(&s) != cudaSuccess ||
        cudaMemPoolCreate(&pool, &props) != cudaSuccess) {
        printf("pool_first_setup_failed 1\n");
        return 1;
    }
    size_t fill = free_b < 3584ull << 20 ? free_b : 3584ull << 20;
    fill -= 10ull << 20;
    cudaError_t eb = cudaMalloc(&big, fill);
    cudaError_t es = cudaMallocFromPoolAsync(&small, 1ull << 20, pool, s);
    cudaStreamSynchronize(s);
    uint64_t reserved = 0;
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
    printf("pool_first_fill_mib %zu ok %d\n", fill >> 20, eb == cudaSuccess);
    printf("pool_first_1mib_ok %d\n", es == cudaSuccess);
    printf("pool_first_reserved_mib %llu\n", (unsigned long long)(reserved >> 20));
    fflush(stdout);
    usleep((useconds_t)hold_ms * 1000);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "cache") != 0 && strcmp(argv[1], "live") != 0 &&
                     strcmp(argv[1], "first") != 0)) {
        fprintf(stderr, "usage: pool_probe cache|live|first [hold_ms]\n");
        return 2;
    }
    const char *tag = argv[1];
    int hold_ms = argc > 2 ? atoi(argv[2]) : 1000;
    if (strcmp(tag, "first") == 0)
        return first_growth(hold_ms);
    cudaMemPool_t pool;
    cudaStream_t s;
    void *a = NULL, *p = NULL;
    if (cudaDeviceGetDefaultMemPool(&pool, 0) != cudaSuccess ||
        cudaStreamCreate(&s) != cudaSuccess) {
        printf("pool_%s_setup_failed 1\n", tag);
        return 1;
    }
    uint64_t keep_all = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all);
    cudaError_t ea = cudaMallocAsync(&a, 3 * GiB, s);
    cudaMemsetAsync(a, 1, 3 * GiB, s); /* touch it: the pages are real */
    if (strcmp(tag, "cache") == 0)
        cudaFreeAsync(a, s);
    cudaStreamSynchronize(s);
    uint64_t reserved = 0;
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
    cudaError_t ep = cudaMalloc(&p, 3 * GiB);
    cudaGetLastError();
    if (ep == cudaSuccess)
        cudaMemset(p, 1, 3 * GiB);
    cudaDeviceSynchronize();
    printf("pool_%s_async_ok %d\n", tag, ea == cudaSuccess);
    printf("pool_%s_reserved_before_mib %llu\n", tag,
           (unsigned long long)(reserved >> 20));
    printf("pool_%s_plain_3g_ok %d\n", tag, ep == cudaSuccess);
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
    printf("pool_%s_reserved_after_mib %llu\n", tag, (unsigned long long)(reserved >> 20));
    fflush(stdout);
    usleep((useconds_t)hold_ms * 1000);
    return 0;
}
