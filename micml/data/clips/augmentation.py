"""The training augmentation after the crop: its settings and its two styles.

'default' (this project's): flips, then colour distortion on pixel values, then normalisation.
'reference' (spec 4.5): normalisation first, then, only for a crop that holds a box, the flips
and the reference's colour distortion on the normalised values. `micml.data.clips` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from micml.data.clips.geometry import flip_clip
from micml.data.clips.normalisation import Normalisation
from micml.data.clips.photometric import photometric_distort, reference_photometric_distort

AUGMENT_STYLES = ("default", "reference")


@dataclass(frozen=True)
class Augmentation:
    hflip: float = 0.5        # probability of a horizontal flip
    vflip: float = 0.5        # probability of a vertical flip
    photometric: bool = True  # SSD-style colour distortion
    style: str = "default"    # 'default' or 'reference'; see this module's docstring

    @classmethod
    def from_config(cls, value: "Augmentation | dict | bool | str | None") -> "Augmentation":
        if isinstance(value, Augmentation):
            return value
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(0.0, 0.0, False)
        if isinstance(value, str) and value in AUGMENT_STYLES:
            return cls(style=value)
        if not isinstance(value, Mapping):
            raise ValueError(f"augment: expected a mapping like {{hflip: 0.5, vflip: 0.5, photometric: false}}, "
                             f"true or false; got {value!r}; a style name is also accepted: "
                             f"{', '.join(AUGMENT_STYLES)}")
        unknown = set(value) - {"hflip", "vflip", "photometric", "style"}
        if unknown:
            raise ValueError(f"augment: unknown keys {sorted(unknown)}; allowed: hflip, vflip, photometric, style")
        for key in ("hflip", "vflip"):
            chance = value.get(key, 0.5)
            if isinstance(chance, bool) or not isinstance(chance, (int, float)) or not 0 <= chance <= 1:
                raise ValueError(f"augment.{key}: expected a probability in [0, 1], got {chance!r}")
        if not isinstance(value.get("photometric", True), bool):
            raise ValueError(f"augment.photometric: expected true or false, got {value['photometric']!r}")
        if value.get("style", "default") not in AUGMENT_STYLES:
            raise ValueError(f"augment.style: expected one of {', '.join(AUGMENT_STYLES)}, got {value['style']!r}")
        return cls(**value)

    def apply(self, rng: np.random.Generator, frames: np.ndarray, boxes: np.ndarray,
              normalisation: Normalisation) -> tuple[np.ndarray, np.ndarray]:
        """Augment a cropped uint8 clip; returns normalised frames and their boxes."""
        if self.style == "reference":
            return self._apply_as_reference(rng, frames, boxes, normalisation)
        frames, boxes = self._flip(rng, frames, boxes)
        if self.photometric:
            frames = photometric_distort(rng, frames)
        return normalisation(frames), boxes

    def _apply_as_reference(self, rng: np.random.Generator, frames: np.ndarray, boxes: np.ndarray,
                            normalisation: Normalisation) -> tuple[np.ndarray, np.ndarray]:
        """Flips and colour distortion after normalisation, and only for crops that hold a box (spec 4.5).

        With an RGB normalisation the distortion sees RGB values: its steps treat the channels alike
        except the hue rotation, whose direction flips, and that is drawn symmetrically around 0."""
        frames = normalisation(frames)
        if not len(boxes):
            return frames, boxes
        frames, boxes = self._flip(rng, frames, boxes)
        if self.photometric:
            frames = reference_photometric_distort(rng, frames)
        return frames, boxes

    def _flip(self, rng: np.random.Generator, frames: np.ndarray, boxes: np.ndarray):
        return flip_clip(frames, boxes, rng.random() < self.hflip, rng.random() < self.vflip)
