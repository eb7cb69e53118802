"""What a run folder records besides checkpoints: log.csv rows and provenance.json.

A run folder holds `last.pt`, `best.pt`, `log.csv` (one row per logged iteration and per
validation), `provenance.json` (resolved config, versions, seed, git commit, host, device, one
entry per start or resume) and `run.json` (the run's identity, `micml.engine.resume`).
"""

from __future__ import annotations

import csv
import io
import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from micml.engine.distributed import DistContext
from micml.io import write_json, write_text
from micml.machine import cpu_model

LAST, BEST, LOG_CSV, PROVENANCE, RUN_IDENTITY = "last.pt", "best.pt", "log.csv", "provenance.json", "run.json"
SUPERSEDED = "superseded"
LOSS_NAMES = ("hm", "wh", "reg", "total")
LOG_FIELDS = ("kind", "epoch", "iteration", "step", "lr", *LOSS_NAMES, "dropped_objects",
              "precision", "recall", "f1", "seconds")


class CsvLog:
    """log.csv, appended row by row; on resume, rows after the checkpoint's step are dropped
    (they were logged by the killed run after its last checkpoint and will be logged again)."""

    def __init__(self, path: Path, *, keep_up_to_step: int | None):
        self.path = path
        rows = []
        if keep_up_to_step is not None and path.exists():
            with open(path, newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= keep_up_to_step]
        text = io.StringIO()
        writer = csv.DictWriter(text, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        write_text(path, text.getvalue())

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, LOG_FIELDS).writerow({key: _csv_value(row.get(key)) for key in LOG_FIELDS})


def _csv_value(value):
    return f"{value:.8g}" if isinstance(value, float) else ("" if value is None else value)


def git_commit() -> str | None:
    """HEAD of the repository holding this package, if it is a git checkout with commits."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def run_record(context: DistContext, effective: Mapping, resumed_from: Mapping | None) -> dict:
    import cv2
    import torchvision

    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": socket.gethostname(),
        "command": sys.argv,
        "device": str(context.device),
        "device_name": device_name(context.device),
        "world_size": context.world_size,
        "effective": dict(effective),
        "resumed_from": dict(resumed_from) if resumed_from else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__, "opencv": cv2.__version__},
        "git_commit": git_commit(),
    }


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def write_provenance(out_dir: Path, config: Mapping, dataset_root: Path, record: Mapping, *, fresh: bool) -> None:
    path = out_dir / PROVENANCE
    runs = [] if fresh or not path.exists() else json.loads(path.read_text()).get("runs", [])
    document = {"config": dict(config), "seed": config["seed"], "dataset": str(dataset_root.resolve()),
                "runs": [*runs, dict(record)]}
    write_json(path, document, default=str)
