// 2 GiB of static device data: the driver allocates it at module load.
__device__ char big_static[2ull << 30];
extern "C" __global__ void touch(int v) { big_static[threadIdx.x] = (char)v; }
