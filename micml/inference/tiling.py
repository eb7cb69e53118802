"""Tiled large-size testing: run a detector over frames of any size, one tile batch at a time.

Layout, per axis (rows and columns independently):
- a frame no longer than the tile is one tile covering it, padded right/bottom to a multiple of
  16 with the clip sampler's grey (`micml.data.clips.PAD_PIXEL`, ~0 after the reference's normalisation) and
  cropped back from the heads before decoding; with `tile=None` every frame is one such tile,
  which is exactly the validation input of `micml.data.clips` (the reference's 1024 setting);
- a longer frame is cut into tiles of exactly `tile` pixels (or, as `TiledDetector` does by
  default, of the `fitted_tile` side: the fewest network pixels, at most tile + overlap) that
  start every side - overlap pixels; the last tile is shifted inward to end on the frame edge
  instead of being padded, so the network never sees padding inside a large frame and every
  tile has the same shape (batchable).

Grey rather than reflect padding: reflection would copy objects into the padding (mirrored,
moving, and able to suppress or create peaks near the edge), while grey is what the model
already saw around validation frames and what zero padding of the first convolution looks like.

Merge. Each tile owns a core: the tile minus half the overlap on its interior sides (the
boundary between two neighbours is the middle of their actual overlap; outer sides reach the
frame edge). Cores partition the frame, so a peak pixel is decoded by exactly one tile: the one
whose core holds it. With half the overlap at least the model's receptive radius plus one
(for the 3x3 peak test), a core pixel sees the same input as in the whole frame, so tiled
detections equal whole-frame ones. The frame's top-K is taken over the tiles' top-K of their
cores (the union holds the frame's top-K), then optional soft-NMS.

Memory: only `batch_size` tiles (input, heads) exist at once and each frame keeps a running
top-K, so apart from the uint8 frames of the clip nothing grows with the frame size.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import product
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from micml.allocator import keep_freed_memory
from micml.data.clips import PAD_PIXEL, REFERENCE_NORMALISATION, SIZE_MULTIPLE, Normalisation
from micml.inference.decode import REFERENCE_TOP_K, decode_batch, real_rows
from micml.inference.nms import soft_nms_gaussian
from micml.precision import autocast, check_amp, compiled, tune_cudnn

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32


def round_up(length: int, multiple: int = SIZE_MULTIPLE) -> int:
    return -(-length // multiple) * multiple


@dataclass(frozen=True)
class AxisSpan:
    """One tile along one axis: frame pixels [start, start + extent) go into the network;
    peaks at frame pixels [core_start, core_stop) belong to this tile."""

    start: int
    extent: int
    core_start: int
    core_stop: int


@dataclass(frozen=True)
class AxisTiling:
    input_size: int  # network input along this axis: extent, or extent padded to a multiple of 16
    spans: tuple[AxisSpan, ...]

    @property
    def extent(self) -> int:
        return self.spans[0].extent


def check_tiling(tile: int | None, overlap: int) -> None:
    if tile is not None and (not isinstance(tile, int) or tile < SIZE_MULTIPLE or tile % SIZE_MULTIPLE):
        raise ValueError(f"tile={tile!r}: must be a positive multiple of {SIZE_MULTIPLE} pixels "
                         f"(the network halves the resolution four times), e.g. 256, 512 or 1024")
    if not isinstance(overlap, int) or overlap < 0 or (tile is not None and overlap >= tile):
        raise ValueError(f"overlap={overlap!r}: must be an integer in [0, tile) (tile={tile}); "
                         "use at least twice the model's receptive radius, 32 by default")


def axis_tiling(length: int, tile: int | None, overlap: int) -> AxisTiling:
    """Tiles along one axis of `length` pixels; see the module docstring."""
    if length < 1:
        raise ValueError(f"cannot tile an axis of {length} pixels")
    if tile is None or length <= tile:
        return AxisTiling(round_up(length), (AxisSpan(0, length, 0, length),))
    step = tile - overlap
    count = -(-(length - tile) // step) + 1
    starts = [min(i * step, length - tile) for i in range(count)]
    # Neighbours i and i+1 overlap on [starts[i+1], starts[i] + tile); split it in the middle.
    bounds = [0] + [(after + before + tile) // 2 for before, after in zip(starts, starts[1:])] + [length]
    return AxisTiling(tile, tuple(AxisSpan(start, tile, bounds[i], bounds[i + 1]) for i, start in enumerate(starts)))


@dataclass(frozen=True)
class Tile:
    row: AxisSpan
    col: AxisSpan

    @property
    def origin(self) -> tuple[int, int]:
        return self.row.start, self.col.start

    @property
    def core(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the core in frame pixels."""
        return self.row.core_start, self.row.core_stop, self.col.core_start, self.col.core_stop


@dataclass(frozen=True)
class TileLayout:
    height: int
    width: int
    rows: AxisTiling
    cols: AxisTiling

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.rows.input_size, self.cols.input_size

    @property
    def valid_shape(self) -> tuple[int, int]:
        """Frame pixels in every tile; the rest of the input is padding."""
        return self.rows.extent, self.cols.extent

    @property
    def tiles(self) -> list[Tile]:
        return [Tile(row, col) for row, col in product(self.rows.spans, self.cols.spans)]


