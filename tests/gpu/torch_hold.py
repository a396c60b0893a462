"""PyTorch holding memory at rest, for the region-vs-NVML gap (issue 9):
allocates MIB in a tensor, runs a matmul (kernels load lazily at first
launch), synchronizes, creates READY and holds until RELEASE exists.
Usage: torch_hold.py MIB READY RELEASE"""
import os
import sys
import time

import torch

mib, ready, release = int(sys.argv[1]), sys.argv[2], sys.argv[3]
x = torch.empty(mib << 20, dtype=torch.uint8, device="cuda")
x.fill_(1)
a = torch.randn(1024, 1024, device="cuda")
b = a @ a
torch.cuda.synchronize()
open(ready, "w").close()
for _ in range(3000):
    if os.path.exists(release):
        break
    time.sleep(0.01)
