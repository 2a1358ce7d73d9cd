"""What an evaluation ran on, stored beside each result so numbers from different machines never mix."""
from __future__ import annotations

import functools
import platform


@functools.cache
def hardware_info(threads: int, device: str) -> dict:
    import torch

    info = {
        "cpu": _cpu_name(),
        "threads": threads,
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    # Only ask CUDA when training will use it: initialising CUDA here would break fork-based children.
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
