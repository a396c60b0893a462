/* What the simulated driver's files share (cuda_fake.c: contexts and plain
 * memory; streams.c: streams, events and pools; vmm.c: virtual memory). */
#ifndef FAKEGPU_DRIVER_H
#define FAKEGPU_DRIVER_H

#include <cuda.h>
#include <stdbool.h>
#include <stdint.h>

#include "allocs.h"

#define KIND(k) (1 << (k))

/* cuda_fake.c */
CUresult fg_need_device(int ordinal);
/* Sleep as many microseconds as the environment variable name says (a
 * driver call's own time, or a race widened for a test); none if unset. */
void fg_delay_us(const char *name);
/* The current context's ordinal, -1 with none. */
int fg_current_ordinal(void);
/* The SMs a context runs on (a green context's share; NULL: the current
 * one), and the device's. */
void fg_ctx_sms(CUcontext ctx, unsigned *sms, unsigned *total);
/* streams.c: the context a created stream belongs to; NULL for the
 * default streams (the current context's). */
CUcontext fg_stream_ctx(CUstream stream);
/* Take bytes of kind on a physical device and record a fresh address. */
CUresult fg_allocate(uint64_t *dptr, uint64_t bytes, int physical, int kind);
/* Free key if its kind is one of kinds (a KIND() mask). */
CUresult fg_free(uint64_t key, int kinds);

/* streams.c: a pool allocation freed (back to its pool's cache); every
 * pool shrinks to its release threshold (a synchronization); the pools
 * of a physical device lose everything (a context reset). */
void fg_pool_free(const struct fg_alloc *a);
void fg_pools_sync(void);
void fg_pools_reset(int physical);

/* graphmem.c: the graph memory pool of each device. A graph's memory
 * nodes as its launch sees them: an allocation freed in the graph, one that
 * outlives the launch, or the free of another graph's allocation. */
enum fg_mem_kind { FG_MEM_FREED, FG_MEM_KEPT, FG_MEM_FREE };
struct fg_mem_node {
    uint64_t dptr;
    uint64_t bytes;
    int physical;
    int kind; /* enum fg_mem_kind */
};
/* Reserve what the nodes need (upload), and take their allocations (launch). */
CUresult fg_graph_mem_run(const struct fg_mem_node *nodes, int n, bool launch);
/* A graph allocation that outlived its launch was freed. */
void fg_graph_mem_free(const struct fg_alloc *a);
/* A primary context's reset: the device's graph pool loses everything. */
void fg_graph_mem_reset(int physical);

/* exec.c: a capturing stream records stream-ordered allocations and frees
 * as memory nodes. False: s is not capturing. */
bool fg_exec_capture_alloc(void *s, uint64_t bytes, int ordinal, uint64_t *dptr);
bool fg_exec_capture_free(void *s, uint64_t dptr);

#endif
