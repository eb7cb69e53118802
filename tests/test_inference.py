"""micml.inference: decoding, soft-NMS, tiling, predict/export and detect.

Most tests use `LocalStandIn`, a two-convolution model with the `micml.models.build` contract
whose output at a pixel depends only on the input within 2 pixels, so tiled and whole-frame
inference can be compared exactly. One test runs a real (small) registry model end to end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import micml.models
from micml.data.clips import SEQ_LEN, clip_frame_indices, normalise, pad_to_multiple
from micml.data.unified import DatasetError, UnifiedDataset, UnifiedWriter, read_image
from micml.checkpoint import CheckpointError, weights_digest
from micml.detections import DetectionFileError, coco_image_index, export_mat_tree, read_frame_mat, write_coco_results
from micml.inference import (
    InputError,
    TiledDetector,
    decode,
    detect,
    iou_plus_one,
    load_detector,
    predict_split,
    rolling_clips,
    soft_nms_gaussian,
    tile_layout,
)
from micml.inference.decode import NOT_A_PEAK
from micml.inference.detect import draw_detections
from micml.inference.tiling import axis_tiling, fitted_tile, round_up

RECEPTIVE_RADIUS = 2  # two 3x3 convolutions


class LocalStandIn(nn.Module):
    """The detector contract ((B,3,5,H,W) -> hm/wh/reg at stride 1) with a receptive radius of 2."""

    def __init__(self, variant: str = "dsfnet", hidden: int = 6, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.body = nn.Sequential(nn.Conv2d(3 * SEQ_LEN, hidden, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(hidden, 5, 3, padding=1))
        self.variant = variant
        self.config = {"variant": variant, "hidden": hidden}
        self.input_shapes: list[tuple[int, ...]] = []
        self.last_input: torch.Tensor | None = None

    def forward(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, channels, frames, height, width = clip.shape
        assert (channels, frames) == (3, SEQ_LEN) and height % 16 == 0 and width % 16 == 0, clip.shape
        self.input_shapes.append(tuple(clip.shape))
        self.last_input = clip.clone()
        y = self.body(clip.reshape(batch, channels * frames, height, width))
        return {"hm": y[:, :1], "wh": 2 + 6 * y[:, 1:3].sigmoid(), "reg": y[:, 3:5].sigmoid()}


def standin_build(name: str, **options) -> LocalStandIn:
    if name not in micml.models.VARIANTS:
        raise ValueError(f"unknown variant {name!r}")
    return LocalStandIn(name, **options)


@pytest.fixture
def standin_registry(monkeypatch):
    """Make the registry's `build` (what checkpoints of variants are rebuilt with) build stand-ins."""
    monkeypatch.setattr(micml.models.registry, "build", standin_build)


def save_checkpoint(path: Path, model: nn.Module, options: dict, layout: str = "engine") -> Path:
    if layout == "engine":  # micml.checkpoint's layout
        checkpoint = {"format": "micml.checkpoint/1", "model": {"name": model.variant, "options": options},
                      "state_dict": model.state_dict(), "epoch": 1}
    else:  # the flat layout of the inference contract
        checkpoint = {"variant": model.variant, "model_options": options, "state_dict": model.state_dict()}
    torch.save(checkpoint, path)
    return path


@pytest.fixture
def checkpoint(tmp_path, standin_registry) -> Path:
    return save_checkpoint(tmp_path / "dsfnet.pt", LocalStandIn("dsfnet", hidden=6, seed=3), {"hidden": 6})


def random_clip(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, ...]:
    return tuple(rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(SEQ_LEN))


def reference_input(clip) -> torch.Tensor:
    """The clip sampler's validation input: grey-padded to a multiple of 16, normalised."""
    frames = pad_to_multiple(np.stack(clip))
    return torch.from_numpy(normalise(frames).transpose(3, 0, 1, 2).copy())[None]


def sorted_rows(detections: np.ndarray) -> np.ndarray:
    return detections[np.lexsort((detections[:, 1], detections[:, 0]))]


# --------------------------------------------------------------------------- decoding


