"""The same seed and config on the CPU give the same model and the same metrics, twice.

Two `micml train` processes (as the workflow starts them, with different hash seeds so that no
result may hang on set or dict order) train MICML, motion module included, on the tiny
synthetic dataset; their checkpoints must be bit-identical, and so must the detections that
two `micml test` processes write (tiled as in .test/config.yaml) and the metrics, dsfnet_f1
included, of the two models on the test split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from micml.cli import main as micml
from micml.checkpoint import load_checkpoint
from micml.evaluation.evaluate import evaluate_predictions

REPO = Path(__file__).resolve().parent.parent
TEST_CONFIG = REPO / ".test" / "config.yaml"
CONFIG = yaml.safe_load(TEST_CONFIG.read_text())
MODEL = "micml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("determinism")
    settings = [arg for key, value in CONFIG["synthetic"]["overrides"].items() for arg in ("--set", f"{key}={value}")]
    assert micml(["synth", "rscar", str(root / "native"), "--seed", "0", *settings]) == 0
    options = json.loads((root / "native" / "synthetic_manifest.json").read_text())["converter_options"]
    assert micml(["convert", "rscar", str(root / "native"), str(root / "data"),
                  *[arg for key, value in options.items() for arg in ("-o", f"{key}={json.dumps(value)}")]]) == 0
    return root / "data"


def run_twice(*commands: list[str]) -> None:
    """Both commands at once, one thread each (two cores, and OpenMP threads that would spin
    against each other make a CPU run many times slower), with different hash seeds."""
    processes = [subprocess.Popen([sys.executable, "-m", "micml.cli", *map(str, command)],
                                  env={**os.environ, "PYTHONHASHSEED": str(hash_seed), "OMP_NUM_THREADS": "1"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for command, hash_seed in zip(commands, (1, 2))]
    for process in processes:
        _, errors = process.communicate(timeout=600)
        assert process.returncode == 0, errors[-3000:]


def test_same_seed_and_config_give_identical_weights_detections_and_metrics(dataset, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_twice(*(["train", dataset, run, "--model", MODEL, "--config", TEST_CONFIG, "--set", "threads=1"]
                for run in (first, second)))
    weights = [load_checkpoint(run / "model.pt")["state_dict"] for run in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    logs = [pd.read_csv(run / "log.csv").drop(columns="seconds") for run in (first, second)]
    pd.testing.assert_frame_equal(logs[0], logs[1], check_exact=True)  # every loss and the val F1 too

    run_twice(*(["test", run / "model.pt", dataset, run / "predictions", "--variant", MODEL, "--device", "cpu",
                 "--tile", CONFIG["testing"]["tile"], "--overlap", CONFIG["testing"]["overlap"]]
                for run in (first, second)))
    tables = [evaluate_predictions(dataset, run / "predictions", "test", run / "metrics") for run in (first, second)]
    detections = [(run / "predictions" / "detections.csv").read_text() for run in (first, second)]
    assert detections[0] == detections[1] and len(detections[0].splitlines()) > 1  # scores to the last digit
    assert tables[0].keys() == tables[1].keys() and "dsfnet_f1" in tables[0]
    for protocol, table in tables[0].items():
        pd.testing.assert_frame_equal(table, tables[1][protocol], check_exact=True)
    curve = tables[0]["pr_curve"]
    assert (curve["tp"] + curve["fp"]).max() > 0  # the metrics depend on the detections, not only on zeros
