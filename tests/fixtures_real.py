"""Native trees built around the REAL annotation files of the public datasets.

The real gt.txt / .mat files are used unchanged; the frames they refer to are generated: one
small constant-colour JPEG of the right size per tree, hard-linked (copied where links are
not possible) to every frame name, so the converters see every referenced frame while the
tree costs one encode.

The real files are kept in the repository, in tests/fixtures/real (source and licence in its
README), so a fresh clone runs these tests with nothing else. $MICML_REAL_FIXTURES, when set,
names another copy with the same layout; if that folder lacks the files the tests fail rather
than fall back, so an override never silently tests other files than the ones it names.
"""

from __future__ import annotations

import configparser
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import scipy.io

IN_REPOSITORY = Path(__file__).resolve().parent / "fixtures" / "real"


def real_fixtures() -> Path:
    """Folder holding viso_mot_gt/ and dronecrowd_annotations/: $MICML_REAL_FIXTURES or the repository's copy."""
    override = os.environ.get("MICML_REAL_FIXTURES")
    folder = Path(override) if override else IN_REPOSITORY
    if not (folder / "viso_mot_gt").is_dir() or not (folder / "dronecrowd_annotations").is_dir():
        source = "$MICML_REAL_FIXTURES" if override else "the repository copy"
        raise FileNotFoundError(f"{folder} ({source}): expected viso_mot_gt/ and dronecrowd_annotations/ in it; "
                                "unset MICML_REAL_FIXTURES to use tests/fixtures/real, or restore that folder "
                                "from git")
    return folder


def constant_jpeg(path: Path, width: int, height: int, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50]):
        raise OSError(f"could not write {path}")
    return path


def link_frames(template: Path, targets: list[Path]) -> None:
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(template, target)
        except OSError:
            shutil.copyfile(template, target)


def viso_seqinfo(video: str) -> dict:
    parser = configparser.ConfigParser()
    parser.read(real_fixtures() / "viso_mot_gt" / video / "seqinfo.ini")
    seq = parser["Sequence"]
    return {"n_frames": int(seq["seqLength"]), "width": int(seq["imWidth"]), "height": int(seq["imHeight"]),
            "fps": float(seq["frameRate"])}


def build_viso_tree(root: Path, videos=("002", "003"), *, frame_folder: str = "img") -> Path:
    """`root/mot/car/<NNN>/{img/<F>.jpg, gt/gt.txt}` with the real gt.txt of each video."""
    for video in videos:
        info = viso_seqinfo(video)
        folder = root / "mot" / "car" / video
        (folder / "gt").mkdir(parents=True)
        shutil.copyfile(real_fixtures() / "viso_mot_gt" / video / "gt.txt", folder / "gt" / "gt.txt")
        template = constant_jpeg(root / "template" / f"{video}.jpg", info["width"], info["height"])
        link_frames(template, [folder / frame_folder / f"{f:06d}.jpg" for f in range(1, info["n_frames"] + 1)])
    return root


def load_real_anno(sequence: str) -> np.ndarray:
    path = real_fixtures() / "dronecrowd_annotations" / f"{sequence}.mat"
    return scipy.io.loadmat(str(path))["anno"].astype(np.int64)


def build_dronecrowd_tree(root: Path, placement: dict[str, str], *, width: int = 1920, height: int = 1080) -> Path:
    """`root/{annotations/<SSSSS>.mat, <folder>/images/img<SSS><FFF>.jpg}` around the real .mat
    files; `placement` maps a sequence id to its images folder (train_data, val_data, test_data).
    Each sequence gets images 1..(last anno frame + 1), as in the release (300)."""
    template = constant_jpeg(root / "template.jpg", width, height)
    (root / "annotations").mkdir(parents=True)
    for sequence, folder in placement.items():
        shutil.copyfile(real_fixtures() / "dronecrowd_annotations" / f"{sequence}.mat",
                        root / "annotations" / f"{sequence}.mat")
        n_frames = int(load_real_anno(sequence)[:, 0].max()) + 1
        seq = int(sequence)
        link_frames(template, [root / folder / "images" / f"img{seq:03d}{f:03d}.jpg" for f in range(1, n_frames + 1)])
    return root
