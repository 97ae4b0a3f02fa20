"""`lmforge parallel plan` predicts what each rank really holds once the layout is applied."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from processes import run_bounded

from lmforge.model import ModelConfig
from lmforge.parallel import ParallelSettings
from lmforge.parallel.plan import memory_plan

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("local_shares.py")


@pytest.mark.parametrize(("nproc", "layout"), [
    (2, {"tp": 2, "dp_shard": 1}),
    (4, {"dp_shard": 2, "tp": 2}),
    (4, {"pp": 2, "tp": 2, "dp_shard": 1}),
])
def test_plan_matches_the_shards_each_rank_holds(nproc, layout):
    config = ModelConfig(preset="tiny", n_layers=3, vocab_size=1000, dropout=0.0)
    settings = ParallelSettings.model_validate(layout)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(WORKER), config.model_dump_json(), settings.model_dump_json()]
    result = run_bounded(command, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    planned = [share.parameters for share in memory_plan(config, settings.resolved(nproc))]
    assert measured == planned
