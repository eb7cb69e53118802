"""MICML model family: DLA-34, the temporal 3-D branch, the motion module, necks, heads, and
the registry of assembled detectors (`build`; `VARIANTS` and `describe` are micml.catalog's, which
names the variants without importing torch)."""

from .backbone import DLA34, load_imagenet_weights
from .checkpoint_keys import convert_reference_state_dict, load_reference_checkpoint
from .detector import Detector
from .fuse import optimize_for_inference
from .heads import centernet_heads
from .motion import MotionModule
from .necks import DLAUp, IDAUp
from .parameters import count_parameters
from .registry import OPTIONS, VARIANTS, build, builder_for, describe, known_models, rebuild, register
from .temporal import TemporalBranch

__all__ = [
    "OPTIONS",
    "VARIANTS",
    "DLA34",
    "DLAUp",
    "Detector",
    "IDAUp",
    "MotionModule",
    "TemporalBranch",
    "centernet_heads",
    "load_imagenet_weights",
    "build",
    "builder_for",
    "count_parameters",
    "convert_reference_state_dict",
    "describe",
    "known_models",
    "load_reference_checkpoint",
    "optimize_for_inference",
    "rebuild",
    "register",
]
