"""PyTorch with PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync frees a 3 GiB
tensor (its pool keeps it: release threshold UINT64_MAX), then another
library in the same process takes 3 GiB with the driver API (cuMemAlloc).
Under a 4 GiB vgpu limit the second allocation succeeds only once vgpu has
trimmed PyTorch's pool, and the driver never holds both; without vgpu it
holds both. Prints "key value" lines; holds argv[2] ms (default 1000) at the
end for an NVML sampler. argv[1]: the key prefix."""
import ctypes
import os
import sys
import time

import torch

tag = sys.argv[1] if len(sys.argv) > 1 else "torch_pool"
hold_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
GiB = 1 << 30
print(f"{tag}_backend {torch.cuda.get_allocator_backend()}")
x = torch.empty(3 * GiB, dtype=torch.uint8, device="cuda")
x.fill_(1)
del x  # cudaFreeAsync: the pool keeps the 3 GiB
torch.cuda.synchronize()
print(f"{tag}_torch_reserved_mib {torch.cuda.memory_reserved() >> 20}")
cuda = ctypes.CDLL("libcuda.so.1")
ptr = ctypes.c_uint64(0)
rc = cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(3 * GiB))
if rc == 0:
    cuda.cuMemsetD8_v2(ptr, ctypes.c_ubyte(1), ctypes.c_size_t(3 * GiB))
    cuda.cuCtxSynchronize()
print(f"{tag}_other_3g_ok {int(rc == 0)}")
print(f"{tag}_other_rc {rc}")
sys.stdout.flush()
time.sleep(hold_ms / 1000)
if rc == 0:
    cuda.cuMemFree_v2(ptr)
os._exit(0)
