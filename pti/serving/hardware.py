"""Whether the GPU that a server was meant to use is usable, and why not."""
from __future__ import annotations

from pathlib import Path

import torch

# Present wherever an NVIDIA driver is loaded (a GPU Space, a GPU machine), whatever torch can do with it.
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")


def unusable_gpu_reason(requested_device: str, *, driver_file: Path = NVIDIA_DRIVER_FILE) -> str | None:
    """Why a GPU that was expected (`--device cuda...`, or an NVIDIA driver on the machine) cannot be used by torch;
    None when none was expected or CUDA works."""
    asked = requested_device.startswith("cuda")
    driver = driver_file.read_text(errors="replace").splitlines()[0].strip() if driver_file.is_file() else None
    if not (asked or driver) or torch.cuda.is_available():
        return None
    expected = f"--device {requested_device}" if asked else "an NVIDIA driver is loaded"
    if torch.version.cuda is None:
        cause = f"this torch ({torch.__version__}) is a CPU-only build"
    else:
        found = f"the driver says: {driver}" if driver else "no NVIDIA driver was found"
        cause = (f"this torch ({torch.__version__}) is built for CUDA {torch.version.cuda}, which needs a driver that "
                 f"supports it; {found}")
    return f"A GPU was expected ({expected}) but CUDA is not usable: {cause}. Running on the CPU."
