"""Dataset summary: exact counts, quantiles and speeds on a hand-made unified dataset."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from micml.data.summary import summarize_dataset
from micml.tables import markdown_table
from micml.data.unified import UnifiedWriter


def frames(count: int, width: int, height: int) -> list[np.ndarray]:
    ramp = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    return [np.broadcast_to(ramp, (height, width, 3)).copy() + i for i in range(count)]


def box(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y + h]


@pytest.fixture
def annotated(tmp_path: Path) -> Path:
    writer = UnifiedWriter(tmp_path / "toyset")
    # train: two tracks over 5 frames; track 1 (4x2 px) moves 3 px/frame along x,
    # track 2 (6x4 px) moves (3, 4) = 5 px/frame.
    train_boxes = {f: [box(10 + 3 * (f - 1), 10, 4, 2), box(20 + 3 * (f - 1), 20 + 4 * (f - 1), 6, 4)]
                   for f in range(1, 6)}
    writer.add_video("v_train", "train", frames(5, 64, 48), train_boxes, {f: [1, 2] for f in range(1, 6)})
    # val: 3 boxes of 2x2 px without track ids: no speeds.
    writer.add_video("v_val", "val", frames(3, 64, 48), {1: [box(1, 1, 2, 2)], 2: [box(5, 5, 2, 2), box(9, 9, 2, 2)]})
    # test: another frame size. Track 7 is seen in frames 1 and 3 (8 px apart: 4 px/frame over the
    # gap); frame 2 has the most boxes (3) and is the sample frame.
    test_boxes = {1: [box(10, 10, 8, 8)],
                  2: [box(30, 30, 8, 8), box(40, 30, 8, 8), box(50, 30, 8, 8)],
                  3: [box(18, 10, 8, 8)]}
    test_ids = {1: [7], 2: [-1, -1, -1], 3: [7]}
    writer.add_video("v_test", "test", frames(4, 80, 60), test_boxes, test_ids)
    writer.add_video("v_test_empty", "test", frames(2, 80, 60))
    return writer.commit()


def run_summary(root: Path, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, str, Path]:
    paths = out / "summary.csv", out / "summary.md", out / "summary.png"
    table = summarize_dataset(root, *paths)
    return table, pd.read_csv(paths[0]).set_index("split"), paths[1].read_text(), paths[2]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_counts_per_split(annotated, tmp_path):
    _, csv, _, _ = run_summary(annotated, tmp_path / "out")
    assert list(csv.index) == ["train", "val", "test", "all"]
    counts = csv[["videos", "frames", "objects", "tracks"]]
    assert counts.loc["train"].tolist() == [1, 5, 10, 2]
    assert counts.loc["val"].tolist() == [1, 3, 3, 0]
    assert counts.loc["test"].tolist() == [2, 6, 5, 1]
    assert counts.loc["all"].tolist() == [4, 14, 18, 3]
    assert csv.loc["train", "objects_per_frame"] == 2.0
    assert csv.loc["test", "objects_per_frame"] == pytest.approx(5 / 6)
    assert csv.loc["train", "frame_sizes"] == "64x48"
    assert csv.loc["all", "frame_sizes"] == "64x48;80x60"


def test_size_quantiles(annotated, tmp_path):
    _, csv, _, _ = run_summary(annotated, tmp_path / "out")
    quantiles = lambda split, measure: [csv.loc[split, f"{measure}_p{q}"] for q in (5, 25, 50, 75, 95)]  # noqa: E731
    # train widths: five 4s and five 6s -> linear-interpolated percentiles
    assert quantiles("train", "width") == [4.0, 4.0, 5.0, 6.0, 6.0]
    assert quantiles("train", "height") == [2.0, 2.0, 3.0, 4.0, 4.0]
    assert quantiles("train", "area") == [8.0, 8.0, 16.0, 24.0, 24.0]
    assert quantiles("val", "area") == [4.0] * 5
    assert quantiles("test", "width") == [8.0] * 5
    # all splits pooled: widths are 3x2, 5x4, 5x6, 5x8 (18 boxes)
    expected = np.percentile([2] * 3 + [4] * 5 + [6] * 5 + [8] * 5, [5, 25, 50, 75, 95]).tolist()
    assert quantiles("all", "width") == pytest.approx(expected)


def test_speeds_come_from_track_ids(annotated, tmp_path):
    _, csv, _, _ = run_summary(annotated, tmp_path / "out")
    speed = lambda split: [csv.loc[split, f"speed_p{q}"] for q in (5, 25, 50, 75, 95)]  # noqa: E731
    # train: four steps at 3 px/frame (track 1), four at 5 px/frame (track 2)
    assert speed("train") == [3.0, 3.0, 4.0, 5.0, 5.0]
    # test: track 7 moves 8 px over a gap of 2 frames
    assert speed("test") == [4.0] * 5
    # val has no track ids
    assert all(math.isnan(v) for v in speed("val"))
    assert speed("all")[2] == 4.0


def test_markdown_and_figure(annotated, tmp_path):
    table, _, markdown, png = run_summary(annotated, tmp_path / "out")
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| split | videos | frames | objects | tracks |")
    assert set(lines[1].replace("|", "").split()) <= {"---", "---:"}
    assert len(lines) == 2 + len(table)
    assert "toyset" in markdown
    assert "| train | 1 | 5 | 10 | 2 | 2 | 4 / 4 / 5 / 6 / 6 |" in markdown
    width, height = png_size(png)
    assert 800 <= width <= 2000 and 300 <= height <= 1200


def test_markdown_table_escapes_pipes_and_right_aligns_numbers():
    text = markdown_table(pd.DataFrame({"name": ["a|b"], "n": [3]}))
    assert text.splitlines() == ["| name | n |", "| --- | ---: |", "| a\\|b | 3 |"]


def test_dataset_without_annotations(tmp_path):
    writer = UnifiedWriter(tmp_path / "myvideo", annotated=False, protocols=())
    writer.add_video("clip", "test", frames(3, 48, 32))
    root = writer.commit()
    _, csv, markdown, png = run_summary(root, tmp_path / "out")

    assert csv.loc["test", ["videos", "frames", "objects"]].tolist() == [1, 3, 0]
    assert csv.loc["train", ["videos", "frames", "objects"]].tolist() == [0, 0, 0]
    assert math.isnan(csv.loc["all", "width_p50"]) and math.isnan(csv.loc["all", "speed_p50"])
    assert "| test | 1 | 3 | 0 | 0 | 0 | – |" in markdown
    assert png_size(png)[0] >= 800
