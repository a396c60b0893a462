/* Every driver and NVML symbol vgpu intercepts, by its exported name.
 * X(name) expands once per symbol; the hook of the same name lives in one of
 * the files of this directory, and real.c resolves the driver's own. */
#ifndef VGPU_HOOK_SYMBOLS_H
#define VGPU_HOOK_SYMBOLS_H

#define VGPU_CUDA_HOOKS(X)                                                     \
    X(cuGetProcAddress)                                                        \
    X(cuGetProcAddress_v2)                                                     \
    X(cuMemAlloc)                                                              \
    X(cuMemAlloc_v2)                                                           \
    X(cuMemAllocPitch)                                                         \
    X(cuMemAllocPitch_v2)                                                      \
    X(cuMemAllocManaged)                                                       \
    X(cuMemFree)                                                               \
    X(cuMemFree_v2)                                                            \
    X(cuMemAllocAsync)                                                         \
    X(cuMemAllocAsync_ptsz)                                                    \
    X(cuMemAllocFromPoolAsync)                                                 \
    X(cuMemAllocFromPoolAsync_ptsz)                                            \
    X(cuMemFreeAsync)                                                          \
    X(cuMemFreeAsync_ptsz)                                                     \
    X(cuMemCreate)                                                             \
    X(cuMemRelease)                                                            \
    X(cuMemMap)                                                                \
    X(cuMemUnmap)                                                              \
    X(cuMemRetainAllocationHandle)                                             \
    X(cuMemExportToShareableHandle)                                            \
    X(cuMemImportFromShareableHandle)                                          \
    X(cuMemPoolCreate)                                                         \
    X(cuMemPoolDestroy)                                                        \
    X(cuMemPoolTrimTo)                                                         \
    X(cuMemPoolSetAttribute)                                                   \
    X(cuDeviceGetDefaultMemPool)                                               \
    X(cuStreamSynchronize)                                                     \
    X(cuStreamSynchronize_ptsz)                                                \
    X(cuCtxSynchronize)                                                        \
    X(cuCtxSynchronize_v2)                                                     \
    X(cuEventSynchronize)                                                      \
    X(cuArrayCreate)                                                           \
    X(cuArrayCreate_v2)                                                        \
    X(cuArray3DCreate)                                                         \
    X(cuArray3DCreate_v2)                                                      \
    X(cuArrayDestroy)                                                          \
    X(cuMipmappedArrayCreate)                                                  \
    X(cuMipmappedArrayDestroy)                                                 \
    X(cuMemGetInfo)                                                            \
    X(cuMemGetInfo_v2)                                                         \
    X(cuDeviceTotalMem)                                                        \
    X(cuDeviceTotalMem_v2)                                                     \
    X(cuDevicePrimaryCtxRetain)                                                \
    X(cuDevicePrimaryCtxRelease)                                               \
    X(cuDevicePrimaryCtxRelease_v2)                                            \
    X(cuDevicePrimaryCtxReset)                                                 \
    X(cuDevicePrimaryCtxReset_v2)                                              \
    X(cuCtxCreate)                                                             \
    X(cuCtxCreate_v2)                                                          \
    X(cuCtxCreate_v3)                                                          \
    X(cuCtxCreate_v4)                                                          \
    X(cuCtxDestroy)                                                            \
    X(cuCtxDestroy_v2)                                                         \
    X(cuGreenCtxCreate)                                                        \
    X(cuGreenCtxDestroy)                                                       \
    X(cuCtxSetCurrent)                                                         \
    X(cuCtxPushCurrent_v2)                                                     \
    X(cuModuleLoad)                                                            \
    X(cuModuleLoadData)                                                        \
    X(cuModuleLoadDataEx)                                                      \
    X(cuModuleLoadFatBinary)                                                   \
    X(cuModuleUnload)                                                          \
    X(cuLibraryLoadData)                                                       \
    X(cuLibraryLoadFromFile)                                                   \
    X(cuLibraryUnload)                                                         \
    X(cuLaunchKernel)                                                          \
    X(cuLaunchKernel_ptsz)                                                     \
    X(cuLaunchKernelEx)                                                        \
    X(cuLaunchKernelEx_ptsz)                                                   \
    X(cuLaunchCooperativeKernel)                                               \
    X(cuLaunchCooperativeKernel_ptsz)                                          \
    X(cuLaunch)                                                                \
    X(cuLaunchGrid)                                                            \
    X(cuLaunchGridAsync)                                                       \
    X(cuLaunchCooperativeKernelMultiDevice)                                    \
    X(cuGraphLaunch)                                                           \
    X(cuGraphLaunch_ptsz)                                                      \
    X(cuStreamBeginCapture)                                                    \
    X(cuStreamBeginCapture_ptsz)                                               \
    X(cuStreamBeginCapture_v2)                                                 \
    X(cuStreamBeginCapture_v2_ptsz)                                            \
    X(cuStreamBeginCaptureToGraph)                                             \
    X(cuStreamBeginCaptureToGraph_ptsz)                                        \
    X(cuStreamEndCapture)                                                      \
    X(cuStreamEndCapture_ptsz)                                                 \
    X(cuGraphInstantiateWithFlags)                                             \
    X(cuGraphInstantiate)                                                      \
    X(cuGraphInstantiate_v2)                                                   \
    X(cuGraphInstantiateWithParams)                                            \
    X(cuGraphInstantiateWithParams_ptsz)                                       \
    X(cuGraphUpload)                                                           \
    X(cuGraphUpload_ptsz)                                                      \
    X(cuGraphExecDestroy)                                                      \
    X(cuDeviceGraphMemTrim)                                                    \
    X(cuDeviceSetGraphMemAttribute)

