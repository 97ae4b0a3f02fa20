"""The S4 learning-rate schedule: a pure function of the step, times a plateau factor.

Keeping warm-up + cosine stateless (as torchtitan does) means resume needs no scheduler
object; the only state is the plateau tracker, which lives in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def warmup_cosine(step: int, total_steps: int, peak: float, warmup_fraction: float = 0.1,
                  min_ratio: float = 0.1) -> float:
    """Rate for optimizer step `step` (0-based): linear warm-up to `peak`, cosine to peak*min_ratio.

    Warm-up reaches `peak` at step `warmup - 1`, so the first update already moves the weights;
    the cosine then ends exactly at `peak * min_ratio` on the last step.
    """
    warmup = max(1, math.ceil(warmup_fraction * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_steps = max(1, total_steps - 1 - (warmup - 1))
    progress = min(1.0, (step - (warmup - 1)) / decay_steps)
    floor = peak * min_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Plateau:
    """Multiplies the rate by `factor` when validation loss fails to improve `patience` times."""

    patience: int = 3
    factor: float = 0.1
    scale: float = 1.0
    best: float = math.inf
    bad_evals: int = 0

    def update(self, val_loss: float) -> bool:
        """Record one evaluation; return True when the rate was just reduced."""
        if val_loss < self.best:
            self.best, self.bad_evals = val_loss, 0
            return False
        self.bad_evals += 1
        if self.bad_evals < self.patience:
            return False
        self.scale *= self.factor
        self.bad_evals = 0
        return True

    def state_dict(self) -> dict:
        state = asdict(self)
        state["best"] = None if math.isinf(self.best) else self.best
        return state

    @classmethod
    def from_state(cls, state: dict) -> Plateau:
        best = state.get("best")
        return cls(**{**state, "best": math.inf if best is None else best})