def fitted_tile(length: int, tile: int, overlap: int) -> int:
    """The tile side, a multiple of 16 no larger than tile + overlap, that covers an axis of
    `length` pixels with the fewest network pixels (count x side); on a tie the smaller side.

    Exact tiles pay for the count rounded up: 1024 pixels in tiles of 512 overlapping by 32
    need three (1536 pixels, 2.25x the frame's area in 2-D), while two of 528 cover them
    (1056 pixels, 1.06x). Growing a tile by at most the overlap keeps the memory bound.
    """
    largest = (tile + overlap) // SIZE_MULTIPLE * SIZE_MULTIPLE
    best_cost, best_side = None, tile
    count = 1
    while True:
        side = round_up(length if count == 1 else -(-(length + (count - 1) * overlap) // count))
        if side <= largest and (best_cost is None or count * side <= best_cost):
            best_cost, best_side = count * side, side
        if side <= tile:  # more tiles than the exact tiling needs only shrink them further
            return best_side
        count += 1


def tile_layout(height: int, width: int, tile: int | None = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                fit: bool = False) -> TileLayout:
    """Tiles of exactly `tile` pixels; with `fit`, of `fitted_tile` pixels per axis."""
    check_tiling(tile, overlap)
    rows, cols = (tile, tile) if tile is None or not fit else (
        fitted_tile(height, tile, overlap), fitted_tile(width, tile, overlap))
    return TileLayout(height, width, axis_tiling(height, rows, overlap), axis_tiling(width, cols, overlap))


@dataclass(eq=False)
class _FrameInProgress:
    clip: Sequence[np.ndarray] | None  # released once every tile has been cut
    layout: TileLayout
    tiles_left: int
    candidates: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 5)))


