#!/usr/bin/env python3
"""Independent reader of NVML's energy counter: logs (unix_ms, counter_mJ) for GPU 0 every
20 ms until killed, calling libnvidia-ml directly through ctypes (no Wattprint code)."""
import ctypes, signal, sys, time

out = open(sys.argv[1], "w", buffering=1)
nvml = ctypes.CDLL("libnvidia-ml.so.1")
assert nvml.nvmlInit_v2() == 0, "nvmlInit failed"
handle = ctypes.c_void_p()
assert nvml.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) == 0
energy = ctypes.c_ulonglong()
running = True
signal.signal(signal.SIGTERM, lambda *_: globals().__setitem__("running", False))
out.write("unix_ms,counter_mj\n")
while running:
    t = time.time()
    rc = nvml.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(energy))
    if rc == 0:
        out.write(f"{round(t * 1000)},{energy.value}\n")
    time.sleep(0.02)
