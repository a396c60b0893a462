/* fakegpu: a simulated CUDA driver (libcuda.so.1) and NVML
 * (libnvidia-ml.so.1) for machines without a GPU.
 *
 * All processes on the machine share one state file (FAKEGPU_STATE), so
 * device memory is one pool across processes, exactly as on a real GPU, and
 * the state doubles as the ledger: bytes live per device and per process.
 * No memory is backed; addresses are unique and never reused.
 */
#ifndef FAKEGPU_H
#define FAKEGPU_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define FG_MAX_DEVICES 16
#define FG_MAX_PROCS 512
#define FG_MAGIC 0x46414b45475055ull /* "FAKEGPU" */
#define FG_GRANULARITY (2ull << 20)
/* A pool grows by whole chunks of this (an H100 with driver 580: 32 MiB,
 * tests/gpu/facts_probe.c pool); FAKEGPU_POOL_CHUNK=MiB sets another. */
#define FG_POOL_CHUNK (32ull << 20)

struct fg_device {
    uint64_t total;
    uint64_t used;  /* bytes handed out by the driver, all processes */
    uint64_t peak;  /* highest used since the last reset */
    char name[64];
    char uuid[48];  /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
    int32_t pci_bus;
    int32_t pad;
};

struct fg_proc {
    uint64_t busy;  /* 0 free, 1 owned by a live (or not yet reaped) process */
    int32_t pid;
    int32_t pad;
    uint64_t used[FG_MAX_DEVICES];
};

/* One device's execution timeline (exec.c), shared by every process: work
 * runs in the order it reaches the device, one item at a time. */
#define FG_UTIL_BUCKETS 10
#define FG_UTIL_BUCKET_NS 100000000ull /* NVML's utilization: last 1 s */
struct fg_timeline {
    uint64_t free_at;   /* CLOCK_MONOTONIC ns when the queued work ends */
    uint64_t busy_ns;   /* work ever queued, ns */
    uint64_t bucket_tag[FG_UTIL_BUCKETS];
    uint64_t bucket_ns[FG_UTIL_BUCKETS];
};

struct fg_state {
    uint64_t magic;
    uint32_t device_count;
    uint32_t pad;
    uint64_t next_va;
    uint64_t reaped;  /* processes whose memory was freed after death */
    struct fg_device dev[FG_MAX_DEVICES];
    struct fg_proc procs[FG_MAX_PROCS];
    struct fg_timeline timeline[FG_MAX_DEVICES];
    uint64_t nvml_process_lists; /* nvmlDeviceGetComputeRunningProcesses* calls */
};

/* state.c: the shared state. fg_state() maps it on first use. */
struct fg_state *fg_state(void);
/* This process's row in the ledger (claimed on first use). */
struct fg_proc *fg_self(void);
/* Reserve bytes on physical device dev: false = out of memory. */
bool fg_reserve(int dev, uint64_t bytes);
void fg_release(int dev, uint64_t bytes);
/* A fresh device address range, never handed out before. */
uint64_t fg_new_address(uint64_t bytes);
/* Free the memory of processes that died; returns how many. */
int fg_reap(void);

/* Visible devices (CUDA_VISIBLE_DEVICES): ordinal -> physical index. */
int fg_visible_count(void);
int fg_physical(int ordinal); /* -1 if out of range */

/* modules.c: a primary context's reset unloads the modules loaded on dev. */
void modules_drop_device(int physical);

/* exec.c: the execution model's entry points for cuda_fake.c. */
void fg_exec_sync_stream(void *stream);
void fg_exec_sync_all(void);
void fg_exec_forget_stream(void *stream);

/* Fault injection (FAKEGPU_FAIL=name[:after]): true if this call must fail. */
bool fg_should_fail(const char *name);

#endif
