"""torchrun worker for test_plan.py: print the parameter elements this rank really holds as JSON."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from lmforge.device import resolve_device
from lmforge.model import ModelConfig, Transformer
from lmforge.parallel import ParallelSettings, build_layout, check_layout
from lmforge.train.engine import Engine


def main() -> None:
    dist.init_process_group("gloo")
    config = ModelConfig.model_validate_json(sys.argv[1])
    requested = ParallelSettings.model_validate_json(sys.argv[2])
    settings = check_layout(requested, dist.get_world_size(), config, 8)
    layout = build_layout(settings, resolve_device("cpu"))
    torch.manual_seed(0)
    engine = Engine(Transformer(config), layout, 8 // settings.dp, 8 // settings.dp, bf16=False)
    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in engine.core.parameters())
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, local)
    if dist.get_rank() == 0:
        print(json.dumps(everyone))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