def test_decode_peak_box_and_suppressed_neighbour():
    hm = torch.full((1, 1, 12, 16), -5.0)
    hm[0, 0, 5, 7] = 2.0   # the peak
    hm[0, 0, 5, 8] = 1.0   # its neighbour: not a local maximum
    hm[0, 0, 1, 1] = 0.0   # a second peak
    wh = torch.zeros(1, 2, 12, 16)
    reg = torch.zeros(1, 2, 12, 16)
    wh[0, :, 5, 7] = torch.tensor([4.0, 6.0])
    reg[0, :, 5, 7] = torch.tensor([0.25, 0.5])
    wh[0, :, 1, 1] = torch.tensor([2.0, 2.0])
    (detections,) = decode({"hm": hm, "wh": wh, "reg": reg}, k=2)
    expected = np.array([[7.25 - 2, 5.5 - 3, 7.25 + 2, 5.5 + 3, torch.sigmoid(torch.tensor(2.0)).item()],
                         [0.0, 0.0, 2.0, 2.0, 0.5]], np.float32)
    np.testing.assert_allclose(detections, expected, rtol=1e-6)


def test_decode_batch_equals_each_image_alone():
    generator = torch.Generator().manual_seed(0)
    outputs = {"hm": torch.randn(3, 1, 20, 24, generator=generator),
               "wh": torch.rand(3, 2, 20, 24, generator=generator) * 8,
               "reg": torch.rand(3, 2, 20, 24, generator=generator)}
    together = decode(outputs, k=30)
    for i, detections in enumerate(together):
        (alone,) = decode({name: head[i:i + 1] for name, head in outputs.items()}, k=30)
        np.testing.assert_array_equal(detections, alone)
        assert len(detections) == 30 and np.all(np.diff(detections[:, 4]) <= 0)


def test_decode_returns_only_real_peaks_when_fewer_than_k():
    hm = torch.full((1, 1, 8, 8), -9.0)
    hm[0, 0, 0, 0] = hm[0, 0, 7, 7] = 3.0
    hm[0, 0, 1:7, 1:7] = -20.0
    zeros = torch.zeros(1, 2, 8, 8)
    (detections,) = decode({"hm": hm, "wh": zeros, "reg": zeros}, k=100)
    # Plateau pixels are peaks (as in the reference), pixels next to a higher one are not:
    # the 2 corners, the 28 - 2 - 4 border pixels not next to a corner, the 4x4 floor of the
    # -20 pit (its rim of 20 touches the -9 border).
    assert len(detections) == 2 + 22 + 16 and (detections[:, 4] > NOT_A_PEAK).all()


# --------------------------------------------------------------------------- soft-NMS


def port_of_reference_soft_nms(boxes: np.ndarray, sigma: float = 0.5, threshold: float = 0.001):
    """Line-by-line port of CenterNet's lib/external/nms.pyx `soft_nms` (method=2), in float32 as
    the Cython. Returns (the first N rows = kept, the whole array the reference goes on to use)."""
    b = np.array(boxes, np.float32)
    n, i, one = len(b), 0, np.float32(1)
    while i < n:
        maxpos = i + int(np.argmax(b[i:n, 4]))
        b[[i, maxpos]] = b[[maxpos, i]]
        tx1, ty1, tx2, ty2, _ = b[i]
        pos = i + 1
        while pos < n:
            x1, y1, x2, y2, _ = b[pos]
            area = (x2 - x1 + one) * (y2 - y1 + one)
            iw = min(tx2, x2) - max(tx1, x1) + one
            if iw > 0:
                ih = min(ty2, y2) - max(ty1, y1) + one
                if ih > 0:
                    ua = np.float32((tx2 - tx1 + one) * (ty2 - ty1 + one) + area - iw * ih)
                    ov = iw * ih / ua
                    weight = np.float32(np.exp(float(-(ov * ov) / np.float32(sigma))))
                    b[pos, 4] = weight * b[pos, 4]
                    if b[pos, 4] < threshold:
                        b[pos] = b[n - 1]
                        n -= 1
                        pos -= 1
            pos += 1
        i += 1
    return b[:n], b


