// Which SMs a launch ran on: many blocks, each spinning a few microseconds,
// record the SM they ran on (%smid); count() says how many distinct SMs
// took part. Shared by spatial_smid.cu and green_probe.cu.
#ifndef VGPU_TESTS_GPU_SMID_CUH
#define VGPU_TESTS_GPU_SMID_CUH

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define RT(call)                                                               \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess) {                                               \
            printf("%s: %s\n", #call, cudaGetErrorString(e_));                 \
            exit(2);                                                           \
        }                                                                      \
    } while (0)

#define BLOCKS 4096
#define MAX_SMS 1024

__global__ void where(long long cycles, unsigned *used)
{
    unsigned smid;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
    long long start = clock64();
    while (clock64() - start < cycles) /* so that no SM takes them all */
        ;
    if (threadIdx.x == 0 && smid < MAX_SMS)
        used[smid] = 1;
}

/* The distinct SMs recorded in used since the last count; clears it. */
static int count(unsigned *used)
{
    unsigned host[MAX_SMS];
    RT(cudaDeviceSynchronize());
    RT(cudaMemcpy(host, used, sizeof host, cudaMemcpyDeviceToHost));
    RT(cudaMemset(used, 0, sizeof host));
    int n = 0;
    for (int i = 0; i < MAX_SMS; i++)
        n += host[i] != 0;
    return n;
}

/* A zeroed buffer for where() to record SMs in. */
static unsigned *smid_buffer(void)
{
    unsigned *used;
    RT(cudaMalloc(&used, MAX_SMS * sizeof *used));
    RT(cudaMemset(used, 0, MAX_SMS * sizeof *used));
    return used;
}

/* Cycles of 5 us on device 0, and its SM count. */
static long long five_us(int *sms)
{
    int khz = 0;
    RT(cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, 0));
    RT(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
    return 5LL * khz / 1000;
}

#endif
