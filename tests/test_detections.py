"""micml.detections: the three formats a prediction folder holds read back as what was written."""

import numpy as np
import pytest

from micml.detections import (
    DetectionFileError,
    DetectionWriter,
    export_mat_tree,
    read_coco_results,
    read_detection_dir,
    read_detections_csv,
    write_coco_results,
)

DETECTIONS = {
    "001": {1: np.array([[10.25, 12.5, 20.125, 24.0, 0.91]], np.float32), 2: np.zeros((0, 5), np.float32)},
    "002": {1: np.array([[1, 2, 3, 4, 0.5], [5.5, 6.5, 9.75, 8.25, 0.3333]], np.float32)},
}
IMAGE_IDS = {("001", 1): 7, ("001", 2): 8, ("002", 1): 9}


def written(folder, write_mat=True):
    with DetectionWriter(folder, IMAGE_IDS, write_mat=write_mat) as writer:
        for video, frames in DETECTIONS.items():
            for frame, rows in frames.items():
                writer.add(video, frame, rows)
    return writer


def test_every_format_reads_back_what_the_writer_wrote(tmp_path):
    writer = written(tmp_path / "out")
    assert (writer.frames, writer.rows) == (3, 3)
    from_mat = read_detection_dir(writer.mat_root)
    from_csv = read_detections_csv(tmp_path / "out" / "detections.csv")
    from_json = read_coco_results(tmp_path / "out" / "detections.json", IMAGE_IDS)
    for video, frames in DETECTIONS.items():
        for frame, rows in frames.items():
            np.testing.assert_array_equal(from_mat[video][frame], rows)
            if len(rows):
                np.testing.assert_array_equal(from_csv[(video, frame)], rows)  # 9 digits: float32 exactly
                np.testing.assert_allclose(from_json[video][frame], rows, atol=0.006)  # 2 decimals


def test_streamed_json_is_the_text_of_the_whole_list(tmp_path):
    written(tmp_path / "out")
    write_coco_results(tmp_path / "whole.json", DETECTIONS, IMAGE_IDS)
    assert (tmp_path / "out" / "detections.json").read_bytes() == (tmp_path / "whole.json").read_bytes()


def test_mat_tree_from_csv_equals_the_streamed_tree(tmp_path):
    """The workflow's test rule writes only the CSV; export_mat makes the .mat tree from it."""
    written(tmp_path / "direct")
    written(tmp_path / "csv_only", write_mat=False)
    assert not (tmp_path / "csv_only" / "mat").exists()
    frames = {video: max(frames) for video, frames in DETECTIONS.items()}
    assert export_mat_tree(tmp_path / "csv_only" / "detections.csv", frames, tmp_path / "csv_only" / "mat") == 3
    direct, exported = read_detection_dir(tmp_path / "direct" / "mat"), read_detection_dir(tmp_path / "csv_only" / "mat")
    assert direct.keys() == exported.keys()
    for video, frames in direct.items():
        assert frames.keys() == exported[video].keys()
        for frame, rows in frames.items():
            assert exported[video][frame].dtype == rows.dtype == np.float32
            np.testing.assert_array_equal(exported[video][frame], rows)


def test_unknown_frame_is_refused_naming_the_folder(tmp_path):
    with pytest.raises(DetectionFileError, match="video '003' frame 1 has no image id"):
        with DetectionWriter(tmp_path / "out", IMAGE_IDS) as writer:
            writer.add("003", 1, np.zeros((0, 5)))
