#!/usr/bin/env python3
"""A GPU workload with phases: steady bf16 GEMM burn, then bursts, for the given seconds."""
import sys, time, torch

seconds = float(sys.argv[1])
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.time() + seconds
half = time.time() + seconds / 2
while time.time() < end:
    if time.time() < half:
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
    else:  # bursty: 200 ms compute, 300 ms idle
        t = time.time()
        while time.time() - t < 0.2:
            a @ b
        torch.cuda.synchronize()
        time.sleep(0.3)
