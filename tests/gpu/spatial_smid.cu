// Which SMs the runtime's work runs on (VGPU_SM_MODE=spatial on a GPU):
// many blocks, each a few microseconds long, record the SM they ran on
// (%smid), on the NULL stream, the legacy stream, a stream created after
// the runtime's context, and a graph captured on it. Prints one line per
// way: "<way> sms <distinct SMs used> of <the device's>". Under
// VGPU_SM_MODE=spatial with a limit of 30 % on an H100: 40 of 132 each.
//   nvcc -O2 -arch=sm_90 tests/gpu/spatial_smid.cu -o build-gpu/spatial_smid
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                            \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));        \
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

static int count(unsigned *used)
{
    unsigned host[MAX_SMS];
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(host, used, sizeof host, cudaMemcpyDeviceToHost));
    CHECK(cudaMemset(used, 0, sizeof host));
    int n = 0;
    for (int i = 0; i < MAX_SMS; i++)
        n += host[i] != 0;
    return n;
}

int main(void)
{
    int sms = 0, khz = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
    long long cycles = 5LL * khz / 1000; /* 5 us */
    unsigned *used;
    CHECK(cudaMalloc(&used, MAX_SMS * sizeof *used));
    CHECK(cudaMemset(used, 0, MAX_SMS * sizeof *used));

    where<<<BLOCKS, 256>>>(cycles, used);
    printf("null_stream sms %d of %d\n", count(used), sms);
    where<<<BLOCKS, 256, 0, cudaStreamLegacy>>>(cycles, used);
    printf("legacy_stream sms %d of %d\n", count(used), sms);
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    where<<<BLOCKS, 256, 0, s>>>(cycles, used);
    printf("created_stream sms %d of %d\n", count(used), sms);
    cudaGraph_t g;
    cudaGraphExec_t exec;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    where<<<BLOCKS, 256, 0, s>>>(cycles, used);
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaGraphInstantiate(&exec, g, 0));
    CHECK(cudaGraphLaunch(exec, s));
    printf("graph sms %d of %d\n", count(used), sms);
    return 0;
}