class TiledDetector:
    """Runs `model` (the `micml.models.build` contract) over clips of any size.

    A clip is a sequence of T uint8 BGR frames (H, W, 3), index 0 the current frame, as cv2
    decodes them. `tile=None` feeds whole frames. Tiles are batched, also across consecutive
    frames of the same size, `batch_size` at a time. `amp` ("off", "bf16", "fp16") runs the
    network under autocast in that dtype (meant for GPUs; heads are decoded in float32), so
    scores and boxes then differ from float32 by that dtype's rounding. `normalisation` is the
    one the model was trained with: by default `model.normalisation` (set by
    `micml.inference.load_detector` from the checkpoint), else the reference's. `compile` runs the
    network through `torch.compile` (each new tile shape compiles once; float rounding differs).
    `fit_tiles` (default) sizes the tiles per axis by `fitted_tile` (at most tile + overlap
    pixels) instead of exactly `tile`: fewer network pixels for the same frame.
    """

    def __init__(self, model: torch.nn.Module, *, tile: int | None = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                 batch_size: int = 1, top_k: int = REFERENCE_TOP_K, soft_nms: bool = True,
                 device: torch.device | str | None = None, amp: str = "off",
                 normalisation: Normalisation | None = None, compile: bool = False, fit_tiles: bool = True):
        check_tiling(tile, overlap)
        check_amp(amp)
        if batch_size < 1 or top_k < 1:
            raise ValueError(f"batch_size ({batch_size}) and top_k ({top_k}) must be >= 1")
        parameter = next(model.parameters(), None)
        self.device = torch.device(device) if device is not None else (
            parameter.device if parameter is not None else torch.device("cpu"))
        self.dtype = parameter.dtype if parameter is not None else torch.float32
        if self.device.type == "cpu":
            keep_freed_memory()  # large frames: reuse freed activations instead of fresh pages
        self.model = model.to(self.device).eval()
        self.network = compiled(self.model, compile)  # what runs; self.model stays the plain module
        tune_cudnn(self.device)
        self.tile, self.overlap, self.batch_size, self.fit_tiles = tile, overlap, batch_size, fit_tiles
        self.top_k, self.soft_nms = top_k, soft_nms
        self.amp = amp
        self.normalisation = normalisation or getattr(model, "normalisation", REFERENCE_NORMALISATION)
        # The grey padding's normalised value per channel, computed by the clip sampler's own
        # function so that a padded tile is bit-identical to its padded validation input.
        grey = self.normalisation(np.full((1, 3), PAD_PIXEL, np.uint8))[0]
        self.pad_values = torch.from_numpy(grey).to(self.device).view(1, 3, 1, 1, 1)

    def layout(self, height: int, width: int) -> TileLayout:
        return tile_layout(height, width, self.tile, self.overlap, fit=self.fit_tiles)

    def detect_clip(self, clip: Sequence[np.ndarray]) -> np.ndarray:
        """N x 5 float32 [x1, y1, x2, y2, score] for the current frame of one clip."""
        return next(self.detect_clips([clip]))

    def detect_clips(self, clips: Iterable[Sequence[np.ndarray]]) -> Iterator[np.ndarray]:
        """Detections of each clip's current frame, in order, as soon as its last tile has run."""
        pending: deque[_FrameInProgress] = deque()
        batch: list[tuple[_FrameInProgress, Tile]] = []
        for clip in clips:
            frame = self._start_frame(clip)
            pending.append(frame)
            for tile in frame.layout.tiles:
                if batch and not _same_shapes(batch[0][0].layout, frame.layout):
                    self._run(batch)
                    batch = []
                batch.append((frame, tile))
                if len(batch) == self.batch_size:
                    self._run(batch)
                    batch = []
                yield from self._finished(pending)
        if batch:
            self._run(batch)
        yield from self._finished(pending)

    def _start_frame(self, clip: Sequence[np.ndarray]) -> _FrameInProgress:
        first = np.asarray(clip[0])
        if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
            raise ValueError(f"a clip holds uint8 BGR frames of shape (H, W, 3); found {first.dtype} {first.shape}")
        if any(np.shape(frame) != first.shape for frame in clip):
            raise ValueError(f"all frames of a clip must have one shape; found {[np.shape(f) for f in clip]}")
        layout = self.layout(*first.shape[:2])
        return _FrameInProgress(clip, layout, len(layout.tiles))

    def _finished(self, pending: deque[_FrameInProgress]) -> Iterator[np.ndarray]:
        while pending and pending[0].tiles_left == 0:
            yield self._final_detections(pending.popleft().candidates)

    def _final_detections(self, candidates: torch.Tensor) -> np.ndarray:
        order = torch.argsort(candidates[:, 4], descending=True, stable=True)
        detections = candidates[order].numpy().astype(np.float32)
        return soft_nms_gaussian(detections) if self.soft_nms else detections

    def _run(self, batch: list[tuple[_FrameInProgress, Tile]]) -> None:
        """Forward one batch of same-shaped tiles and merge each tile's core peaks into its frame."""
        layout = batch[0][0].layout
        valid_h, valid_w = layout.valid_shape
        inputs = self._tile_inputs(batch)
        with torch.inference_mode(), autocast(self.device, self.amp):
            outputs = self.network(inputs)
        heads = {name: outputs[name][..., :valid_h, :valid_w].float() for name in ("hm", "wh", "reg")}
        detections = decode_batch(heads, self.top_k, allowed=self._core_masks(batch, valid_h, valid_w))
        shifts = torch.tensor([[x, y, x, y, 0] for y, x in (tile.origin for _, tile in batch)],
                              dtype=detections.dtype, device=detections.device)
        detections = (detections + shifts[:, None, :]).cpu()
        for (frame, _), tile_detections in zip(batch, detections):
            merged = torch.cat([frame.candidates, real_rows(tile_detections)])
            if len(merged) > self.top_k:
                merged = merged[merged[:, 4].topk(self.top_k).indices]
            frame.candidates = merged
            frame.tiles_left -= 1
            if frame.tiles_left == 0:
                frame.clip = None

    def _tile_inputs(self, batch: list[tuple[_FrameInProgress, Tile]]) -> torch.Tensor:
        """(B, 3, T, H_in, W_in) normalised network input: the tiles' pixels, grey padding."""
        valid_h, valid_w = batch[0][0].layout.valid_shape
        input_h, input_w = batch[0][0].layout.input_shape
        pixels = np.stack([
            np.stack([np.asarray(f)[tile.row.start:tile.row.start + valid_h, tile.col.start:tile.col.start + valid_w]
                      for f in frame.clip])
            for frame, tile in batch
        ])  # (B, T, h, w, 3) uint8: moved to the device before conversion, 4x less to copy
        clip = torch.from_numpy(pixels).to(self.device).permute(0, 4, 1, 2, 3).float()
        clip = self.normalisation.on_tensor(clip, channel_dim=1)
        if (input_h, input_w) != (valid_h, valid_w):
            batch_size, _, length = clip.shape[:3]
            padded = self.pad_values.repeat(batch_size, 1, length, input_h, input_w)
            padded[..., :valid_h, :valid_w] = clip
            clip = padded
        return clip.to(self.dtype)

    def _core_masks(self, batch: list[tuple[_FrameInProgress, Tile]], height: int, width: int) -> torch.Tensor:
        """(B, 1, h, w) True on each tile's core, in tile pixels."""
        cores = torch.tensor([[y0 - tile.row.start, y1 - tile.row.start, x0 - tile.col.start, x1 - tile.col.start]
                              for _, tile in batch for y0, y1, x0, x1 in [tile.core]], device=self.device)
        ys = torch.arange(height, device=self.device).view(1, -1, 1)
        xs = torch.arange(width, device=self.device).view(1, 1, -1)
        y0, y1, x0, x1 = (cores[:, i].view(-1, 1, 1) for i in range(4))
        return ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)).unsqueeze(1)


def _same_shapes(a: TileLayout, b: TileLayout) -> bool:
    return a.input_shape == b.input_shape and a.valid_shape == b.valid_shape
