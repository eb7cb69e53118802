"""Modulated deformable convolution (DCNv2) for micml's necks."""

from micml.ops.check import DeformConvMismatch, check_against_reference
from micml.ops.deform_conv import (
    BACKEND_ENV_VAR,
    BACKENDS,
    ModulatedDeformConv2d,
    modulated_deform_conv2d,
    resolve_backend,
    set_backend,
)

__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "DeformConvMismatch",
    "ModulatedDeformConv2d",
    "check_against_reference",
    "modulated_deform_conv2d",
    "resolve_backend",
    "set_backend",
]
