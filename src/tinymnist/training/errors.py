"""What can stop a training run, as exception types the CLI maps to exit codes."""

from __future__ import annotations

from pathlib import Path


class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged)."""


class OutputDirError(TrainingError):
    """The run directory cannot be created or written."""


class Interrupted(TrainingError):
    """Stopped by Ctrl-C or SIGTERM after saving a resumable state."""

    def __init__(self, message: str, resume_path: Path | None):
        super().__init__(message)
        self.resume_path = resume_path
