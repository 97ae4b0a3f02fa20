"""Which device a run uses: `auto`, `cpu`, `cuda` or `cuda:N`, resolved once, in one place.

Everything device-dependent (where tensors live, the autocast device type, the collective
backend, pinned host memory for batches) follows from the resolved `torch.device`, so no other
module names a device by hand.
"""

from __future__ import annotations

import re

import torch

from lmforge.errors import LmforgeError

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
"""What a `device` setting may say."""


class DeviceError(LmforgeError):
    """A device that this machine does not have."""


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device `name` means here; `auto` is CUDA when present, else the CPU.

    `local_rank` (a worker of a multi-process run) picks one GPU per process for `auto`/`cuda`.
    """
    if not re.match(DEVICE_PATTERN, name):
        raise DeviceError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r}: no CUDA device on this machine (use device=cpu or auto)")
    index = int(name.split(":")[1]) if ":" in name else (local_rank or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def collective_backend(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"
