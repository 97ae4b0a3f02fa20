"""Training metrics: a JSONL file (the record) mirrored to TensorBoard, and the MFU probe."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from lmforge.artifacts import atomic_write_text, writing


class MetricsLog:
    """Append-only JSONL of metric records, mirrored to TensorBoard scalars.

    On resume the records after the resumed step are dropped first, so the file reads as one
    uninterrupted run.
    """

    def __init__(self, folder: Path, resume_step: int = 0):
        self.path = folder / "metrics.jsonl"
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        from torch.utils.tensorboard import SummaryWriter  # heavy import, only when logging

        self.board = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, step: int, **values: Any) -> None:
        record = {"step": step, "time": round(time.time(), 3), **values}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.board.add_scalar(key, value, step)

    def close(self) -> None:
        self.board.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def measure_peak_gflops(size: int = 1024, seconds: float = 0.3, dtype: torch.dtype = torch.float32) -> float:
    """Best observed matmul rate on this machine (GFLOP/s): the denominator of MFU.

    The operands come from a private generator: the probe runs after a resumed run has restored
    its RNG state, and drawing from the global one there would shift every later dropout mask.
    """
    private = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, dtype=dtype, generator=private)
    b = torch.randn(size, size, dtype=dtype, generator=private)
    a @ b  # warm-up: thread pool and kernel selection
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best