def test_iou_uses_plus_one_pixel_convention():
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9]], np.float32)
    assert iou_plus_one(boxes)[0, 1] == pytest.approx(50 / 150)  # 5x10 of two 10x10 boxes


def test_soft_nms_decays_duplicate_by_gaussian_of_iou():
    kept = soft_nms_gaussian(np.array([[0, 0, 9, 9, 0.8], [0, 0, 9, 9, 0.9], [50, 50, 59, 59, 0.5]]))
    np.testing.assert_allclose(kept[:, 4], [0.9, 0.5, 0.8 * np.exp(-1 / 0.5)], rtol=1e-6)


def test_soft_nms_equals_reference_port_without_its_stale_rows():
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 60, (100, 2))
    sizes = rng.uniform(3, 12, (100, 2))
    boxes = np.hstack([centres - sizes / 2, centres + sizes / 2, rng.uniform(0.0005, 1, (100, 1))])
    kept_by_reference, whole_reference_array = port_of_reference_soft_nms(boxes)
    ours = soft_nms_gaussian(boxes)
    assert len(kept_by_reference) < len(whole_reference_array)  # discards happened: stale rows exist
    np.testing.assert_array_equal(ours, kept_by_reference)


# --------------------------------------------------------------------------- tile layout


@settings(max_examples=150, deadline=None)
@given(length=st.integers(1, 3000), tile_units=st.integers(1, 64), data=st.data())
def test_axis_cores_partition_the_axis_and_keep_half_the_overlap_from_interior_edges(length, tile_units, data):
    tile = 16 * tile_units
    overlap = data.draw(st.integers(0, tile - 1))
    tiling = axis_tiling(length, tile, overlap)
    spans = tiling.spans
    assert spans[0].core_start == 0 and spans[-1].core_stop == length
    for before, after in zip(spans, spans[1:]):
        assert before.core_stop == after.core_start
        assert before.start + before.extent - after.start >= overlap  # neighbours overlap enough
    for span in spans:
        assert span.start <= span.core_start < span.core_stop <= span.start + span.extent
        assert tiling.input_size % 16 == 0 and tiling.input_size >= span.extent
        if length > tile:  # inside the frame, never padded
            assert span.extent == tile == tiling.input_size and 0 <= span.start <= length - tile
            if span.start > 0:
                assert span.core_start - span.start >= overlap // 2
            if span.start + tile < length:
                assert span.start + tile - span.core_stop >= overlap // 2
        else:
            assert len(spans) == 1 and span.extent == length and tiling.input_size == round_up(length)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 200), width=st.integers(1, 200), tile_units=st.integers(1, 8), data=st.data())
