"""PyTorch under a vgpu limit: mem_get_info shows it, 6 GiB raises
out-of-memory, 3 GiB succeeds. Prints "key value" lines; the allocator
backend comes from PYTORCH_CUDA_ALLOC_CONF, its name from argv[1]."""
import sys
import torch

tag = sys.argv[1] if len(sys.argv) > 1 else "torch"
GiB = 1 << 30
free, total = torch.cuda.mem_get_info()
print(f"{tag}_total_mib {total >> 20}")
try:
    x = torch.empty(6 * GiB, dtype=torch.uint8, device="cuda")
    print(f"{tag}_6g_refused 0")
    del x
except torch.OutOfMemoryError:
    print(f"{tag}_6g_refused 1")
torch.cuda.empty_cache()
try:
    y = torch.empty(3 * GiB, dtype=torch.uint8, device="cuda")
    y.fill_(1)
    torch.cuda.synchronize()
    print(f"{tag}_3g_ok 1")
except torch.OutOfMemoryError as e:
    print(f"{tag}_3g_ok 0 ({e})".replace("\n", " ")[:300])
