"""How uint8 BGR frames become network input, following the weights the model starts from.

The reference's `(v/255 - 0.49965) / 0.08255` on BGR for a model trained from scratch,
ImageNet's per-channel statistics on RGB for a backbone initialised from ImageNet weights
(`normalisation_for_weights`). A checkpoint records which one it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

PIXEL_MEAN = 0.49965
PIXEL_STD = 0.08255


@dataclass(frozen=True)
class Normalisation:
    """How uint8 BGR frames (as cv2 decodes them) become network input: channel order, then
    `(v/255 - mean) / std`, with one value for every channel or one per channel (in `channels` order)."""

    name: str
    channels: str  # "BGR" or "RGB": the order the network's first convolution expects
    mean: float | tuple[float, float, float]
    std: float | tuple[float, float, float]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """float32 network input of channel-last BGR `pixels`, in this normalisation's channel order."""
        values = pixels.astype(np.float32)
        if self.channels == "RGB":
            values = values[..., ::-1]
        mean, std = _statistic(self.mean, np.float32), _statistic(self.std, np.float32)
        return ((values / 255.0 - mean) / std).astype(np.float32)

    def on_tensor(self, values: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """The same on a float tensor of BGR values in [0, 255] whose channels are `channel_dim`."""
        if self.channels == "RGB":
            values = values.flip(channel_dim)
        shape = [1] * values.dim()
        shape[channel_dim] = 3
        mean, std = (value if isinstance(value, float) else
                     torch.tensor(value, dtype=values.dtype, device=values.device).view(shape)
                     for value in (self.mean, self.std))
        return (values / 255.0 - mean) / std

    def as_dict(self) -> dict:
        """Plain values, as a checkpoint stores them."""
        listed = {key: value if isinstance(value, float) else list(value)
                  for key, value in (("mean", self.mean), ("std", self.std))}
        return {"name": self.name, "channels": self.channels, **listed}

    @classmethod
    def from_dict(cls, value: Mapping | None) -> "Normalisation":
        """The normalisation a checkpoint records; None (a checkpoint older than the field) is
        the reference's, which every such checkpoint was trained with."""
        if value is None:
            return REFERENCE_NORMALISATION
        try:
            stats = {key: float(value[key]) if isinstance(value[key], (int, float)) else
                     tuple(float(v) for v in value[key]) for key in ("mean", "std")}
            normalisation = cls(str(value["name"]), value["channels"], **stats)
        except (KeyError, TypeError, ValueError):
            normalisation = None
        if (normalisation is None or normalisation.channels not in ("BGR", "RGB")
                or any(not isinstance(s, float) and len(s) != 3 for s in (normalisation.mean, normalisation.std))):
            raise ValueError(f"normalisation {value!r}: expected {{name, channels: BGR|RGB, mean, std}} "
                             "with one value or three per statistic")
        return normalisation


def _statistic(value: float | tuple[float, ...], dtype) -> np.generic | np.ndarray:
    return dtype(value) if isinstance(value, float) else np.asarray(value, dtype)


#: The reference's (MICML/DSFNet): one mean and std for all channels, BGR order.
REFERENCE_NORMALISATION = Normalisation("reference", "BGR", PIXEL_MEAN, PIXEL_STD)
#: ImageNet's, in RGB order: what timm's dla34 (and the original DLA-34 ImageNet file) learnt with.
IMAGENET_NORMALISATION = Normalisation("imagenet", "RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def normalisation_for_weights(pretrained: object) -> Normalisation:
    """Normalisation follows the weights: ImageNet's for a backbone initialised from ImageNet
    weights (`pretrained` names a file), the reference's for a model trained from scratch.
    (The reference itself fed its ImageNet-initialised backbone its own BGR statistics; its
    checkpoints keep those, see `micml.models.checkpoint_keys`.)"""
    return REFERENCE_NORMALISATION if pretrained is None else IMAGENET_NORMALISATION


def normalise(pixels: np.ndarray, normalisation: Normalisation | None = None) -> np.ndarray:
    """float32 network input of uint8 BGR `pixels` (the reference's normalisation by default)."""
    return (normalisation or REFERENCE_NORMALISATION)(pixels)
