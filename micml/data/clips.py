"""Five-frame training and validation clips from a unified dataset, with their CenterNet targets.

A sample is the current frame t of one video plus its four predecessors: temporal index k holds
frame max(t - k, 1) (reference coco_rsdata.py:173-182), so t=3 gives frames 3, 2, 1, 1, 1.
Pixels stay BGR as cv2 decodes them until the last step, normalisation, which follows the
weights the model starts from (`normalisation_for_weights`): the reference's `(v/255 - 0.49965) /
0.08255` on BGR for a model trained from scratch, ImageNet's per-channel statistics on RGB for a
backbone initialised from ImageNet weights. A checkpoint records which one it was trained with.

Training clips, with the default augmentation style (in this order, same random draws for all
five frames):
1. a random crop of `crop_size`. With probability `object_crop_prob` the window is placed
   uniformly among the windows that contain the centre of one randomly chosen box of the current
   frame; otherwise uniformly over the frame. The bias exists because uniform 96-pixel crops of a
   1024-pixel frame with a handful of 5-pixel cars are mostly empty. Frames smaller than the crop
   are padded right/bottom with grey (127, which normalises to ~0). Boxes crossing the crop edge
   keep their full extent (see crop_clip).
2. horizontal and vertical flips, each with probability 0.5 (box x' = W - x, as the reference).
3. photometric distortion (brightness, contrast, saturation, hue, channel swap; SSD-style, as
   the reference) on pixel values in [0, 255], clipped back to [0, 255]. Deliberate deviation:
   the reference applies it after normalisation, where +-32 brightness means +-32 standard
   deviations (spec 4.5). It is also applied to crops without boxes (the reference skips images
   without boxes, which would make "distorted" a cue for "contains objects").
4. normalisation.

The 'reference' style keeps step 1 and then does what the reference does (spec 4.5):
normalisation first, then, only if the crop holds a box, the flips and the photometric distortion
on the normalised values, unclipped. It exists to reproduce the published training; the crop is
still ours (the reference trained on pre-cut 512-pixel tiles; `object_crop_prob: 0` gives
unbiased windows).

Validation clips: the whole frame (or a fixed centre crop), padded right/bottom to a multiple of
16 for the network, without augmentation.

Randomness is a pure function of (seed, epoch, index), so a sample is identical whichever worker
or process draws it and a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from micml.data.targets import MAX_OBJECTS, build_targets
from micml.data.unified import UnifiedDataset, Video, read_image

SEQ_LEN = 5
PIXEL_MEAN = 0.49965
PIXEL_STD = 0.08255
PAD_PIXEL = 127
SIZE_MULTIPLE = 16  # the network halves the resolution four times


def clip_frame_indices(frame: int, seq_len: int = SEQ_LEN) -> list[int]:
    """1-based frames of the clip whose current frame is `frame`: index k is max(frame - k, 1)."""
    return [max(frame - k, 1) for k in range(seq_len)]


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


def as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """(height, width) from an int or a pair; None stays None."""
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


# --------------------------------------------------------------------------- frame decoding


class FrameCache:
    """Small LRU of decoded frames, one per worker process (each worker holds its own copy).

    Neighbouring clips of a video share four of five frames and clamped clips repeat frame 1, so
    this keeps a clip to at most one decode per distinct frame.
    """

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._frames: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    def get(self, dataset: UnifiedDataset, video: str, frame: int) -> np.ndarray:
        key = (video, frame)
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        image = read_image(dataset.frame_path(video, frame))
        self._frames[key] = image
        if len(self._frames) > self.capacity:
            self._frames.popitem(last=False)
        return image


# --------------------------------------------------------------------------- geometry


def crop_window_for(rng: np.random.Generator, frame_hw: tuple[int, int], crop_hw: tuple[int, int],
                    boxes: np.ndarray, object_crop_prob: float) -> tuple[int, int]:
    """Top-left (y0, x0) of a crop window; see the module docstring for the object bias."""
    (height, width), (crop_h, crop_w) = frame_hw, crop_hw
    max_y0, max_x0 = max(height - crop_h, 0), max(width - crop_w, 0)
    if len(boxes) and rng.random() < object_crop_prob:
        x1, y1, x2, y2 = boxes[rng.integers(len(boxes))]
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        # windows [x0, x0 + crop_w) containing cx: x0 in [cx - crop_w + 1, cx]
        x0 = rng.integers(max(cx - crop_w + 1, 0), min(cx, max_x0) + 1)
        y0 = rng.integers(max(cy - crop_h + 1, 0), min(cy, max_y0) + 1)
        return int(y0), int(x0)
    return int(rng.integers(max_y0 + 1)), int(rng.integers(max_x0 + 1))


def crop_clip(frames: np.ndarray, boxes: np.ndarray, top_left: tuple[int, int],
              crop_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cut (T, H, W, 3) frames to the window, padding with grey past the frame; shift the boxes.

    Boxes with no area inside the window are removed. The others keep their full extent, relative
    to the window, even where they run past its edge: build_targets then treats the crop edge as
    the reference treats an image edge (full size, centre clipped onto the edge pixel), instead of
    training on the size and centre of whatever sliver the window happened to cut.
    """
    (y0, x0), (crop_h, crop_w) = top_left, crop_hw
    part = frames[:, y0:y0 + crop_h, x0:x0 + crop_w]
    out = np.full((frames.shape[0], crop_h, crop_w, frames.shape[3]), PAD_PIXEL, frames.dtype)
    out[:, :part.shape[1], :part.shape[2]] = part
    shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
    inside = (shifted[:, 2] > 0) & (shifted[:, 3] > 0) & (shifted[:, 0] < crop_w) & (shifted[:, 1] < crop_h)
    return out, shifted[inside]


