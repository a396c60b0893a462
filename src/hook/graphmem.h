/* Graph memory: what the driver's graph pool of each device reserves for
 * the allocation nodes of this process's graphs is charged. */
#ifndef VGPU_HOOK_GRAPHMEM_H
#define VGPU_HOOK_GRAPHMEM_H

#include <stdint.h>

#include <cuda.h>

/* A launch of exec (cuGraphLaunch and its _ptsz variant): call(exec, s)
 * after reserving what exec's allocation nodes can add to the graph pool;
 * CUDA_ERROR_OUT_OF_MEMORY without calling when that does not fit. A graph
 * without allocation nodes costs one lookup. */
typedef CUresult (*graphmem_call_fn)(CUgraphExec exec, CUstream s);
CUresult graphmem_launch(CUgraphExec exec, CUstream s, graphmem_call_fn call);

/* Give back what this process's graph pool on dev caches unused
 * (cuDeviceGraphMemTrim) and uncharge it; returns the bytes uncharged. For
 * a charge that would fail. */
uint64_t graphmem_give_back(int dev);

#endif