def test_tile_cores_cover_every_pixel_exactly_once(height, width, tile_units, data):
    tile = 16 * tile_units
    # overlaps up to tile - 1 are covered per axis above; here at most half keeps the tile count small
    layout = tile_layout(height, width, tile, data.draw(st.integers(0, tile // 2)))
    owners = np.zeros((height, width), np.int32)
    for one_tile in layout.tiles:
        y0, y1, x0, x1 = one_tile.core
        owners[y0:y1, x0:x1] += 1
    assert (owners == 1).all()


@settings(max_examples=150, deadline=None)
@given(length=st.integers(1, 3000), tile_units=st.integers(1, 64), data=st.data())
def test_fitted_tile_never_costs_more_than_exact_tiles_and_stays_bounded(length, tile_units, data):
    tile = 16 * tile_units
    overlap = data.draw(st.integers(0, tile - 1))
    side = fitted_tile(length, tile, overlap)
    assert side % 16 == 0 and side <= tile + overlap
    fitted, exact = axis_tiling(length, side, overlap), axis_tiling(length, tile, overlap)
    assert len(fitted.spans) * fitted.input_size <= len(exact.spans) * exact.input_size
    spans = fitted.spans
    assert spans[0].core_start == 0 and spans[-1].core_stop == length
    for before, after in zip(spans, spans[1:]):
        assert before.core_stop == after.core_start
        assert before.start + before.extent - after.start >= overlap


def test_a_1024_frame_takes_four_fitted_tiles_of_512_not_nine():
    assert len(tile_layout(1024, 1024, 512, 32).tiles) == 9
    layout = tile_layout(1024, 1024, 512, 32, fit=True)
    assert len(layout.tiles) == 4 and layout.input_shape == (528, 528)
    assert len(TiledDetector(LocalStandIn(), tile=512, overlap=32).layout(1024, 1024).tiles) == 4


@pytest.mark.parametrize("tile, overlap", [(15, 0), (0, 0), (64, 64), (64, -1)])
def test_invalid_tiling_is_refused(tile, overlap):
    with pytest.raises(ValueError, match="tile=|overlap="):
        tile_layout(100, 100, tile, overlap)


# --------------------------------------------------------------------------- tiled inference


@pytest.mark.parametrize("height, width", [(64, 96), (90, 70)])
@pytest.mark.parametrize("tile", [None, 512])
def test_tile_covering_the_frame_equals_whole_frame_inference_exactly(height, width, tile):
    clip = random_clip(np.random.default_rng(height), height, width)
    model = LocalStandIn(seed=1)
    expected_input = reference_input(clip)
    with torch.inference_mode():
        heads = {name: head[..., :height, :width] for name, head in model(expected_input).items()}
    (expected,) = decode(heads, k=100)
    expected = soft_nms_gaussian(expected)

    detections = TiledDetector(model, tile=tile, overlap=32).detect_clip(clip)
    assert torch.equal(model.last_input, expected_input)  # same padding, same normalisation
    np.testing.assert_array_equal(detections, expected)


def all_peaks(model, clip, tile, overlap):
    detector = TiledDetector(model, tile=tile, overlap=overlap, batch_size=4, top_k=10**6, soft_nms=False)
    return sorted_rows(detector.detect_clip(clip))


def test_tiled_equals_whole_frame_when_half_overlap_exceeds_receptive_radius():
    clip = random_clip(np.random.default_rng(5), 160, 208)  # multiples of 16: no padding anywhere
    model = LocalStandIn(seed=2)
    whole = all_peaks(model, clip, None, 0)
    tiled = all_peaks(model, clip, 64, 2 * (RECEPTIVE_RADIUS + 1))
    assert len(whole) > 1000
    np.testing.assert_allclose(tiled, whole, rtol=1e-6, atol=1e-5)
    # The comparison is sensitive: without overlap, peaks along tile seams change.
    seams_unseen = all_peaks(model, clip, 64, 0)
    assert len(seams_unseen) != len(whole) or not np.allclose(seams_unseen, whole, atol=1e-5)


@pytest.mark.parametrize("height, width, tile", [(150, 173, 48), (40, 100, 64)])
def test_tiled_agrees_with_whole_frame_away_from_padded_borders(height, width, tile):
    # Whole-frame inference pads right/bottom, edge tiles do not (40 rows: one padded tile row).
    clip = random_clip(np.random.default_rng(6), height, width)
    model = LocalStandIn(seed=4)

    def away_from_border(detections):
        centre_x = (detections[:, 0] + detections[:, 2]) / 2
        centre_y = (detections[:, 1] + detections[:, 3]) / 2
        margin = RECEPTIVE_RADIUS + 2
        return detections[(centre_x < width - margin) & (centre_y < height - margin)]

    whole = away_from_border(all_peaks(model, clip, None, 0))
    tiled = away_from_border(all_peaks(model, clip, tile, 8))
    np.testing.assert_allclose(tiled, whole, rtol=1e-6, atol=1e-5)


def test_model_only_ever_sees_tile_batches():
    clip = random_clip(np.random.default_rng(7), 300, 500)
    model = LocalStandIn()
    detector = TiledDetector(model, tile=128, overlap=32, batch_size=3)
    n_tiles = len(detector.layout(300, 500).tiles)
    detector.detect_clip(clip)
    assert n_tiles == 3 * 5
    assert len(model.input_shapes) == 5
    assert all(shape == (3, 3, SEQ_LEN, 128, 128) for shape in model.input_shapes)


def test_batching_across_frames_keeps_order_and_results():
    rng = np.random.default_rng(8)
    clips = [random_clip(rng, 40, 56) for _ in range(3)] + [random_clip(rng, 72, 40)] + [random_clip(rng, 40, 56)]
    model = LocalStandIn()
    one_by_one = [TiledDetector(model, tile=None, batch_size=1).detect_clip(clip) for clip in clips]
    batched = list(TiledDetector(model, tile=None, batch_size=3).detect_clips(iter(clips)))
    assert len(batched) == len(clips)
    for alone, together in zip(one_by_one, batched):
        np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_rolling_clips_follow_the_clip_sampler_order():
    frames = [np.full((2, 2, 3), index, np.uint8) for index in range(1, 8)]
    for current, clip in enumerate(rolling_clips(iter(frames)), start=1):
        assert [int(image[0, 0, 0]) for image in clip] == clip_frame_indices(current)


# --------------------------------------------------------------------------- checkpoints


def test_load_detector_rebuilds_both_checkpoint_layouts(tmp_path, standin_registry):
    model = LocalStandIn("micml", hidden=5, seed=9)
    for layout in ("engine", "flat"):
        path = save_checkpoint(tmp_path / f"{layout}.pt", model, {"hidden": 5, "pretrained": "/gone.pth"}, layout)
        loaded = load_detector(path, expected_variant="micml")
        assert loaded.variant == "micml" and not loaded.training
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor)


def test_load_detector_gives_the_inference_copy_unless_asked_for_the_plain_model(tmp_path):
    model = micml.models.build("dsfnet", head_conv=8)
    path = tmp_path / "dsfnet.pt"
    torch.save({"format": "micml.checkpoint/1", "model": {"name": "dsfnet", "options": dict(head_conv=8)},
                "state_dict": model.state_dict()}, path)
    assert getattr(load_detector(path), "optimized_for_inference", False)
    plain = load_detector(path, optimize=False)
    assert not getattr(plain, "optimized_for_inference", False) and plain.state_dict().keys() == model.state_dict().keys()


def test_load_detector_errors_name_the_file_and_the_fix(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match=r"missing\.pt: checkpoint not found"):
        load_detector(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"corrupt\.pt: cannot be read.*re-train or re-download"):
        load_detector(corrupt)
    with pytest.raises(CheckpointError, match=r"dsfnet\.pt: checkpoint holds a 'dsfnet' model but 'micml'"):
        load_detector(checkpoint, expected_variant="micml")
    reference_like = tmp_path / "model_best.pth"
    torch.save({"epoch": 3, "state_dict": LocalStandIn().state_dict()}, reference_like)
    with pytest.raises(CheckpointError, match="load_reference_checkpoint"):
        load_detector(reference_like)
    misfit = save_checkpoint(tmp_path / "misfit.pt", LocalStandIn(hidden=6), {"hidden": 7})
    with pytest.raises(CheckpointError, match=r"misfit\.pt: its weights do not fit"):
        load_detector(misfit)


def real_dsfnet_checkpoint(path: Path) -> tuple[nn.Module, Path]:
    model = micml.models.build("dsfnet", head_conv=8).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a freshly initialised heatmap is nearly flat: ties would make row order arbitrary
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    torch.save({"format": "micml.checkpoint/1", "model": {"name": "dsfnet", "options": dict(head_conv=8)},
                "state_dict": model.state_dict()}, path)
    return model, path


def test_real_registry_model_from_checkpoint_equals_direct_inference(tmp_path):
    model, path = real_dsfnet_checkpoint(tmp_path / "real.pt")
    clip = random_clip(np.random.default_rng(10), 30, 36)
    with torch.inference_mode():
        heads = {name: head[..., :30, :36] for name, head in model(reference_input(clip)).items()}
    (expected,) = decode(heads, k=100)
    detections = TiledDetector(load_detector(path, expected_variant="dsfnet"), tile=None).detect_clip(clip)
    expected = soft_nms_gaussian(expected)
    # near-equal scores may swap places between two float orderings of the same sums: compare as sets
    by_position = lambda rows: rows[np.lexsort(np.round(rows[:, ::-1], 3).T)]
    np.testing.assert_allclose(by_position(detections), by_position(expected), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("optimize", [True, False], ids=["inference-copy", "plain-model"])
def test_autocast_inference_stays_within_bfloat16_rounding_of_float32(tmp_path, optimize):
    _, path = real_dsfnet_checkpoint(tmp_path / "real.pt")
    clip = random_clip(np.random.default_rng(10), 48, 64)
    exact = TiledDetector(load_detector(path, optimize=optimize), tile=None).detect_clip(clip)
    mixed = TiledDetector(load_detector(path, optimize=optimize), tile=None, amp="bf16").detect_clip(clip)
    assert mixed.dtype == np.float32 and mixed.shape == exact.shape
    assert not np.array_equal(mixed, exact)  # the network did run in bfloat16 ...
    # ... and stayed close: bf16 keeps 8 significant bits, so a heat-map logit near -2.2 moves by a
    # few hundredths and its score (sigmoid slope ~0.09 there) by a few thousandths.
    np.testing.assert_allclose(np.sort(mixed[:, 4]), np.sort(exact[:, 4]), atol=5e-3)
    with pytest.raises(ValueError, match="amp must be one of off, bf16, fp16, found 'fp8'"):
        TiledDetector(load_detector(path), amp="fp8")


# --------------------------------------------------------------------------- predict and export


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    rng = np.random.default_rng(11)
    writer = UnifiedWriter(tmp_path / "data")
    writer.add_video("a", "test", [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)],
                     {2: np.array([[4, 4, 10, 9]], np.float32)})
    writer.add_video("b", "test", [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2)])
    writer.add_video("c", "train", [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)])
    return writer.commit()


