"""Training crops at their edges, and the two augmentation styles (default and the reference's)."""

import numpy as np
import pytest
import torch

from micml.data.clips import (Augmentation, ClipDataset, PhotometricDraw, clip_to_image, crop_clip, normalise,
                              reference_photometric_distort)
from micml.data.targets import build_targets
from micml.data.unified import UnifiedWriter

FRAME, CROP = 64, 32
SQUARE_AT = (36, 12)  # top-left of a bright 6-pixel square, so 32-pixel crops often miss it


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    rng = np.random.default_rng(11)
    frames, boxes = [], {}
    for f in range(1, 7):
        image = (40 + rng.integers(0, 12, (FRAME, FRAME, 3))).astype(np.uint8)
        x, y = SQUARE_AT
        image[y:y + 6, x:x + 6] = 230
        frames.append(image)
        boxes[f] = np.array([[x, y, x + 6, y + 6]], np.float32)
    writer = UnifiedWriter(tmp_path_factory.mktemp("data") / "square")
    writer.add_video("a", "train", frames, boxes)
    return writer.commit()


# --------------------------------------------------------------------------- crop edges


def test_crop_keeps_boxes_across_its_edge_whole_and_drops_those_outside():
    frames = np.zeros((5, 64, 64, 3), np.uint8)
    boxes = np.array([[26, 4, 36, 10],    # crosses the crop's right edge (x 32)
                      [40, 4, 50, 10],    # wholly right of the crop
                      [10, 30, 14, 40]],  # crosses the bottom edge
                     np.float32)
    _, kept = crop_clip(frames, boxes, (0, 0), (CROP, CROP))
    np.testing.assert_array_equal(kept, [[26, 4, 36, 10], [10, 30, 14, 40]])
    np.testing.assert_array_equal(clip_to_image(kept, CROP, CROP), [[26, 4, 32, 10], [10, 30, 14, 32]])


def test_a_crop_edge_gives_the_targets_an_image_edge_gives():
    # the same box, once crossing a crop's right edge and once an image's: identical targets
    frames = np.zeros((5, 64, 64, 3), np.uint8)
    _, kept = crop_clip(frames, np.array([[50, 4, 60, 10]], np.float32), (0, 24), (CROP, CROP))
    from_crop = build_targets(kept, CROP, CROP, max_objects=1)
    from_image = build_targets(np.array([[26, 4, 36, 10]], np.float32), CROP, CROP, max_objects=1)
    for name in ("hm", "wh", "reg", "ind"):
        np.testing.assert_array_equal(getattr(from_crop, name), getattr(from_image, name))
    np.testing.assert_allclose(from_crop.wh[0], [10, 6])  # the whole box, not the 6 pixels inside
    assert from_crop.ind[0] == 7 * CROP + 31  # centre x 31 is the crop's last pixel


def test_centre_crop_scores_the_visible_part_and_trains_on_the_whole_box(dataset_root):
    sample = ClipDataset(dataset_root, "train", train=False, crop_size=CROP)[0]  # window 16..48 cuts the square's top
    np.testing.assert_array_equal(sample["boxes"], [[20, 0, 26, 2]])  # square 36..42 x 12..18, shifted by 16
    np.testing.assert_allclose(sample["wh"][0], [6, 6])
    assert sample["ind"][0] == 0 * CROP + 23  # centre y -1 clipped onto row 0


# --------------------------------------------------------------------------- augmentation styles


@pytest.mark.parametrize("setting, expected", [
    ("reference", Augmentation(style="reference")),
    ("default", Augmentation()),
    ({"style": "reference", "photometric": False}, Augmentation(photometric=False, style="reference")),
    (None, Augmentation()),
])
def test_augment_setting_accepts_a_style_name_or_a_mapping(setting, expected):
    assert Augmentation.from_config(setting) == expected


def test_unknown_augment_style_is_named():
    with pytest.raises(ValueError, match="augment.style: expected one of default, reference, got 'paper'"):
        Augmentation.from_config({"style": "paper"})
    with pytest.raises(ValueError, match="a style name is also accepted: default, reference"):
        Augmentation.from_config("paper")


def test_reference_distortion_works_on_normalised_values_unclipped():
    frames = normalise(np.full((5, 4, 4, 3), 128, np.float32))
    shifted = 0
    for seed in range(40):
        out = reference_photometric_distort(np.random.default_rng(seed), frames)
        assert out.dtype == np.float32
        shifted += np.abs(out).max() > 5  # brightness +-32 is +-32 standard deviations here
    assert shifted > 5


def test_reference_distortion_always_makes_the_lossy_hsv_round_trip():
    rng_seed = next(seed for seed in range(200) if PhotometricDraw.sample(np.random.default_rng(seed)) ==
                    PhotometricDraw(None, False, None, None, None, None))
    frames = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)  # mostly negative pixels
    out = reference_photometric_distort(np.random.default_rng(rng_seed), frames)
    assert not np.allclose(out, frames, atol=1e-3)  # no step drawn, yet the round trip changed them


def test_reference_style_leaves_crops_without_objects_alone_and_flips_the_others(dataset_root):
    common = dict(train=True, crop_size=CROP, seed=2, object_crop_prob=0.0)
    plain = ClipDataset(dataset_root, "train", augment=False, **common)
    reference = ClipDataset(dataset_root, "train", augment={"style": "reference", "hflip": 1.0, "vflip": 0.0,
                                                            "photometric": False}, **common)
    default = ClipDataset(dataset_root, "train", augment={"hflip": 1.0, "vflip": 0.0, "photometric": False}, **common)
    seen = set()
    for index in range(len(plain)):
        with_boxes = bool(plain[index]["reg_mask"].sum())
        seen.add(with_boxes)
        expected = plain[index]["input"].flip(-1) if with_boxes else plain[index]["input"]
        assert torch.equal(reference[index]["input"], expected)
        assert torch.equal(default[index]["input"], plain[index]["input"].flip(-1))
    assert seen == {True, False}  # both kinds of crop were drawn
