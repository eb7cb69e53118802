"""Training: the CenterNet loss, checkpoints, multi-process (DDP) support and the loop.

The loop lives in `micml.engine.train` (`from micml.engine.train import train`) and is not
re-exported here: `python -m micml.engine.train` must be able to run that module as the main
program without the package having imported it first.
"""

from micml.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from micml.engine.distributed import launch_command
from micml.engine.losses import CenterNetLoss, focal_loss, reg_l1_loss

__all__ = [
    "CenterNetLoss",
    "CheckpointError",
    "focal_loss",
    "launch_command",
    "load_checkpoint",
    "model_from_checkpoint",
    "reg_l1_loss",
    "save_checkpoint",
]
