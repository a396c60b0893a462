/* One rank of mpi_allreduce_sim: initialize CUDA on the simulated GPU,
 * allocate the way NCCL does at init (VMM cuMemCreate + cuMemMap, and
 * cuMemAlloc), exchange the bytes obtained with MPI_Allreduce, free, exit.
 * Rank 0 checks the sum against the limit and prints OK. */
#include <cuda.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#define MiB (1ull << 20)

static int fail(const char *what, int rank)
{
    printf("rank %d: %s failed\n", rank, what);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

int main(int argc, char **argv)
{
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CUdevice dev;
    CUcontext ctx;
    if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) ||
        cuCtxSetCurrent(ctx))
        return fail("CUDA init", rank);

    CUmemAllocationProp prop = {0};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    size_t gran;
    CUmemGenericAllocationHandle h;
    CUdeviceptr va, buf;
    CUresult rc;
    if ((rc = cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM)) ||
        (rc = cuMemCreate(&h, 32 * gran, &prop, 0)) ||
        (rc = cuMemAddressReserve(&va, 32 * gran, 0, 0, 0)) ||
        (rc = cuMemMap(va, 32 * gran, 0, h, 0))) {
        printf("rank %d: error %d\n", rank, (int)rc);
        return fail("VMM allocation", rank);
    }
    if (cuMemAlloc(&buf, 256 * MiB))
        return fail("cuMemAlloc", rank);
    /* Once every rank holds its share (8 x 320 MiB of 4 GiB), 2 GiB more
     * is past the container's limit: refused by vgpu, whoever asks first. */
    MPI_Barrier(MPI_COMM_WORLD);
    CUdeviceptr extra;
    int refused = cuMemAlloc(&extra, 2048 * MiB) == CUDA_ERROR_OUT_OF_MEMORY;
    if (!refused)
        cuMemFree(extra);

    unsigned long long mine = 32 * gran + 256 * MiB, total = 0;
    int refusals = 0;
    MPI_Allreduce(&mine, &total, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&refused, &refusals, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    unsigned long long limit = strtoull(getenv("VGPU_TEST_LIMIT_BYTES"), NULL, 10);

    if (cuMemUnmap(va, 32 * gran) || cuMemRelease(h) || cuMemAddressFree(va, 32 * gran) ||
        cuMemFree(buf))
        return fail("free", rank);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        printf("ranks %d, bytes held together %llu of limit %llu, over-limit "
               "requests refused %d\n", size, total, limit, refusals);
        if (total <= limit && refusals == size)
            printf("OK\n");
    }
    MPI_Finalize();
    return 0;
}
