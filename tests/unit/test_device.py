"""The device setting: what each value resolves to here, and a training run on CUDA where there is one."""

from __future__ import annotations

import pytest
import torch

from lmforge.device import DeviceError, collective_backend, resolve_device


def test_auto_is_cuda_when_present_else_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert collective_backend(torch.device("cpu")) == "gloo"
    assert collective_backend(torch.device("cuda", 0)) == "nccl"


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", "cuda:"])
def test_an_unknown_device_is_a_one_line_error(name):
    with pytest.raises(DeviceError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_says_so(name):
    with pytest.raises(DeviceError, match="no CUDA device on this machine"):
        resolve_device(name)


def test_a_worker_takes_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 3)
    assert resolve_device("cuda:1", local_rank=3) == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="has 4 CUDA device"):
        resolve_device("cuda:4")


@pytest.mark.cuda
def test_pretraining_and_fine_tuning_run_on_cuda(pretrain_config, tmp_path):
    """Where a GPU is: bf16 pretraining with accumulation on cuda gives a finite, falling loss and a
    model folder that loads back; the checkpoint stores the CUDA RNG state."""
    from lmforge.train import pretrain
    from lmforge.train.checkpoint import latest_checkpoint

    cfg = pretrain_config(tmp_path, steps=20, precision="bf16", micro_batch_size=2, device="cuda")
    result = pretrain(cfg, resume=None)
    assert result.val_loss_after < result.val_loss_before
    assert "cuda" in (latest_checkpoint(tmp_path / "checkpoints" / "t") / "state.json").read_text()
