"""Annotated videos that play in web browsers: H.264 (yuv420p) in mp4 through PyAV.

PyAV's wheels bundle FFmpeg with libx264 and need nothing else installed, also offline; OpenCV's
own writer offers only MPEG-4 part 2 (`mp4v`), which browsers do not play. That writer is the
fallback where PyAV is missing or cannot encode H.264, with a warning saying so.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

H264_CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"  # the chroma layout every browser's H.264 decoder takes
QUALITY_CRF = 20  # x264's constant-quality setting: small objects stay visible, files stay small


class H264Writer:
    """Write BGR frames of one size as H.264 mp4; `close()` finishes the file."""

    def __init__(self, path: Path, width: int, height: int, fps: float):
        import av

        self.container = av.open(str(path), mode="w", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream(H264_CODEC, rate=Fraction(fps).limit_denominator(1001))
        # yuv420p halves the chroma resolution: odd sides are padded by one pixel
        self.width, self.height = width + width % 2, height + height % 2
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = PIXEL_FORMAT
        self.stream.options = {"crf": str(QUALITY_CRF)}
        self._frame_type = av.VideoFrame

    def write(self, image: np.ndarray) -> None:
        if image.shape[:2] != (self.height, self.width):
            image = cv2.copyMakeBorder(image, 0, self.height - image.shape[0], 0, self.width - image.shape[1],
                                       cv2.BORDER_REPLICATE)
        frame = self._frame_type.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        self.container.mux(self.stream.encode(frame))

    def release(self) -> None:
        self.container.mux(self.stream.encode())  # flush the frames the encoder still holds
        self.container.close()


def open_video_writer(path: Path, shape: tuple[int, ...], fps: float):
    """A writer with `write(bgr)` and `release()`: H.264 where PyAV can, else OpenCV's mp4v."""
    height, width = shape[:2]
    try:
        return H264Writer(path, width, height, fps)
    except Exception as error:  # PyAV missing, or an FFmpeg build without libx264
        log.warning("%s: H.264 through PyAV unavailable (%s: %s); writing mp4v, which browsers do not play "
                    "(install av, see requirements.txt)", path, type(error).__name__, error)
    Path(path).unlink(missing_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: cannot write a {width}x{height} video (no H.264 through PyAV, no mp4v in this "
                      "OpenCV build); install av (see requirements.txt) or run without the annotated video")
    return writer