/* Driver functions vgpu calls but does not intercept. */
#define VGPU_CUDA_USED(X)                                                      \
    X(cuCtxGetDevice)                                                          \
    X(cuDeviceGetCount)                                                        \
    X(cuDeviceGetUuid_v2)                                                      \
    X(cuDeviceGetMemPool)                                                      \
    X(cuMemPoolGetAttribute)                                                   \
    X(cuMemPoolGetAccess)                                                      \
    X(cuStreamGetDevice)                                                       \
    X(cuCtxGetCurrent)                                                         \
    X(cuStreamGetCtx)                                                          \
    X(cuStreamIsCapturing)                                                     \
    X(cuFuncLoad)                                                              \
    X(cuKernelGetFunction)                                                     \
    X(cuThreadExchangeStreamCaptureMode)                                       \
    X(cuEventCreate)                                                           \
    X(cuEventRecord)                                                           \
    X(cuEventQuery)                                                            \
    X(cuEventElapsedTime)                                                      \
    X(cuEventElapsedTime_v2)                                                   \
    X(cuEventDestroy_v2)                                                       \
    X(cuGraphGetNodes)                                                         \
    X(cuGraphNodeGetType)                                                      \
    X(cuGraphMemAllocNodeGetParams)                                            \
    X(cuGraphChildGraphNodeGetGraph)                                           \
    X(cuDeviceGetGraphMemAttribute)                                            \
    X(cuDeviceGetDevResource)                                                  \
    X(cuDevSmResourceSplitByCount)                                             \
    X(cuDevResourceGenerateDesc)                                               \
    X(cuCtxFromGreenCtx)

#define VGPU_NVML_HOOKS(X)                                                     \
    X(nvmlDeviceGetMemoryInfo)                                                 \
    X(nvmlDeviceGetMemoryInfo_v2)

#define VGPU_NVML_USED(X)                                                      \
    X(nvmlDeviceGetUUID)                                                       \
    X(nvmlDeviceGetIndex)                                                      \
    X(nvmlInit_v2)                                                             \
    X(nvmlDeviceGetHandleByUUID)                                               \
    X(nvmlDeviceGetComputeRunningProcesses_v3)

#endif
