// Which ways of making a green context current confine the CUDA runtime's
// work to its SMs (for VGPU_SM_MODE=spatial; no vgpu here). Each way runs
// in a fresh process: `green_probe WAY`, and prints
// "<way> sms <distinct SMs used> of <the device's>" for a runtime launch on
// the NULL stream and on a stream created afterwards.
//   before   green context made current (cuCtxSetCurrent) before any
//            runtime call
//   after    the runtime starts first (cudaFree(0): it makes the primary
//            context current), then cuCtxSetCurrent(green)
//   push     the runtime starts first, then cuCtxPushCurrent(green)
//   thread   the runtime starts first, green made current on a new thread,
//            which launches
//   retain   cuDevicePrimaryCtxRetain first (as the runtime does), green
//            current, then the runtime's first call
//   nvcc -O2 -arch=sm_90 tests/gpu/green_probe.cu -o build-gpu/green_probe -lcuda
#include <cuda.h>
#include <pthread.h>
#include <string.h>

#include "smid.cuh"

#define DRV(call)                                                              \
    do {                                                                       \
        CUresult r_ = (call);                                                  \
        if (r_ != CUDA_SUCCESS) {                                              \
            printf("%s: error %d\n", #call, (int)r_);                          \
            exit(2);                                                           \
        }                                                                      \
    } while (0)

static const char *way;

static CUcontext green(unsigned sms)
{
    CUdevResource all, part;
    unsigned groups = 1;
    DRV(cuDeviceGetDevResource(0, &all, CU_DEV_RESOURCE_TYPE_SM));
    DRV(cuDevSmResourceSplitByCount(&part, &groups, &all, NULL, 0, sms));
    CUdevResourceDesc desc;
    DRV(cuDevResourceGenerateDesc(&desc, &part, 1));
    CUgreenCtx g;
    DRV(cuGreenCtxCreate(&g, desc, 0, CU_GREEN_CTX_DEFAULT_STREAM));
    CUcontext ctx;
    DRV(cuCtxFromGreenCtx(&ctx, g));
    return ctx;
}

static void *launches(void *unused)
{
    (void)unused;
    int sms = 0;
    long long cycles = five_us(&sms);
    unsigned *used = smid_buffer();
    where<<<BLOCKS, 256>>>(cycles, used);
    printf("%s null_stream sms %d of %d\n", way, count(used), sms);
    cudaStream_t s;
    RT(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    where<<<BLOCKS, 256, 0, s>>>(cycles, used);
    printf("%s created_stream sms %d of %d\n", way, count(used), sms);
    return NULL;
}

static CUcontext ctx;

static void *on_thread(void *unused)
{
    DRV(cuCtxSetCurrent(ctx));
    return launches(unused);
}

int main(int argc, char **argv)
{
    way = argc > 1 ? argv[1] : "before";
    DRV(cuInit(0));
    if (strcmp(way, "before") == 0) {
        ctx = green(40);
        DRV(cuCtxSetCurrent(ctx));
    } else if (strcmp(way, "retain") == 0) {
        CUcontext primary;
        DRV(cuDevicePrimaryCtxRetain(&primary, 0));
        ctx = green(40);
        DRV(cuCtxSetCurrent(ctx));
    } else {
        RT(cudaFree(0));
        ctx = green(40);
        if (strcmp(way, "after") == 0)
            DRV(cuCtxSetCurrent(ctx));
        else if (strcmp(way, "push") == 0)
            DRV(cuCtxPushCurrent(ctx));
        else if (strcmp(way, "thread") == 0) {
            pthread_t t;
            pthread_create(&t, NULL, on_thread, NULL);
            pthread_join(t, NULL);
            return 0;
        }
    }
    launches(NULL);
    return 0;
}