def clip_to_image(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes cut to [0, width] x [0, height]: the visible part, as converters store frame-edge boxes.

    Validation scores detections against these, as it scores full frames against the converters'
    boxes.
    """
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, height)
    return clipped


def pad_to_multiple(frames: np.ndarray, multiple: int = SIZE_MULTIPLE) -> np.ndarray:
    """Pad (T, H, W, 3) right/bottom with grey so H and W are multiples of `multiple`."""
    height, width = frames.shape[1:3]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=PAD_PIXEL)


def flip_clip(frames: np.ndarray, boxes: np.ndarray, horizontal: bool, vertical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mirror (T, H, W, C) frames and their boxes: pixel column j -> W-1-j, box edge x -> W - x."""
    height, width = frames.shape[1:3]
    boxes = boxes.copy()
    if horizontal:
        frames = frames[:, :, ::-1]
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    if vertical:
        frames = frames[:, ::-1]
        boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
    return np.ascontiguousarray(frames), boxes


# --------------------------------------------------------------------------- photometric distortion


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


# --------------------------------------------------------------------------- the dataset


AUGMENT_STYLES = ("default", "reference")


@dataclass(frozen=True)
class Augmentation:
    hflip: float = 0.5        # probability of a horizontal flip
    vflip: float = 0.5        # probability of a vertical flip
    photometric: bool = True  # SSD-style colour distortion
    style: str = "default"    # 'default' or 'reference'; see the module docstring

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


class ClipDataset(Dataset):
    """Clips of one split of a unified dataset, with CenterNet targets, as tensors.

    `train=True`: every frame of every video is a sample, randomly cropped to `crop_size` and
    augmented. `train=False`: full frames (or a centre crop of `crop_size`) padded to a multiple
    of 16, no augmentation; `max_frames` keeps that many evenly spaced samples.
    Call `set_epoch` before each epoch so that augmentation changes from epoch to epoch.
    `normalisation` is the model's (`normalisation_for_weights`), the reference's by default.
    """

    def __init__(self, root: Path | str, split: str, *, train: bool, crop_size: int | Sequence[int] | None = None,
                 seed: int = 0, augment: Augmentation | dict | bool | None = None, object_crop_prob: float = 0.5,
                 max_objects: int = MAX_OBJECTS, max_frames: int | None = None, seq_len: int = SEQ_LEN,
                 cache_frames: int = 16, normalisation: Normalisation | None = None):
        self.dataset = UnifiedDataset(root)
        self.split = split
        self.train = train
        self.crop_hw = as_size(crop_size)
        if train and self.crop_hw is None:
            raise ValueError("ClipDataset(train=True) needs a crop_size")
        self.seed = seed
        self.epoch = 0
        self.augment = Augmentation.from_config(augment) if train else Augmentation.from_config(False)
        self.object_crop_prob = object_crop_prob
        self.max_objects = max_objects
        self.seq_len = seq_len
        self.normalisation = normalisation or REFERENCE_NORMALISATION
        self.cache = FrameCache(cache_frames)
        self.videos: list[Video] = self.dataset.videos(split)
        self.items = [(v, frame) for v, video in enumerate(self.videos)
                      for frame in range(1, video.record.n_frames + 1)]
        if max_frames is not None and len(self.items) > max_frames:
            keep = np.linspace(0, len(self.items) - 1, max_frames).round().astype(int)
            self.items = [self.items[i] for i in keep]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng_for(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict:
        video_index, frame = self.items[index]
        video = self.videos[video_index]
        frames = np.stack([self.cache.get(self.dataset, video.record.name, f)
                           for f in clip_frame_indices(frame, self.seq_len)])
        boxes = video.frame_boxes(frame).astype(np.float32)
        if self.train:
            frames, boxes = self._augment(self.rng_for(index), frames, boxes)
        else:
            frames, boxes = self._centre(frames, boxes)
        targets = build_targets(boxes, frames.shape[1], frames.shape[2], self.max_objects)
        clip = torch.from_numpy(frames.transpose(3, 0, 1, 2).copy())  # (3, T, H, W)
        return {
            "input": clip,
            "hm": torch.from_numpy(targets.hm),
            "wh": torch.from_numpy(targets.wh),
            "reg": torch.from_numpy(targets.reg),
            "ind": torch.from_numpy(targets.ind),
            "reg_mask": torch.from_numpy(targets.reg_mask),
            "n_dropped": targets.n_dropped,
            "boxes": clip_to_image(boxes, frames.shape[1], frames.shape[2]),
            "video": video.record.name,
            "frame": frame,
        }

    def _augment(self, rng: np.random.Generator, frames: np.ndarray, boxes: np.ndarray):
        """Crop and augment uint8 frames; returns normalised frames and their boxes."""
        top_left = crop_window_for(rng, frames.shape[1:3], self.crop_hw, boxes, self.object_crop_prob)
        frames, boxes = crop_clip(frames, boxes, top_left, self.crop_hw)
        if self.augment.style == "reference":
            return self._augment_as_reference(rng, frames, boxes)
        frames, boxes = flip_clip(frames, boxes, rng.random() < self.augment.hflip, rng.random() < self.augment.vflip)
        if self.augment.photometric:
            frames = photometric_distort(rng, frames)
        return self.normalisation(frames), boxes

    def _augment_as_reference(self, rng: np.random.Generator, frames: np.ndarray, boxes: np.ndarray):
        """Flips and colour distortion after normalisation, and only for crops that hold a box (spec 4.5).

        With an RGB normalisation the distortion sees RGB values: its steps treat the channels alike
        except the hue rotation, whose direction flips, and that is drawn symmetrically around 0."""
        frames = self.normalisation(frames)
        if not len(boxes):
            return frames, boxes
        frames, boxes = flip_clip(frames, boxes, rng.random() < self.augment.hflip, rng.random() < self.augment.vflip)
        if self.augment.photometric:
            frames = reference_photometric_distort(rng, frames)
        return frames, boxes

    def _centre(self, frames: np.ndarray, boxes: np.ndarray):
        """Normalised full frames (or their centre crop) padded for the network, and their boxes."""
        if self.crop_hw is not None:
            height, width = frames.shape[1:3]
            top_left = (max(height - self.crop_hw[0], 0) // 2, max(width - self.crop_hw[1], 0) // 2)
            frames, boxes = crop_clip(frames, boxes, top_left, self.crop_hw)
        return self.normalisation(pad_to_multiple(frames)), boxes


def collate_clips(samples: list[dict]) -> dict:
    """Stack tensors; keep per-sample boxes, video names and frame numbers as lists."""
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("input", "hm", "wh", "reg", "ind", "reg_mask")}
    batch["n_dropped"] = sum(s["n_dropped"] for s in samples)
    for key in ("boxes", "video", "frame"):
        batch[key] = [s[key] for s in samples]
    return batch
