"""Start a training run the way the workflow does: in this process, or torchrun over N GPUs.

The workflow's `train` rule and `micml train` both call `run_training`. The run writes its
resumable state (last.pt, log.csv, provenance.json, run.json) into `out_dir`, which is not a
declared Snakemake output, so a killed job restarts where it stopped; only when training
finished is the best checkpoint copied to the declared output.

Settings are layered, later layers winning: micml's defaults < the config file's `training`
section < its `per_model` entry for the model < `overrides` (the command line's `--set`).
The workflow's `pretrained` key (null | imagenet | a path, see `micml.weights`) becomes the
model's `pretrained` build option, `imagenet` the path of the ImageNet weights file.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

import yaml

from micml.engine.config import TrainingConfig
from micml.engine.distributed import launch_command
from micml.engine.records import BEST
from micml.engine.train import train
from micml.io import atomic_write, write_text
from micml.weights import IMAGENET_WEIGHTS, pretrained_choice, resolve_pretrained

log = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"
LOG_TAIL_LINES = 25


def model_training_config(training: Mapping, model: str, *, overrides: Mapping | None = None,
                          threads: int | None = None, weights: Path | str = IMAGENET_WEIGHTS) -> TrainingConfig:
    """The workflow's `training` section for one variant: shared keys, its per_model entry, then
    `overrides`; `threads` (the job's CPU share, a machine setting) sets torch's thread count.
    `pretrained: imagenet` names `weights` (checked against its recorded sha256). The settings are
    checked here, once: the run takes the TrainingConfig as it is."""
    shared = {key: value for key, value in training.items() if key != "per_model"}
    per_model = dict((training.get("per_model") or {}).get(model, {}))
    machine = {} if threads is None else {"threads": threads}
    layered = {**shared, **per_model, **machine, **dict(overrides or {}), "model": model}
    if "pretrained" in layered:
        layered.pop("pretrained")
        pretrained = resolve_pretrained(pretrained_choice(training, model, overrides), weights)
        if pretrained is not None:
            layered["model_options"] = {**(layered.get("model_options") or {}), "pretrained": pretrained}
    return TrainingConfig.from_mapping(layered)


def run_training(training: Mapping, model: str, dataset_root: Path | str, out_dir: Path | str,
                 model_path: Path | str, *, nproc: int = 0, threads: int | None = None,
                 overrides: Mapping | None = None, fresh: bool = False, supersede_other: bool = False,
                 log_path: Path | str | None = None) -> Path:
    """Train `model` on a unified dataset; copy the best checkpoint to `model_path`.

    `nproc` is the number of GPUs granted (0 or 1: this process, no subprocess; N > 1: torchrun
    with N, each process reading the settings from `out_dir/config.yaml`).
    `fresh` and `supersede_other` are `micml.engine.train.train`'s.
    """
    out_dir, model_path = Path(out_dir), Path(model_path)
    # The job's threads are shared by the torchrun processes, one per GPU: each taking all of
    # them would oversubscribe the CPUs the cluster granted (sbatch --cpus-per-task).
    per_process = None if threads is None else max(1, threads // max(1, nproc))
    config = model_training_config(training, model, overrides=overrides, threads=per_process)  # bad settings fail here
    if nproc <= 1:
        best = train(config, dataset_root, out_dir, fresh=fresh, supersede_other=supersede_other)
    else:
        best = _run_torchrun(config, nproc, dataset_root, out_dir, fresh, supersede_other, log_path)
    with open(best, "rb") as source:
        atomic_write(model_path, lambda target: shutil.copyfileobj(source, target))
    return model_path


def _run_torchrun(config: TrainingConfig, nproc: int, dataset_root: Path | str, out_dir: Path, fresh: bool,
                  supersede_other: bool, log_path: Path | str | None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / RUN_CONFIG
    write_text(config_path, yaml.safe_dump(config.as_dict(), sort_keys=True))
    flags = ["--fresh"] * fresh + ["--supersede-other"] * supersede_other
    command = launch_command(nproc, ["--config", config_path, "--data", dataset_root, "--out", out_dir,
                                     "--no-progress", *flags])
    log.info("running: %s", " ".join(map(str, command)))
    _run_logged(command, log_path)
    best = out_dir / BEST
    if not best.is_file():
        raise RuntimeError(f"{best}: training finished without a best checkpoint; see {log_path or 'the log'}")
    return best


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
