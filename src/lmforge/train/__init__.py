"""Training: the pretraining loop, its schedule, checkpoints and evaluation."""

from lmforge.train.checkpoint import CheckpointError
from lmforge.train.config import DataSettings, PretrainConfig, TrainSettings
from lmforge.train.loop import PretrainResult, TrainingDiverged, pretrain

__all__ = [
    "CheckpointError",
    "DataSettings",
    "PretrainConfig",
    "PretrainResult",
    "TrainSettings",
    "TrainingDiverged",
    "pretrain",
]
