"""Why training stops: each message says where it stopped and what to do."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot go on; the message says where it stopped and what to do."""


class NonFiniteLossError(TrainingError):
    pass


class StaleRunError(TrainingError):
    """The output folder holds a run of other settings; resuming it would mislabel the result."""

    def __init__(self, message: str, differences: str = ""):
        super().__init__(message)
        self.differences = differences or message
