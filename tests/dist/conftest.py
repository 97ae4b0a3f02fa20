"""Every process group of the tests under tests/dist talks over the loopback interface only.

gloo binds to whatever address the host name resolves to unless GLOO_SOCKET_IFNAME names an
interface; these tests pin it to the loopback interface (checked to exist) and MASTER_ADDR to
127.0.0.1, for every subprocess a test starts with os.environ (torchrun --standalone sets its
workers' MASTER_ADDR itself, to localhost).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

IFF_LOOPBACK = 0x8


def loopback_interface() -> str:
    """The name of this machine's loopback interface ("lo" on Linux, "lo0" on macOS)."""
    net = Path("/sys/class/net")
    if net.is_dir():
        for device in sorted(net.iterdir()):
            try:
                if int((device / "flags").read_text(), 16) & IFF_LOOPBACK:
                    return device.name
            except (OSError, ValueError):
                continue
    names = [name for _, name in socket.if_nameindex()]
    for name in ("lo", "lo0"):
        if name in names:
            return name
    pytest.fail(f"no loopback network interface on this machine (interfaces: {names}); "
                "the distributed tests bind gloo to loopback only")


@pytest.fixture(scope="session")
def loopback_env() -> dict[str, str]:
    """Environment entries that keep gloo and the rendezvous on 127.0.0.1, one thread per rank."""
    return {"GLOO_SOCKET_IFNAME": loopback_interface(), "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _pinned_to_loopback(loopback_env, monkeypatch):
    for name, value in loopback_env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_like_the_workers():
    """In-process reference runs use one thread, as every torchrun worker here does: matmuls split
    over another thread count round differently, and AdamW turns that noise into weight updates
    wherever a gradient is nearly zero."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
