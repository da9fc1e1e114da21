"""Training: ``train(config)`` and what it is built from.

``loop`` (the entry point, read top to bottom), ``setup`` (the run: plan, model, optimizer,
generators), ``step`` (one optimizer step), ``optim`` (AdamW / Muon and the schedule),
``rundir`` (the run directory), ``state`` (the resumable state), ``distributed`` (torchrun).
"""

from .errors import Interrupted, OutputDirError, TrainingError
from .loop import StepBatch, TrainResult, train
from .setup import DRY_RUN_STEPS

__all__ = ["Interrupted", "OutputDirError", "TrainingError", "StepBatch", "TrainResult", "train", "DRY_RUN_STEPS"]
