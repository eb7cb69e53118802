"""`micml detect --track`: track ids in the CSV, counts.csv, tracks.txt and a browser-playable video."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from micml.cli import main
from micml.inference import detect
from micml.tracking import TrackerSettings
from micml.tracking.mot import read_mot
from test_inference import checkpoint, read_video, standin_registry, write_video  # noqa: F401 (fixtures)

av = pytest.importorskip("av")


def test_detect_with_tracking_writes_ids_counts_and_an_h264_video(tmp_path, checkpoint):  # noqa: F811
    rng = np.random.default_rng(5)
    video = write_video(tmp_path / "clip.mp4", [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(8)])
    out = tmp_path / "out"
    summary = detect(video, checkpoint, out, tile=32, overlap=8, top_k=10, score_threshold=0.0, progress=False,
                     track=TrackerSettings(min_score=0.0, min_hits=1, max_distance=20))
    assert summary.frames == 8
    assert sorted(p.name for p in out.iterdir()) == [
        "annotated.mp4", "counts.csv", "detections.csv", "detections.json", "tracks.txt"]
    with open(out / "detections.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows and list(rows[0])[-1] == "track_id"
    tracks = read_mot(out / "tracks.txt")
    tracked = [row for row in rows if int(row["track_id"]) >= 0]
    assert len(tracked) == len(tracks) > 0
    assert {int(row["track_id"]) for row in tracked} == set(tracks[:, 1].astype(int))
    with open(out / "counts.csv", newline="") as stream:
        counts = list(csv.DictReader(stream))
    assert [int(row["frame"]) for row in counts] == list(range(1, 9))
    assert sum(int(row["objects"]) for row in counts) == len(tracks)
    assert int(counts[-1]["distinct_so_far"]) == len(np.unique(tracks[:, 1]))
    with av.open(str(out / "annotated.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert len(read_video(out / "annotated.mp4")) == 8


def test_detect_without_tracking_leaves_no_tracking_files(tmp_path, checkpoint):  # noqa: F811
    rng = np.random.default_rng(6)
    video = write_video(tmp_path / "clip.mp4", [rng.integers(0, 256, (32, 32, 3), np.uint8) for _ in range(5)])
    out = tmp_path / "out"
    detect(video, checkpoint, out, tile=None, top_k=5, score_threshold=0.0, progress=False,
           track=TrackerSettings(min_score=0.0, min_hits=1))
    detect(video, checkpoint, out, tile=None, top_k=5, score_threshold=0.0, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["annotated.mp4", "detections.csv", "detections.json"]
    with open(out / "detections.csv", newline="") as stream:
        assert "track_id" not in next(csv.reader(stream))


def test_detect_help_lists_track(capsys):
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    text = capsys.readouterr().out
    assert "--track" in text and "--max-distance" in text
