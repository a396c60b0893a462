/* One MPI rank of the NCCL allreduce check (scripts/gpu-nccl.sh): one GPU
 * per rank (local rank = device), ncclCommInitRank, an allreduce of
 * VGPU_NCCL_BYTES (default 1 GiB) of floats timed over a few iterations, and
 * optionally one allocation past the per-container limit on rank 0.
 * Prints "key value" lines from rank 0 (and start-up from every rank). */
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define CHECK(call, what)                                                      \
    do {                                                                       \
        if ((call) != 0) {                                                     \
            fprintf(stderr, "rank %d: %s failed\n", rank, what);              \
            MPI_Abort(MPI_COMM_WORLD, 1);                                      \
        }                                                                      \
    } while (0)

int main(int argc, char **argv)
{
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double t0 = getenv("VGPU_NCCL_T0") ? atof(getenv("VGPU_NCCL_T0")) : wall();
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    int ndev = 0;
    cudaGetDeviceCount(&ndev);
    CHECK(cudaSetDevice((local ? atoi(local) : rank) % (ndev ? ndev : 1)), "cudaSetDevice");
    size_t bytes = getenv("VGPU_NCCL_BYTES") ? strtoull(getenv("VGPU_NCCL_BYTES"), NULL, 10)
                                             : (1ull << 30);
    float *buf;
    CHECK(cudaMalloc((void **)&buf, bytes), "cudaMalloc");
    double first_alloc = wall() - t0;

    ncclUniqueId id;
    if (rank == 0)
        ncclGetUniqueId(&id);
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t comm;
    CHECK(ncclCommInitRank(&comm, size, id, rank), "ncclCommInitRank");
    double ready = wall() - t0;
    printf("rank %d: first cudaMalloc %.3f s, NCCL ready %.3f s after launch\n",
           rank, first_alloc, ready);

    size_t count = bytes / sizeof(float);
    cudaStream_t s;
    cudaStreamCreate(&s);
    for (int i = 0; i < 2; i++)
        ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, comm, s);
    cudaStreamSynchronize(s);
    MPI_Barrier(MPI_COMM_WORLD);
    int iters = 10;
    double t1 = wall();
    for (int i = 0; i < iters; i++)
        ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, comm, s);
    cudaStreamSynchronize(s);
    double dt = (wall() - t1) / iters;
    /* Bus bandwidth as nccl-tests defines it for allreduce. */
    double busbw = (double)bytes / dt * 2.0 * (size - 1) / size / 1e9;

    int refused = -1;
    if (getenv("VGPU_NCCL_OVER_BYTES") && rank == 0) {
        void *extra;
        cudaError_t e = cudaMalloc(&extra, strtoull(getenv("VGPU_NCCL_OVER_BYTES"), NULL, 10));
        refused = e == cudaErrorMemoryAllocation;
        if (e == cudaSuccess)
            cudaFree(extra);
        cudaGetLastError();
    }
    /* The others go on after rank 0's refusal: one more allreduce. */
    ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, comm, s);
    int ok = cudaStreamSynchronize(s) == cudaSuccess;
    int all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("nccl_busbw_gbps %.1f\n", busbw);
        printf("nccl_ranks_ok_after %d\n", all_ok);
        if (refused >= 0)
            printf("nccl_over_limit_refused %d\n", refused);
    }
    ncclCommDestroy(comm);
    cudaFree(buf);
    MPI_Finalize();
    return 0;
}
