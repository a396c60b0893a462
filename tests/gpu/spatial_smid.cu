// Which SMs the runtime's work runs on (VGPU_SM_MODE=spatial on a GPU):
// many blocks, each a few microseconds long, record the SM they ran on
// (%smid), on the NULL stream, the legacy stream, a stream created after
// the runtime's context, and a graph captured on it. Prints one line per
// way: "<way> sms <distinct SMs used> of <the device's>". Under
// VGPU_SM_MODE=spatial with a limit of 30 % on an H100: 40 of 132 each.
//   nvcc -O2 -arch=sm_90 tests/gpu/spatial_smid.cu -o build-gpu/spatial_smid
#include "smid.cuh"

int main(void)
{
    int sms = 0;
    long long cycles = five_us(&sms);
    unsigned *used = smid_buffer();

    where<<<BLOCKS, 256>>>(cycles, used);
    printf("null_stream sms %d of %d\n", count(used), sms);
    where<<<BLOCKS, 256, 0, cudaStreamLegacy>>>(cycles, used);
    printf("legacy_stream sms %d of %d\n", count(used), sms);
    cudaStream_t s;
    RT(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    where<<<BLOCKS, 256, 0, s>>>(cycles, used);
    printf("created_stream sms %d of %d\n", count(used), sms);
    cudaGraph_t g;
    cudaGraphExec_t exec;
    RT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    where<<<BLOCKS, 256, 0, s>>>(cycles, used);
    RT(cudaStreamEndCapture(s, &g));
    RT(cudaGraphInstantiate(&exec, g, 0));
    RT(cudaGraphLaunch(exec, s));
    printf("graph sms %d of %d\n", count(used), sms);
    return 0;
}
