"""Training: the one trainer and its configurations (pretraining, fine-tuning, multi-task)."""

from lmforge.train.checkpoint import CheckpointError
from lmforge.train.config import DataSettings, OptimSettings, PretrainConfig, TrainSettings
from lmforge.train.pretrain import PretrainResult, pretrain
from lmforge.train.trainer import TrainingDiverged

__all__ = [
    "CheckpointError",
    "DataSettings",
    "OptimSettings",
    "PretrainConfig",
    "PretrainResult",
    "TrainSettings",
    "TrainingDiverged",
    "pretrain",
]
