/* Prototypes cuda.h's internal mode leaves out: the per-thread-default-
 * stream launch variants and the _v2 event timer (same arguments as their
 * plain names). */
#ifndef VGPU_HOOK_LAUNCH_DECL_H
#define VGPU_HOOK_LAUNCH_DECL_H

#include <cuda.h>

CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
                             unsigned int gz, unsigned int bx, unsigned int by,
                             unsigned int bz, unsigned int shmem, CUstream s,
                             void **params, void **extra);
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f,
                               void **params, void **extra);
CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx,
                                        unsigned int gy, unsigned int gz,
                                        unsigned int bx, unsigned int by,
                                        unsigned int bz, unsigned int shmem,
                                        CUstream s, void **params);
CUresult cuGraphLaunch_ptsz(CUgraphExec exec, CUstream s);
CUresult cuEventElapsedTime_v2(float *ms, CUevent start, CUevent end);

#endif
