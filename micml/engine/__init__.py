"""Training: the typed settings, the CenterNet loss, the loop, resume and multi-process (DDP) support.

`micml.engine.train.train` runs one training run, `micml.engine.launch.run_training` the workflow's
(in this process, or torchrun over several GPUs). The loop is not re-exported here:
`python -m micml.engine.train` must be able to run that module as the main program without the
package having imported it first. Checkpoints are `micml.checkpoint`'s.
"""

from micml.engine.distributed import launch_command
from micml.engine.losses import CenterNetLoss, focal_loss, reg_l1_loss

__all__ = [
    "CenterNetLoss",
    "focal_loss",
    "launch_command",
    "reg_l1_loss",
]
