/* Prototypes cuda.h leaves out: the per-thread-default-stream graph
 * variants (same arguments as their plain names) and the instantiations
 * of CUDA 10 and 11 (cuGraphInstantiate, _v2), which drivers still export
 * (cuda.h's internal mode leaves cuGraphInstantiate undefined at its end). */
#ifndef VGPU_HOOK_GRAPH_DECL_H
#define VGPU_HOOK_GRAPH_DECL_H

#include <cuda.h>

CUresult cuGraphUpload_ptsz(CUgraphExec exec, CUstream s);
CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *exec, CUgraph g,
                                           CUDA_GRAPH_INSTANTIATE_PARAMS *p);
CUresult cuGraphInstantiate(CUgraphExec *exec, CUgraph g,
                            CUgraphNode *error_node, char *log,
                            size_t log_size);
CUresult cuGraphInstantiate_v2(CUgraphExec *exec, CUgraph g,
                               CUgraphNode *error_node, char *log,
                               size_t log_size);

#endif