def expected_split_detections(root: Path, checkpoint: Path, **settings) -> dict:
    """Clips built independently (clip sampler's frame indices, one read per clip frame)."""
    dataset = UnifiedDataset(root)
    detector = TiledDetector(load_detector(checkpoint), **settings)
    detections = {}
    for video in dataset.videos("test"):
        name = video.record.name
        for frame in range(1, video.record.n_frames + 1):
            clip = [read_image(dataset.frame_path(name, f)) for f in clip_frame_indices(frame)]
            detections.setdefault(name, {})[frame] = detector.detect_clip(clip)
    return detections


def test_predict_split_writes_mat_tree_coco_json_and_csv(tmp_path, tiny_dataset, checkpoint):
    settings = dict(tile=32, overlap=8, top_k=20, soft_nms=True)
    out = tmp_path / "results" / "test"
    summary = predict_split(checkpoint, tiny_dataset, "test", out, batch_size=2, progress=False, **settings)
    expected = expected_split_detections(tiny_dataset, checkpoint, **settings)

    assert summary.frames == 5 and summary.videos == 2 and summary.frames_per_second > 0
    assert not out.with_name("test.partial").exists()
    assert sorted(str(p.relative_to(out / "mat")) for p in (out / "mat").rglob("*.mat")) == [
        "a/000001.mat", "a/000002.mat", "a/000003.mat", "b/000001.mat", "b/000002.mat"]
    for video, frames in expected.items():
        for frame, detections in frames.items():
            assert 0 < len(detections) <= 20
            np.testing.assert_allclose(read_frame_mat(out / "mat" / video / f"{frame:06d}.mat"), detections,
                                       rtol=0, atol=1e-5)

    with open(out / "detections.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows[0].keys() == {"video", "frame", "x1", "y1", "x2", "y2", "score"}
    assert len(rows) == summary.detections == sum(len(d) for frames in expected.values() for d in frames.values())
    first = np.array([[float(r[c]) for c in ("x1", "y1", "x2", "y2", "score")] for r in rows
                      if (r["video"], r["frame"]) == ("a", "1")], np.float32)
    np.testing.assert_array_equal(first, read_frame_mat(out / "mat" / "a" / "000001.mat"))

    # Same text as the evaluation's own (non-streaming) COCO writer, with the split's image ids.
    image_ids = coco_image_index(UnifiedDataset(tiny_dataset).annotation_file("test"))
    from_mat = {video: {frame: read_frame_mat(out / "mat" / video / f"{frame:06d}.mat") for frame in frames}
                for video, frames in expected.items()}
    write_coco_results(tmp_path / "reference.json", from_mat, image_ids)
    assert (out / "detections.json").read_text() == (tmp_path / "reference.json").read_text()
    predicted = json.loads((out / "predict.json").read_text())
    assert predicted["frames"] == 5
    assert predicted["fit_tiles"] is True  # the tile layout is tile, overlap and this: reproducible
    assert predicted["weights_sha256"] == weights_digest(torch.load(checkpoint, weights_only=True)["state_dict"])


def test_export_mat_from_csv_equals_the_direct_mat_tree(tmp_path, tiny_dataset, checkpoint):
    """The workflow's test rule writes no .mat (write_mat=False); export_mat makes the same tree
    from detections.csv, byte-equal arrays, with empty files for frames without detections."""
    settings = dict(tile=32, overlap=8, top_k=20, progress=False)
    direct = tmp_path / "direct"
    predict_split(checkpoint, tiny_dataset, "test", direct, **settings)
    deferred = tmp_path / "deferred"
    predict_split(checkpoint, tiny_dataset, "test", deferred, write_mat=False, **settings)
    assert not (deferred / "mat").exists()
    lines = (deferred / "detections.csv").read_text().splitlines()
    without_b2 = [line for line in lines if not line.startswith("b,2,")]  # frame b/2: no detections
    (deferred / "detections.csv").write_text("\n".join(without_b2) + "\n")
    frames = {video.record.name: video.record.n_frames for video in UnifiedDataset(tiny_dataset).videos("test")}

    assert export_mat_tree(deferred / "detections.csv", frames, deferred / "mat") == 5
    for path in sorted((direct / "mat").rglob("*.mat")):
        exported = read_frame_mat(deferred / "mat" / path.relative_to(direct / "mat"))
        expected = np.zeros((0, 5), np.float32) if path.parts[-2:] == ("b", "000002.mat") else read_frame_mat(path)
        assert exported.dtype == np.float32
        np.testing.assert_array_equal(exported, expected)


def test_export_mat_names_a_csv_of_another_split_or_a_bad_line(tmp_path):
    csv_path = tmp_path / "detections.csv"
    csv_path.write_text("video,frame,x1,y1,x2,y2,score\na,1,0,0,4,4,0.9\nz,3,0,0,4,4,0.9\n")
    with pytest.raises(DetectionFileError, match=r"detections\.csv: 1 row group.*video 'z' frame 3"):
        export_mat_tree(csv_path, {"a": 2}, tmp_path / "mat")
    csv_path.write_text("video,frame,x1,y1,x2,y2,score\na,1,0,0,nan,4,0.9\n")
    with pytest.raises(DetectionFileError, match=r"detections\.csv: line 2 is not"):
        export_mat_tree(csv_path, {"a": 2}, tmp_path / "mat")
    assert not (tmp_path / "mat").exists()


def test_predict_split_runs_and_records_the_autocast_dtype(tmp_path, tiny_dataset):
    _, path = real_dsfnet_checkpoint(tmp_path / "real.pt")
    runs = {amp: predict_split(path, tiny_dataset, "test", tmp_path / amp, tile=None, top_k=20, progress=False,
                               write_mat=False, amp=amp) for amp in ("off", "bf16")}
    assert runs["bf16"].amp == "bf16"
    assert json.loads((tmp_path / "bf16" / "predict.json").read_text())["amp"] == "bf16"
    scores = {amp: np.sort(np.loadtxt(tmp_path / amp / "detections.csv", delimiter=",", skiprows=1,
                                      usecols=6)) for amp in runs}
    assert scores["off"].shape == scores["bf16"].shape
    assert not np.array_equal(scores["off"], scores["bf16"])  # bfloat16 did reach the network
    np.testing.assert_allclose(scores["bf16"], scores["off"], atol=5e-3)


def test_failed_predict_leaves_previous_results_untouched(tmp_path, tiny_dataset, checkpoint):
    out = tmp_path / "results"
    out.mkdir()
    (out / "earlier.txt").write_text("kept")
    (tiny_dataset / "frames" / "b" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"b/000002\.jpg: frame cannot be decoded"):
        predict_split(checkpoint, tiny_dataset, "test", out, tile=None, progress=False)
    assert [p.name for p in out.iterdir()] == ["earlier.txt"]


# --------------------------------------------------------------------------- detect


def write_video(path: Path, frames) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def detections_csv(path: Path) -> np.ndarray:
    with open(path, newline="") as stream:
        return np.array([[float(v) for v in row[1:]] for row in list(csv.reader(stream))[1:]])


def test_detect_on_a_video_and_on_its_frames_in_natural_order(tmp_path, checkpoint):
    rng = np.random.default_rng(12)
    video = write_video(tmp_path / "clip.mp4", [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(7)])
    decoded = read_video(video)
    folder = tmp_path / "frames"
    folder.mkdir()
    for number, frame in enumerate(decoded, start=5):  # img5 ... img11: "img10" sorts first as text
        cv2.imwrite(str(folder / f"img{number}.png"), frame)

    options = dict(tile=32, overlap=8, top_k=10, score_threshold=0.0, progress=False)
    from_video = detect(video, checkpoint, tmp_path / "out_video", **options)
    from_folder = detect(folder, checkpoint, tmp_path / "out_folder", expected_variant="dsfnet", **options)

    assert from_video.frames == from_folder.frames == 7
    assert sorted(p.name for p in (tmp_path / "out_video").iterdir()) == [
        "annotated.mp4", "detections.csv", "detections.json"]
    np.testing.assert_array_equal(detections_csv(tmp_path / "out_video" / "detections.csv"),
                                  detections_csv(tmp_path / "out_folder" / "detections.csv"))
    assert {r["image_id"] for r in json.loads((tmp_path / "out_video" / "detections.json").read_text())} == set(
        range(1, 8))
    annotated = read_video(tmp_path / "out_video" / "annotated.mp4")
    assert len(annotated) == 7 and annotated[0].shape == (48, 64, 3)


def test_detect_errors_name_the_input(tmp_path, checkpoint):
    with pytest.raises(InputError, match=r"nowhere\.mp4: no such video"):
        detect(tmp_path / "nowhere.mp4", checkpoint, tmp_path / "out", progress=False)
    (tmp_path / "fake.mp4").write_text("not a video")
    with pytest.raises(InputError, match=r"fake\.mp4: cannot be opened as a video"):
        detect(tmp_path / "fake.mp4", checkpoint, tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: contains no image frames"):
        detect(tmp_path / "empty", checkpoint, tmp_path / "out", progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    cv2.imwrite(str(broken / "1.png"), np.zeros((32, 32, 3), np.uint8))
    (broken / "2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match=r"2\.png: cannot be decoded"):
        detect(broken, checkpoint, tmp_path / "out", tile=None, progress=False)
    with pytest.raises(CheckpointError, match="holds a 'dsfnet' model but 'micml'"):
        detect(broken, checkpoint, tmp_path / "out", expected_variant="micml", progress=False)
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "out").iterdir())


def test_draw_detections_draws_only_boxes_above_the_threshold():
    image = np.zeros((20, 20, 3), np.uint8)
    drawn = draw_detections(image, np.array([[2, 2, 6, 6, 0.5], [10, 10, 14, 14, 0.1]]), score_threshold=0.3)
    assert tuple(drawn[2, 2]) == (0, 255, 0) and tuple(drawn[10, 10]) == (0, 0, 0)
    assert not image.any()  # the input frame is not modified
