"""Inference: tiled large-size testing, CenterNet decoding, soft-NMS, export, and `detect`.

* `TiledDetector(model, tile=..., overlap=...)`: detections of clips of any frame size.
* `decode(outputs, k)`, `soft_nms_gaussian(detections)`: the reference's post-processing.
* `load_detector(checkpoint, expected_variant)`, `predict_split(...)`: a checkpoint over a
  unified dataset split -> .mat tree, COCO results json, CSV.
* `detect(video_or_folder, checkpoint, out_dir)`: the same on a user's own video.
"""

from micml.detections import DetectionWriter
from micml.inference.decode import REFERENCE_TOP_K, decode, decode_batch
from micml.inference.detect import InputError, detect, open_frames
from micml.inference.nms import iou_plus_one, soft_nms_gaussian
from micml.inference.predict import CheckpointError, load_detector, predict_split, rolling_clips
from micml.inference.tiling import TiledDetector, TileLayout, tile_layout

__all__ = [
    "REFERENCE_TOP_K",
    "CheckpointError",
    "DetectionWriter",
    "InputError",
    "TileLayout",
    "TiledDetector",
    "decode",
    "decode_batch",
    "detect",
    "iou_plus_one",
    "load_detector",
    "open_frames",
    "predict_split",
    "rolling_clips",
    "soft_nms_gaussian",
    "tile_layout",
]
