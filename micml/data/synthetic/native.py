"""Write synthetic videos into the native on-disk formats of the real datasets.

The converters read real RsCarData, VISO and DroneCrowd trees; rendering the synthetic videos
into exactly those layouts (reference/DATASET_FORMATS.md) lets the same converters run on the
embedded default, so the synthetic path exercises the real code. `synthesize` is the entry
point the CLI and the workflow call; `native_trees` writes the three annotated trees, this
module the plain video file.

Every tree is written into `<root>.partial` and moved into place when complete, so an
interrupted run never leaves a half-written tree where a finished one is expected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2

import micml
from micml.catalog import FORMATS, SPLITS
from micml.data.synthetic.native_trees import TREE_WRITERS, video_record
from micml.data.synthetic.spec import SyntheticSpec
from micml.data.synthetic.videos import SyntheticVideo, split_videos
from micml.io import PARTIAL_SUFFIX, atomic_folder

NATIVE_FORMATS = FORMATS
MANIFEST_NAME = "synthetic_manifest.json"
VIDEO_FILE_NAME = "video.mp4"  # what `micml synth video OUT` writes inside OUT


def synthesize(native_format: str, root: Path | str, spec: SyntheticSpec, *, overwrite: bool = False) -> dict:
    """Generate the dataset of `spec` and write it at `root` in `native_format`.

    rscar | viso | dronecrowd: the whole dataset (train, val, test) as that native tree.
    video: the first test video as `<root>/video.mp4`, without annotations.
    Returns the manifest, also written as `<root>/synthetic_manifest.json`.
    """
    if native_format not in NATIVE_FORMATS:
        raise ValueError(f"native format {native_format!r} is not one of {', '.join(NATIVE_FORMATS)}")
    videos = {split: split_videos(spec, split) for split in SPLITS}
    with atomic_folder(Path(root), overwrite) as partial:
        if native_format == "video":
            written = _write_video_folder(partial, videos["test"])
        else:
            written = TREE_WRITERS[native_format](partial, videos)
        manifest = _manifest(native_format, spec, written)
        (partial / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def native_input(native_format: str, root: Path | str) -> Path:
    """What the converter of `native_format` takes for a tree written at `root`."""
    if native_format not in NATIVE_FORMATS:
        raise ValueError(f"native format {native_format!r} is not one of {', '.join(NATIVE_FORMATS)}")
    return Path(root) / VIDEO_FILE_NAME if native_format == "video" else Path(root)


def _manifest(native_format: str, spec: SyntheticSpec, written: dict) -> dict:
    splits = written["splits"]
    totals = {split: {"videos": len(records), "frames": sum(r["n_frames"] for r in records),
                      "labelled_boxes": sum(r["labelled_boxes"] for r in records)}
              for split, records in splits.items()}
    return {
        "format": native_format,
        "generator": "micml.data.synthetic",
        "micml_version": micml.__version__,
        "input": VIDEO_FILE_NAME if native_format == "video" else ".",
        "annotations_written": native_format != "video",
        "spec": spec.to_dict(),
        "splits": splits,
        "totals": totals,
        "labelled_boxes": sum(t["labelled_boxes"] for t in totals.values()),
        "converter_options": written["converter_options"],
    }


# ---------------------------------------------------------------------------------------------
# A plain video file (detection only)
# ---------------------------------------------------------------------------------------------

def write_video_file(path: Path | str, video: SyntheticVideo, *, overwrite: bool = False) -> Path:
    """`video` as an MPEG-4 Part 2 ('mp4v') file at `path`, without annotations."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    partial = path.with_name(f"{path.stem}{PARTIAL_SUFFIX}{path.suffix}")  # the suffix picks the container
    try:
        _write_mp4(partial, video)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _write_mp4(path: Path, video: SyntheticVideo) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(video.fps),
                             (video.width, video.height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open an 'mp4v' video writer here (no FFmpeg backend?)")
    try:
        for frame in video.frames:
            writer.write(frame)
    finally:
        writer.release()


def _write_video_folder(root: Path, test_videos: Sequence[SyntheticVideo]) -> dict:
    if len(test_videos) == 0:
        raise ValueError("the `video` format writes the first test video, but the spec has n_test = 0")
    video = test_videos[0]
    _write_mp4(root / VIDEO_FILE_NAME, video)
    return {"splits": {"test": [video_record(Path(VIDEO_FILE_NAME).stem, video)]}, "converter_options": {}}
