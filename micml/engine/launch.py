"""Start a training run the way the workflow does: one process, or torchrun over N GPUs.

The workflow's `train` rule and `micml train` both call `run_training`. The run writes its
resumable state (last.pt, log.csv, provenance.json) into `out_dir`, which is not a declared
Snakemake output, so a killed job restarts where it stopped; only when training finished is
the best checkpoint copied to the declared output.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

import yaml

from micml.engine.distributed import launch_command
from micml.engine.train import BEST, resolve_config

log = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"
LOG_TAIL_LINES = 25


def model_training_config(training: Mapping, model: str, *, threads: int | None = None) -> dict:
    """The workflow's `training` section for one variant: shared keys, then its per_model
    overrides; `threads` (the job's CPU share, a machine setting) sets torch's thread count."""
    shared = {key: value for key, value in training.items() if key != "per_model"}
    overrides = dict((training.get("per_model") or {}).get(model, {}))
    machine = {} if threads is None else {"threads": threads}
    return resolve_config({**shared, **overrides, **machine, "model": model})


def run_training(training: Mapping, model: str, dataset_root: Path | str, out_dir: Path | str,
                 model_path: Path | str, *, nproc: int = 0, threads: int | None = None,
                 log_path: Path | str | None = None) -> Path:
    """Train `model` on a unified dataset; copy the best checkpoint to `model_path`.

    `nproc` is the number of GPUs granted (0 or 1: one process; N > 1: torchrun with N).
    """
    out_dir, model_path = Path(out_dir), Path(model_path)
    # The job's threads are shared by the torchrun processes, one per GPU: each taking all of
    # them would oversubscribe the CPUs the cluster granted (sbatch --cpus-per-task).
    per_process = None if threads is None else max(1, threads // max(1, nproc))
    config = model_training_config(training, model, threads=per_process)  # bad settings fail here
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / RUN_CONFIG
    config_path.write_text(yaml.safe_dump(config, sort_keys=True))
    command = launch_command(nproc, ["--config", config_path, "--data", dataset_root, "--out", out_dir,
                                     "--no-progress"])
    log.info("running: %s", " ".join(map(str, command)))
    _run_logged(command, log_path)
    best = out_dir / BEST
    if not best.is_file():
        raise RuntimeError(f"{best}: training finished without a best checkpoint; see {log_path or 'the log'}")
    tmp = model_path.with_name(model_path.name + ".tmp")
    shutil.copyfile(best, tmp)
    os.replace(tmp, model_path)
    return model_path


def _run_logged(command: list, log_path: Path | str | None) -> None:
    """Run a training command, its output appended to the job's log (or this process's stderr)."""
    if log_path is None:
        status = subprocess.run(list(map(str, command))).returncode
        if status != 0:  # the training process has printed its own one-line error above
            raise RuntimeError(f"training exited with status {status} (its error is printed above)")
        return
    with open(log_path, "a") as sink:
        result = subprocess.run(list(map(str, command)), stdout=sink, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = Path(log_path).read_text().splitlines()[-LOG_TAIL_LINES:]
        raise RuntimeError(f"training exited with status {result.returncode}; last lines of {log_path}:\n"
                           + "\n".join(tail))
