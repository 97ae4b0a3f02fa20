"""Edge batching: the batch chosen for a memory budget runs under a hard limit of that budget."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lmforge.export.edge_batch import MemoryBudgetError, MemoryLine

# Runs in a fresh process: measure, choose a batch for the budget, then cap the address space at
# what is mapped now + the budget (RLIMIT_AS: stricter than resident memory) and run that batch,
# then four times that batch, which must fail, so the limit is real.
CHILD = """
import json, resource, sys
import torch
from lmforge.export.edge_batch import measure, model_forward, status_bytes
from lmforge.model.bundle import load_bundle

bundle = load_bundle(sys.argv[1])
forward = model_forward(bundle.model, bundle.config.vocab_size, torch.device("cpu"))
line = measure(forward, 256, torch.device("cpu"))
budget = line.peak(6) * 1.25
batch = line.largest_batch(budget, margin=0.2)
resource.setrlimit(resource.RLIMIT_AS, (status_bytes("VmSize") + int(budget), resource.RLIM_INFINITY))
forward(batch, 256)
try:
    forward(4 * batch, 256)
    over = "ran"
except (RuntimeError, MemoryError):
    over = "out of memory"
print(json.dumps({"batch": batch, "over": over, "per_sequence": line.per_sequence, "points": line.measured}))
"""


def test_the_batch_chosen_for_a_budget_runs_under_that_budget_and_four_times_it_does_not(lm_folder):
    child = subprocess.run([sys.executable, "-c", CHILD, str(lm_folder)], capture_output=True, text=True,
                           timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["batch"] >= 4
    assert result["over"] == "out of memory"
    peaks = [peak for _, peak in result["points"]]
    assert peaks == sorted(peaks) and result["per_sequence"] > 0


def test_the_line_picks_the_largest_batch_under_the_budget_and_refuses_when_none_fits():
    line = MemoryLine(seq_len=128, fixed=10e6, per_sequence=1e6, measured=())
    # By hand: batch 7 peaks at 17 MB, 20.4 MB with the margin; batch 8 at 21.6 MB.
    assert line.largest_batch(20.4e6 + 1, margin=0.2) == 7
    assert line.largest_batch(1e12) == 64
    with pytest.raises(MemoryBudgetError, match="one sequence of 128 tokens"):
        line.largest_batch(10e6, margin=0.2)
