"""Run a trained detector over one split of a unified dataset and export its detections.

```
<out_dir>/mat/<video>/<frame:06d>.mat    one per frame, also for frames without detections
<out_dir>/detections.json                COCO results, image ids of annotations/<split>.json
<out_dir>/detections.csv                 video, frame, x1, y1, x2, y2, score
<out_dir>/predict.json                   settings, checkpoint, versions, frames/s
```
The folder is built as ``<out_dir>.partial`` and renamed into place when complete, so a killed run
never leaves a folder that the evaluation would accept. Frames are decoded once each and streamed
through a rolling window of the last five, so memory does not grow with the video length.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

import micml
from micml.data.clips import SEQ_LEN, Normalisation
from micml.data.unified import PARTIAL_SUFFIX, RETIRED_SUFFIX, UnifiedDataset, read_image, replace_folder
from micml.checkpoint import CheckpointError, read_checkpoint, rebuild_model, weights_digest
from micml.detections import PREDICT_SUMMARY, DetectionWriter, coco_image_index
from micml.inference.decode import REFERENCE_TOP_K
from micml.inference.tiling import DEFAULT_OVERLAP, TiledDetector
from micml.models import optimize_for_inference
from micml.paths import check_output_apart

log = logging.getLogger(__name__)

SUMMARY_FILE = PREDICT_SUMMARY


# --------------------------------------------------------------------------- checkpoints


def load_detector(checkpoint_path: str | os.PathLike, expected_variant: str | None = None,
                  device: str | torch.device = "cpu", *, optimize: bool = True) -> torch.nn.Module:
    """Rebuild the model a micml checkpoint was trained as, load its weights, eval mode.

    With `optimize` (the default) the result is `micml.models.optimize_for_inference`'s copy:
    BatchNorm folded, channels-last, the fast deformable conv on CPU; same outputs up to float
    rounding, inference only. `optimize=False` gives the plain model (e.g. to fine-tune it).

    Raises CheckpointError naming the file when it is missing, unreadable, not a micml
    checkpoint, of another variant than `expected_variant`, or when its weights do not fit.
    """
    path = Path(checkpoint_path)
    checkpoint = read_checkpoint(path)
    model = rebuild_model(checkpoint, path, expected_variant).to(device).eval()
    model = optimize_for_inference(model) if optimize else model
    # What predict.json and the metrics record, so a score names the exact weights behind it.
    model.weights_sha256 = checkpoint.get("weights_sha256") or weights_digest(checkpoint["state_dict"])
    model.training_budget = dict(checkpoint.get("training") or {})  # seed, steps, seconds, CPU (micml train)
    model.normalisation = checkpoint_normalisation(checkpoint, path)  # TiledDetector feeds the model with it
    return model


def checkpoint_normalisation(checkpoint: Mapping, path: Path) -> Normalisation:
    """The input normalisation the checkpoint's model was trained with (the reference's for a
    checkpoint written before it was recorded: every such model was trained with it)."""
    try:
        return Normalisation.from_dict(checkpoint.get("normalisation"))
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}; the file was modified or comes from another tool: "
                              "re-train or re-download it") from None


# --------------------------------------------------------------------------- clips


def rolling_clips(frames: Iterable[np.ndarray], length: int = SEQ_LEN) -> Iterator[tuple[np.ndarray, ...]]:
    """Clips (t, t-1, ..., t-length+1), earlier frames clamped to the first, from a stream of
    frames decoded once each (`micml.data.clips.clip_frame_indices` order)."""
    window: deque[np.ndarray] = deque(maxlen=length)
    for frame in frames:
        window.append(frame)
        newest_first = list(reversed(window))
        yield tuple(newest_first + [window[0]] * (length - len(window)))


# --------------------------------------------------------------------------- predict a split


@dataclass
class PredictionSummary:
    out_dir: str
    checkpoint: str
    weights_sha256: str
    variant: str
    split: str
    tile: int | None
    overlap: int
    fit_tiles: bool  # tiles sized per axis by micml.inference.tiling.fitted_tile (at most tile + overlap)
    batch_size: int
    top_k: int
    soft_nms: bool
    device: str
    amp: str
    compile: bool
    videos: int
    frames: int
    detections: int
    seconds: float
    frames_per_second: float
    training: dict  # the checkpoint's training budget and machine; {} for a checkpoint without one
    normalisation: dict  # the input normalisation the checkpoint's model was trained with


def predict_split(checkpoint: str | os.PathLike, dataset_root: str | os.PathLike, split: str,
                  out_dir: str | os.PathLike, *, expected_variant: str | None = None, tile: int | None = None,
                  overlap: int = DEFAULT_OVERLAP, batch_size: int = 1, top_k: int = REFERENCE_TOP_K,
                  soft_nms: bool = True, device: str | torch.device = "cpu", amp: str = "off",
                  progress: bool = True, write_mat: bool = True, compile: bool = False) -> PredictionSummary:
    """Detect on every frame of `split` and write `out_dir` (see the module docstring).

    `write_mat=False` leaves out the .mat tree (the workflow's `export_mat` rule writes it from
    detections.csv, so that a GPU job does not spend its time writing thousands of small files).

    `tile=None` runs whole frames (the reference's setting); otherwise tiles of `tile` pixels with
    `overlap` (see `micml.inference.tiling`). `compile` runs the network through torch.compile.
    """
    # replace_folder swaps `out_dir` whole: an input there, inside or around it would be deleted
    check_output_apart(out_dir, checkpoint, dataset_root, what="prediction folder",
                       scratch_suffixes=(PARTIAL_SUFFIX, RETIRED_SUFFIX))
    dataset = UnifiedDataset(dataset_root)
    videos = dataset.videos(split)
    image_ids = coco_image_index(dataset.annotation_file(split))
    model = load_detector(checkpoint, expected_variant, device)
    detector = TiledDetector(model, tile=tile, overlap=overlap, batch_size=batch_size, top_k=top_k,
                             soft_nms=soft_nms, device=device, amp=amp, compile=compile)
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)
    if work.exists():
        shutil.rmtree(work)  # left by a killed run: never trusted
    total_frames = sum(video.record.n_frames for video in videos)
    started = time.perf_counter()
    with DetectionWriter(work, image_ids, write_mat=write_mat) as writer, \
            tqdm(total=total_frames, unit="frame", desc=f"detect {split}", disable=not progress) as bar:
        for video in videos:
            name = video.record.name
            frames = (read_image(dataset.frame_path(name, f)) for f in range(1, video.record.n_frames + 1))
            for frame, detections in enumerate(detector.detect_clips(rolling_clips(frames)), start=1):
                writer.add(name, frame, detections)
                bar.update()
    seconds = time.perf_counter() - started
    summary = PredictionSummary(
        out_dir=str(out_dir), checkpoint=str(checkpoint), weights_sha256=model.weights_sha256,
        variant=getattr(model, "variant", "?"), split=split,
        tile=tile, overlap=overlap, fit_tiles=detector.fit_tiles, batch_size=batch_size, top_k=top_k, soft_nms=soft_nms, device=str(device), amp=amp,
        compile=compile,
        videos=len(videos), frames=writer.frames, detections=writer.rows, seconds=round(seconds, 3),
        frames_per_second=round(writer.frames / seconds, 3) if seconds > 0 else float("inf"),
        training=model.training_budget, normalisation=model.normalisation.as_dict())
    log.info("%s/%s: %d frames in %.1f s, %.2f frames/s (tile %s, device %s)", Path(dataset_root).name, split,
             summary.frames, seconds, summary.frames_per_second, tile or "whole frame", device)
    _write_summary(work / SUMMARY_FILE, summary)
    replace_folder(work, out_dir)
    return summary


def _write_summary(path: Path, summary: PredictionSummary) -> None:
    versions = {micml.__name__: micml.__version__, "torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    path.write_text(json.dumps({**asdict(summary), "versions": versions}, indent=2) + "\n")

