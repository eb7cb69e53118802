"""SSD-style colour distortion of a clip: this project's (on pixel values) and the reference's.

Both draw the same random choices in the same order (`PhotometricDraw`), one draw per clip, so
all frames of a clip change alike. This project's version works on values in [0, 255] and clips
back to that range; the reference's works on normalised values, unclipped (spec 4.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PhotometricDraw:
    """One clip's random choices of the SSD-style colour distortion (None: that step is skipped).

    brightness +U(-32, 32) (p .5); contrast xU(.5, 1.5) (p .5), before or after the HSV steps
    (p .5 each); saturation xU(.5, 1.5) (p .5); hue +U(-18, 18) degrees (p .5); a random channel
    order (p .5). Both styles draw in this order, so a seed gives the same choices in either.
    """
    brightness: float | None
    contrast_first: bool
    contrast: float | None
    saturation: float | None
    hue: float | None
    channel_order: np.ndarray | None

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "PhotometricDraw":
        brightness = rng.uniform(-32, 32) if rng.random() < 0.5 else None
        contrast_first = rng.random() < 0.5
        contrast = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
        saturation = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
        hue = rng.uniform(-18, 18) if rng.random() < 0.5 else None
        channel_order = rng.permutation(3) if rng.random() < 0.5 else None
        return cls(brightness, contrast_first, contrast, saturation, hue, channel_order)


def photometric_distort(rng: np.random.Generator, frames: np.ndarray) -> np.ndarray:
    """This project's colour distortion of (T, H, W, 3) float32 BGR frames in [0, 255], one draw per clip.

    The steps of PhotometricDraw on pixel values, clipped back to [0, 255] before the HSV round
    trip (which is exact only there) and at the end.
    """
    draw = PhotometricDraw.sample(rng)
    out = frames.astype(np.float32, copy=True)
    if draw.brightness is not None:
        out += draw.brightness
    if draw.contrast is not None and draw.contrast_first:
        out *= draw.contrast
    if draw.saturation is not None or draw.hue is not None:
        np.clip(out, 0, 255, out=out)
        out = np.stack([_shift_hsv(frame, draw.saturation, draw.hue) for frame in out])
    if draw.contrast is not None and not draw.contrast_first:
        out *= draw.contrast
    if draw.channel_order is not None:
        out = out[..., draw.channel_order]
    return np.clip(out, 0, 255)


def _shift_hsv(frame: np.ndarray, saturation: float | None, hue: float | None) -> np.ndarray:
    hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2HSV)  # H in [0, 360), S in [0, 1]
    if saturation is not None:
        hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
    if hue is not None:
        hsv[..., 0] = np.mod(hsv[..., 0] + hue, 360.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def reference_photometric_distort(rng: np.random.Generator, frames: np.ndarray) -> np.ndarray:
    """The reference's colour distortion (spec 4.5) of NORMALISED (T, H, W, 3) float32 BGR frames.

    The same steps as photometric_distort, done as the reference does them: on normalised values
    (so brightness moves by up to 32 standard deviations), nothing clipped, saturation unbounded,
    and the BGR -> HSV -> BGR round trip made on every call even when neither saturation nor hue
    changes (it is lossy on negative values, and that loss is part of what the reference trained on).
    """
    draw = PhotometricDraw.sample(rng)
    out = frames.astype(np.float32, copy=True)
    if draw.brightness is not None:
        out += np.float32(draw.brightness)
    if draw.contrast is not None and draw.contrast_first:
        out *= np.float32(draw.contrast)
    out = np.stack([_shift_hsv_as_reference(frame, draw.saturation, draw.hue) for frame in out])
    if draw.contrast is not None and not draw.contrast_first:
        out *= np.float32(draw.contrast)
    if draw.channel_order is not None:
        out = out[..., draw.channel_order]
    return np.ascontiguousarray(out)


def _shift_hsv_as_reference(frame: np.ndarray, saturation: float | None, hue: float | None) -> np.ndarray:
    hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2HSV)
    if saturation is not None:
        hsv[..., 1] *= np.float32(saturation)
    if hue is not None:
        # one wrap each way, not a modulo: a hue of exactly 360 stays 360 (cv2 reads it as 0)
        channel = hsv[..., 0]
        channel += np.float32(hue)
        channel[channel > 360.0] -= 360.0
        channel[channel < 0.0] += 360.0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
