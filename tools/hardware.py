"""What an evaluation ran on, stored beside each result so numbers from different machines never mix."""
from __future__ import annotations

import functools
import platform
import shutil
import subprocess


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


def gpu_memory_mib(field: str = "memory.total") -> int | None:
    """The first GPU's memory in MiB (`memory.total`, `memory.used`), asked of nvidia-smi so that the
    asking process opens no CUDA context of its own; None without an NVIDIA driver."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=False).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return int(out[0]) if out and out[0].isdigit() else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
