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

Modules: `normalisation` (pixel statistics), `geometry` (frame indices, crop, flip, padding),
`photometric` (colour distortion), `augmentation` (the settings and both styles), `frames`
(decoded-frame cache), `dataset` (ClipDataset), `collate` (batches). Importers use the names
re-exported here.
"""

from micml.data.clips.augmentation import AUGMENT_STYLES, Augmentation
from micml.data.clips.collate import collate_clips
from micml.data.clips.dataset import ClipDataset
from micml.data.clips.frames import FrameCache
from micml.data.clips.geometry import (PAD_PIXEL, SEQ_LEN, SIZE_MULTIPLE, as_size, clip_frame_indices, clip_to_image,
                                       crop_clip, crop_window_for, flip_clip, pad_to_multiple)
from micml.data.clips.normalisation import (IMAGENET_NORMALISATION, PIXEL_MEAN, PIXEL_STD, REFERENCE_NORMALISATION,
                                            Normalisation, normalisation_for_weights, normalise)
from micml.data.clips.photometric import PhotometricDraw, photometric_distort, reference_photometric_distort

__all__ = [
    "AUGMENT_STYLES", "Augmentation", "ClipDataset", "FrameCache", "IMAGENET_NORMALISATION", "Normalisation",
    "PAD_PIXEL", "PIXEL_MEAN", "PIXEL_STD", "PhotometricDraw", "REFERENCE_NORMALISATION", "SEQ_LEN",
    "SIZE_MULTIPLE", "as_size", "clip_frame_indices", "clip_to_image", "collate_clips", "crop_clip",
    "crop_window_for", "flip_clip", "normalisation_for_weights", "normalise", "pad_to_multiple",
    "photometric_distort", "reference_photometric_distort",
]
