"""Every process group of the tests under tests/dist talks over the loopback interface only.

gloo binds to whatever address the host name resolves to unless GLOO_SOCKET_IFNAME names an
interface; these tests pin it to the loopback interface (checked to exist) and MASTER_ADDR to
127.0.0.1, for every subprocess a test starts with os.environ (torchrun --standalone sets its
workers' MASTER_ADDR itself, to localhost).
"""

from __future__ import annotations

import pytest
import torch

from lmforge.train.launch import loopback_interface


@pytest.fixture(scope="session")
def loopback_env() -> dict[str, str]:
    """Environment entries that keep gloo and the rendezvous on 127.0.0.1, one thread per rank."""
    interface = loopback_interface()  # the one `lmforge pretrain --nproc` binds gloo to
    if interface is None:
        pytest.fail("no loopback network interface on this machine; the distributed tests bind gloo "
                    "to loopback only")
    return {"GLOO_SOCKET_IFNAME": interface, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}


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
