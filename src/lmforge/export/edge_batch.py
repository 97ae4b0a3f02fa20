"""Edge batching: the largest batch that fits a memory budget, chosen from measured peak memory.

A device with a fixed memory budget (a phone, a small VM, a GPU shared with other models) must
pick its batch before running it: an out-of-memory error mid-request loses the whole batch. The
peak memory of one forward pass grows linearly in the batch at a fixed sequence length (the
activations and the attention scores are per sequence; weights and buffers are fixed), so a few
measured points give a line, and the batch is the largest whose predicted peak, plus a safety
margin, fits what is free.

Peak memory is measured where it is spent: on CUDA, the allocator's peak
(`torch.cuda.max_memory_allocated`); on the CPU, the process's resident high-water mark
(VmHWM), reset before each pass through /proc/self/clear_refs so one process can measure
several batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmforge.errors import LmforgeError

Forward = Callable[[int, int], object]
"""forward(batch, seq_len): run one pass of that shape (inputs made by the callee)."""


class MemoryBudgetError(LmforgeError):
    """Not even one sequence of that length fits the memory budget."""


@dataclass(frozen=True)
class MemoryLine:
    """Peak bytes of one forward pass at `seq_len` tokens: fixed + per_sequence * batch."""

    seq_len: int
    fixed: float
    per_sequence: float
    measured: tuple[tuple[int, int], ...]
    """(batch, peak bytes) points the line was fitted to."""

    def peak(self, batch: int) -> float:
        return self.fixed + self.per_sequence * batch

    def largest_batch(self, budget_bytes: float, margin: float = 0.2, cap: int = 64) -> int:
        """The largest batch (at most `cap`, Triton's max_batch_size) whose predicted peak, grown by
        `margin`, fits `budget_bytes`; MemoryBudgetError when not even one sequence does."""
        usable = budget_bytes / (1 + margin) - self.fixed
        batch = min(cap, math.floor(usable / self.per_sequence)) if self.per_sequence > 0 else cap
        if batch < 1:
            need, budget = self.peak(1) * (1 + margin) / 2**20, budget_bytes / 2**20
            raise MemoryBudgetError(f"one sequence of {self.seq_len} tokens needs about {need:.1f} MiB "
                                    f"(with a {margin:.0%} margin); the budget is {budget:.1f} MiB")
        return batch


def measure(forward: Forward, seq_len: int, device: torch.device,
            batches: Sequence[int] = (1, 2, 4, 8)) -> MemoryLine:
    """Fit the peak-memory line of `forward` at `seq_len` from one pass per batch in `batches`."""
    forward(1, seq_len)  # warm-up: thread pools, allocator arenas and lazy buffers exist from here on
    points = tuple((batch, _peak_of(lambda b=batch: forward(b, seq_len), device)) for batch in batches)
    slope, intercept = np.polyfit([b for b, _ in points], [p for _, p in points], 1)
    return MemoryLine(seq_len, max(float(intercept), 0.0), max(float(slope), 0.0), points)


def _peak_of(run: Callable[[], object], device: torch.device) -> int:
    """Bytes the peak of `run()` rose above the memory in use just before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident size
    before = status_bytes("VmRSS")
    run()
    return status_bytes("VmHWM") - before


def status_bytes(field: str) -> int:
    """A size field of /proc/self/status (VmRSS, VmHWM, VmSize, ...) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise OSError(f"/proc/self/status has no {field}")


def free_bytes(device: torch.device) -> int:
    """Memory free for a new batch now: the GPU's free memory, or the machine's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable")


def model_forward(model: torch.nn.Module, vocab_size: int, device: torch.device) -> Forward:
    """`forward(batch, seq_len)` of a backbone on random tokens, without autograd (as served)."""

    def forward(batch: int, seq_len: int) -> object:
        with torch.inference_mode():
            return model(torch.randint(vocab_size, (batch, seq_len), device=device))

    return forward
