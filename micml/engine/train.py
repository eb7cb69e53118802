"""Training loop: one model on one unified dataset, resumable, single process or under torchrun.

    train(config, dataset_root, out_dir, *, fresh=False, validate=None, progress=None) -> best.pt

Writes into `out_dir`: `last.pt` (every epoch, and every `checkpoint_every` iterations),
`best.pt` (best validation F1; the test split is never read), `log.csv` (one row per logged
iteration and per validation), `provenance.json` (resolved config, versions, seed, git
commit, host, device, one entry per start or resume) and `run.json` (the run's identity:
everything that changes its result, see `run_identity`).

A run resumes from `last.pt` only when its identity equals the one asked for; otherwise it stops
and names the settings that differ. `fresh=True` (`--fresh`) starts again and moves the earlier
run's files to `out_dir/superseded/<its fingerprint>/`: nothing is deleted.

Command line (what the workflow rule and `micml train` run; see `launch_command` for torchrun):
    python -m micml.engine.train --config train.yaml --data results/data/rscar --out results/rscar/dsfnet/checkpoints
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import json
import logging
import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

import micml
from micml.data.clips import Augmentation, ClipDataset, as_size, collate_clips, normalisation_for_weights
from micml.engine.checkpoint import (
    FORMAT,
    CheckpointError,
    build_model,
    capture_rng_state,
    error_summary,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from micml.engine.distributed import (
    DistContext,
    barrier,
    init_distributed,
    shutdown,
    sum_over_processes,
    unwrap,
    wrap_model,
)
from micml.engine.losses import CenterNetLoss
from micml.machine import cpu_model
from micml.precision import AMP_DTYPES, autocast, channels_last_weights, compiled, tune_cudnn

log = logging.getLogger("micml.engine")

LAST, BEST, LOG_CSV, PROVENANCE, RUN_IDENTITY = "last.pt", "best.pt", "log.csv", "provenance.json", "run.json"
SUPERSEDED = "superseded"
# Settings of the machine and of the logs, not of the experiment: a run killed on one machine may
# resume with other cores, workers or devices (they change float rounding, not what is trained).
MACHINE_KEYS = ("device", "threads", "num_workers", "progress", "log_interval", "checkpoint_every")
LOSS_NAMES = ("hm", "wh", "reg", "total")
TARGET_KEYS = ("hm", "wh", "reg", "ind", "reg_mask")

# Defaults: the paper's optimisation profile (Adam 1.25e-4, x0.1 after epochs 30 and 45, 55
# epochs, validation every 5) with a crop and batch a 2-core CPU can afford (the paper: 512, 2).
DEFAULTS: dict = {
    "model": "dsfnet",              # micml.models variant, or a model registered by one of `plugins`
    "plugins": [],                  # modules imported before the model is built (they call micml.models.register)
    "model_options": {},            # keyword arguments of the builder (e.g. pretrained, head_conv)
    "crop_size": 96,                # training crop, int or [h, w], multiple of 16 (paper: 512)
    "batch_size": 4,                # global batch per optimiser step, split over torchrun processes
    "epochs": 55,
    "iters_per_epoch": None,        # iterations per epoch; null: epoch_fraction of a full pass
    "epoch_fraction": 1.0,          # with iters_per_epoch null; the reference used 0.05 (len(loader)//20)
    "lr": 1.25e-4,
    "lr_steps": [30, 45],           # lr *= lr_factor after each of these epochs
    "lr_factor": 0.1,
    "grad_clip": None,              # max gradient L2 norm, or null for none (the reference: none)
    "val_interval": 5,              # validate every N epochs and after the last; 0: never (best = last)
    "val_crop_size": None,          # null: full frames; int or [h, w]: fixed centre crop
    "val_max_frames": None,         # null: every val frame; N: N evenly spaced frames
    "val_score_threshold": 0.3,
    "val_top_k": 100,
    "val_iou_threshold": 0.0,
    "augment": {"hflip": 0.5, "vflip": 0.5, "photometric": True},
    "object_crop_prob": 0.5,        # chance that a training crop is placed around a random object
    "max_objects": 256,             # K target slots per frame
    "num_workers": 2,
    "seed": 317,
    "device": "auto",               # auto | cpu | cuda
    "amp": "off",                   # off | bf16 | fp16 (CUDA only; ignored with a warning on CPU)
    "channels_last": False,         # CUDA only
    "sync_batchnorm": False,        # under torchrun with CUDA
    "compile": False,               # torch.compile the training network (float rounding differs slightly)
    "find_unused_parameters": False,  # DDP; see micml.engine.distributed.wrap_model
    "threads": None,                # torch CPU threads; null: torch's default
    "checkpoint_every": None,       # also write last.pt every N iterations inside an epoch
    "log_interval": 1,              # log.csv row every N iterations
    "progress": "auto",             # auto (when stderr is a terminal) | true | false
}

class TrainingError(RuntimeError):
    """Training cannot go on; the message says where it stopped and what to do."""


class NonFiniteLossError(TrainingError):
    pass


class StaleRunError(TrainingError):
    """The output folder holds a run of other settings; resuming it would mislabel the result."""

    def __init__(self, message: str, differences: str = ""):
        super().__init__(message)
        self.differences = differences or message


# --------------------------------------------------------------------------- configuration


def resolve_config(config: Mapping | None) -> dict:
    """Defaults filled in, unknown keys and invalid values rejected with the key named."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"training config: unknown keys {unknown}; valid keys: {sorted(DEFAULTS)}")
    resolved = {**DEFAULTS, **config}
    resolved["model_options"] = dict(resolved["model_options"] or {})
    resolved["lr_steps"] = [int(step) for step in resolved["lr_steps"] or []]
    _check_size(resolved, "crop_size", required=True)
    _check_size(resolved, "val_crop_size", required=False)
    for key in ("batch_size", "epochs", "val_top_k", "max_objects", "log_interval"):
        _check_int(resolved, key, minimum=1)
    for key in ("val_interval", "num_workers", "seed"):
        _check_int(resolved, key, minimum=0)
    for key in ("iters_per_epoch", "val_max_frames", "checkpoint_every", "threads"):
        if resolved[key] is not None:
            _check_int(resolved, key, minimum=1)
    _check_choice(resolved, "device", ("auto", "cpu", "cuda"))
    _check_choice(resolved, "amp", tuple(AMP_DTYPES))
    _check_choice(resolved, "progress", ("auto", True, False))
    if not 0 < float(resolved["epoch_fraction"]) <= 1:
        raise ValueError(f"training config: epoch_fraction must be in (0, 1], found {resolved['epoch_fraction']}")
    if not float(resolved["lr"]) > 0 or not float(resolved["lr_factor"]) > 0:
        raise ValueError("training config: lr and lr_factor must be > 0")
    if resolved["grad_clip"] is not None and not float(resolved["grad_clip"]) > 0:
        raise ValueError(f"training config: grad_clip must be null or > 0, found {resolved['grad_clip']}")
    try:
        Augmentation.from_config(resolved["augment"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"training config: {error}") from None
    if not isinstance(resolved["model"], str) or not resolved["model"]:
        raise ValueError(f"training config: model must be a variant name, found {resolved['model']!r}")
    plugins = resolved["plugins"] = list(resolved["plugins"] or [])
    if not all(isinstance(name, str) and name for name in plugins):
        raise ValueError(f"training config: plugins must be a list of module names, found {plugins!r}")
    return resolved


def _check_size(config: dict, key: str, *, required: bool) -> None:
    value = config[key]
    if value is None and not required:
        return
    try:
        size = as_size(value)
    except (TypeError, ValueError):
        size = None
    if size is None or any(not isinstance(s, int) or s <= 0 or s % 16 for s in size):
        raise ValueError(f"training config: {key} must be a positive multiple of 16 (int or [height, width]; "
                         f"the network halves the resolution four times), found {value!r}")
    config[key] = list(size)


def _check_int(config: dict, key: str, *, minimum: int) -> None:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"training config: {key} must be an integer >= {minimum}, found {value!r}")


def _check_choice(config: dict, key: str, choices: tuple) -> None:
    if config[key] not in choices:
        raise ValueError(f"training config: {key} must be one of {choices}, found {config[key]!r}")


def lr_at_epoch(config: Mapping, epoch: int) -> float:
    """lr of 1-based `epoch`: lr * factor^(number of lr_steps already finished)."""
    finished = sum(1 for step in config["lr_steps"] if step < epoch)
    return float(config["lr"]) * float(config["lr_factor"]) ** finished


def iterations_per_epoch(config: Mapping, n_samples: int) -> int:
    """Explicit `iters_per_epoch`, else `epoch_fraction` of the full passes a drop-last loader makes."""
    if config["iters_per_epoch"] is not None:
        return int(config["iters_per_epoch"])
    full = n_samples // config["batch_size"]
    return max(1, math.floor(full * float(config["epoch_fraction"]) + 1e-9))


# --------------------------------------------------------------------------- sampling


class EpochSampler(Sampler[int]):
    """The sample order of one epoch for one process.

    DistributedSampler's rule (a permutation from a generator seeded with seed + epoch; process r
    takes every world_size-th index from r) extended with what the loop needs: a fixed number of
    iterations (more than one pass chains further permutations, fewer takes a prefix) and a
    start offset, so that a run resumed mid-epoch continues with the very batches it would
    have drawn.
    """

    def __init__(self, n_samples: int, *, batch_size: int, iterations: int, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1, start_iteration: int = 0):
        self.n_samples, self.batch_size, self.iterations = n_samples, batch_size, iterations
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.start_iteration = start_iteration

    def global_order(self) -> list[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        needed = self.iterations * self.batch_size * self.world_size
        order: list[int] = []
        while len(order) < needed:
            order.extend(torch.randperm(self.n_samples, generator=generator).tolist())
        return order[:needed]

    def __iter__(self) -> Iterator[int]:
        mine = self.global_order()[self.rank::self.world_size]
        return iter(mine[self.start_iteration * self.batch_size:])

    def __len__(self) -> int:
        return (self.iterations - self.start_iteration) * self.batch_size


# --------------------------------------------------------------------------- validation


def decode_detections(output: Mapping[str, torch.Tensor], top_k: int = 100) -> list[np.ndarray]:
    """Per image N x 5 [x1, y1, x2, y2, score]: 3x3 max-pool peaks, top-K, box = peak + reg -+ wh/2."""
    heat = torch.sigmoid(output["hm"].float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    batch, _, height, width = heat.shape
    scores, index = peaks.reshape(batch, -1).topk(min(top_k, height * width))
    ys, xs = (index // width).float(), (index % width).float()
    wh = output["wh"].float().reshape(batch, 2, -1).gather(2, index.unsqueeze(1).expand(-1, 2, -1))
    reg = output["reg"].float().reshape(batch, 2, -1).gather(2, index.unsqueeze(1).expand(-1, 2, -1))
    cx, cy = xs + reg[:, 0], ys + reg[:, 1]
    boxes = torch.stack([cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2, scores], 2)
    return list(boxes.cpu().numpy())


def pooled_f1(detections: Mapping, ground_truth: Mapping, *, iou_threshold: float = 0.0,
              score_threshold: float = 0.3) -> dict[str, float]:
    """The `mean` row of `micml.evaluation.dsfnet_f1`: P, R and F1 averaged over videos (counts
    pooled per video; Hungarian matching on IoU, a match when IoU > `iou_threshold`)."""
    from micml.evaluation import dsfnet_f1  # late: pandas and friends are not needed to train

    table = dsfnet_f1(detections, ground_truth, iou_threshold=iou_threshold, score_threshold=score_threshold)
    mean = table.loc["mean"]
    return {name: float(mean[name]) for name in ("precision", "recall", "f1", "tp", "fp", "fn")}


Validator = Callable[[nn.Module, ClipDataset, torch.device], Mapping[str, float]]


def make_f1_validator(config: Mapping) -> Validator:
    """The built-in validation: decode every val clip, score with the DSFNet F1 protocol."""

    def validate(model: nn.Module, dataset: ClipDataset, device: torch.device) -> dict[str, float]:
        loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=config["num_workers"],
                            collate_fn=collate_clips)
        detections: dict = {}
        ground_truth: dict = {}
        with torch.inference_mode(), autocast(device, amp_on(device, config["amp"])):
            for batch in loader:
                output = model(batch["input"].to(device))
                for video, frame, boxes, dets in zip(batch["video"], batch["frame"], batch["boxes"],
                                                     decode_detections(output, config["val_top_k"])):
                    detections.setdefault(video, {})[frame] = dets
                    ground_truth.setdefault(video, {})[frame] = boxes
        return pooled_f1(detections, ground_truth, iou_threshold=config["val_iou_threshold"],
                         score_threshold=config["val_score_threshold"])

    return validate


# --------------------------------------------------------------------------- logging and provenance


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
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)

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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- run identity


def run_identity(config: Mapping, dataset_root: Path) -> dict:
    """Everything that changes what a run trains: the resolved training settings (model variant,
    options, schedule, crops, augmentation, seed...) less `MACHINE_KEYS`, the dataset's
    fingerprint and micml's version (not the git commit: a documentation commit must not
    orphan a week of training)."""
    from micml.data.unified import UnifiedDataset

    training = {key: value for key, value in config.items() if key not in MACHINE_KEYS}
    return json.loads(json.dumps({"training": training, "dataset": UnifiedDataset(dataset_root).fingerprint(),
                                  "micml": micml.__version__}))


def identity_fingerprint(identity: Mapping) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def read_identity(out_dir: Path) -> dict | None:
    """The identity recorded in `out_dir/run.json`; None where no run has started there."""
    path = out_dir / RUN_IDENTITY
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["identity"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StaleRunError(f"{path}: unreadable ({error_summary(error)}); start afresh with --fresh "
                            "(the earlier files are moved aside) or use another output folder") from None


def write_identity(out_dir: Path, identity: Mapping) -> None:
    document = {"fingerprint": identity_fingerprint(identity), "identity": dict(identity)}
    tmp = out_dir / f".{RUN_IDENTITY}.tmp"
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True))
    os.replace(tmp, out_dir / RUN_IDENTITY)


def identity_changes(recorded: Mapping, asked: Mapping, prefix: str = "") -> list[str]:
    """'key: recorded -> asked' for every leaf that differs (nested keys joined with '.')."""
    changes = []
    for key in sorted(set(recorded) | set(asked), key=str):
        old, new = recorded.get(key, "<unset>"), asked.get(key, "<unset>")
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes += identity_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {_short(old)} -> {_short(new)}")
    return changes


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def earlier_run_files(out_dir: Path) -> list[Path]:
    names = (LAST, BEST, LOG_CSV, PROVENANCE, RUN_IDENTITY)
    return [out_dir / name for name in names if (out_dir / name).exists()]


def check_resumable(out_dir: Path, identity: Mapping) -> bool:
    """Whether `out_dir` holds this very run to resume; StaleRunError when it holds another."""
    files = earlier_run_files(out_dir)
    if not files:
        return False
    recorded = read_identity(out_dir)
    how = ("It was not resumed. Start afresh with --fresh (micml train; the earlier files are moved to "
           f"{out_dir / SUPERSEDED}/<fingerprint>/, nothing is deleted) or use another output folder.")
    if recorded is None:
        what = f"{out_dir}: holds {', '.join(p.name for p in files)} of a run whose settings were not recorded"
        raise StaleRunError(f"{what} (no {RUN_IDENTITY}). {how}", what)
    changes = identity_changes(recorded, identity)
    if changes:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise StaleRunError(f"{out_dir}: holds a run with other settings ({shown}). {how}",
                            f"{out_dir}: holds a run with other settings ({shown})")
    return (out_dir / LAST).exists()


def supersede_earlier_run(out_dir: Path) -> Path | None:
    """Move an earlier run's files to out_dir/superseded/<fingerprint>/ (never delete a run)."""
    files = earlier_run_files(out_dir)
    if not files:
        return None
    try:
        label = identity_fingerprint(read_identity(out_dir) or {})[:12]
    except StaleRunError:
        label = "unrecorded"
    target = out_dir / SUPERSEDED / label
    if target.exists():  # the same settings superseded before
        target = target.with_name(f"{label}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    target.mkdir(parents=True)
    for path in files:
        os.replace(path, target / path.name)
    log.warning("starting afresh: the earlier run's files (%s) moved to %s", ", ".join(p.name for p in files), target)
    return target


def resumable(out_dir: Path, identity: Mapping, *, fresh: bool, supersede_other: bool,
              context: DistContext) -> bool:
    """Whether to resume `out_dir/last.pt`. An earlier run that is not resumed is moved aside
    (`fresh`; `supersede_other` for one of other settings; the same settings stopped before a
    last.pt, whose log alone is left) or refused (StaleRunError)."""
    if not fresh:
        try:
            if check_resumable(out_dir, identity):
                return True
        except StaleRunError as error:
            if not supersede_other:
                raise
            log.warning("%s: not resumed, training afresh", error.differences)
    barrier(context)  # every rank has decided before the main one moves the files
    if context.is_main:
        supersede_earlier_run(out_dir)
    return False


def import_plugins(names: Sequence[str]) -> None:
    """Import the modules a training config names; they register custom models. (The training
    config is code its author chose; a checkpoint never imports anything.)"""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ValueError(f"training config: plugin module {name!r} cannot be imported ({error}); "
                             "put it on PYTHONPATH or remove it from plugins") from None


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainState:
    epoch: int = 0          # completed epochs
    iteration: int = 0      # completed iterations of epoch + 1
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    last_val: dict = field(default_factory=dict)
    train_seconds: float = 0.0  # wall time of the training iterations so far, resumed runs included


def train(config: Mapping, dataset_root: Path | str, out_dir: Path | str, *, fresh: bool = False,
          supersede_other: bool = False, validate: Validator | None = None, progress: bool | None = None) -> Path:
    """Train `config['model']` on the train split of `dataset_root`; return `out_dir/best.pt`.

    A run of the same identity in `out_dir` is continued from its `last.pt` (epoch, iteration,
    optimizer, lr, RNG and best metric continue); a run of another identity is a StaleRunError.
    `fresh`: start again, the earlier run's files moved to `out_dir/superseded/`. `supersede_other`:
    resume a run of the same identity, but move one of another identity aside instead of refusing
    (the workflow: its config is the truth, and Snakemake reruns the job because a setting
    changed). `validate(model,
    val dataset, device) -> {'f1': ..., ...}` replaces the built-in F1 validation. `progress`
    overrides the config's progress setting.
    """
    config = resolve_config(config)
    if progress is not None:
        config["progress"] = bool(progress)
    context = init_distributed(config["device"])
    try:
        best = _train(config, Path(dataset_root), Path(out_dir), fresh, supersede_other, validate, context)
    except BaseException:
        shutdown(context, wait=False)
        raise
    shutdown(context)
    return best


def _train(config: dict, dataset_root: Path, out_dir: Path, fresh: bool, supersede_other: bool,
           validate: Validator | None, context: DistContext) -> Path:
    if config["batch_size"] % context.world_size:
        raise ValueError(f"training config: batch_size {config['batch_size']} (global) is not divisible by "
                         f"the {context.world_size} processes; pick a multiple of {context.world_size}")
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    seed_everything(config["seed"])
    effective = effective_settings(config, context.device)
    tune_cudnn(context.device)

    train_set = ClipDataset(dataset_root, "train", train=True, crop_size=config["crop_size"], seed=config["seed"],
                            augment=config["augment"], object_crop_prob=config["object_crop_prob"],
                            max_objects=config["max_objects"], normalisation=model_normalisation(config))
    if len(train_set) == 0:
        raise TrainingError(f"{dataset_root}: the train split has no frames; check the conversion")
    val_set = make_val_set(config, dataset_root)

    import_plugins(config["plugins"])
    model = build_model(config["model"], config["model_options"]).to(context.device)
    if effective["channels_last"]:
        model = channels_last_weights(model)  # .to(memory_format=...) refuses the 5-D Conv3d weights
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    scaler = torch.amp.GradScaler("cuda", enabled=effective["amp"] == "fp16")

    state, resumed_from = TrainState(), None
    identity = run_identity(config, dataset_root)
    fingerprint = identity_fingerprint(identity)
    last_path = out_dir / LAST
    if resumable(out_dir, identity, fresh=fresh, supersede_other=supersede_other, context=context):
        state = restore(last_path, fingerprint, model, optimizer, scaler, context.device)
        resumed_from = {"epoch": state.epoch, "iteration": state.iteration, "step": state.global_step}
        log.info("resuming %s at epoch %d, iteration %d (step %d)", last_path, state.epoch + 1,
                 state.iteration, state.global_step)
    csv_log = None
    if context.is_main:
        write_identity(out_dir, identity)
        csv_log = CsvLog(out_dir / LOG_CSV, keep_up_to_step=state.global_step if resumed_from else None)
        write_provenance(out_dir, config, dataset_root,
                         run_record(context, effective, resumed_from), fresh=resumed_from is None)

    network = wrap_model(model, context, sync_batchnorm=config["sync_batchnorm"],
                         find_unused_parameters=config["find_unused_parameters"])
    network = compiled(network, config["compile"])
    loop = Loop(config, context, effective, model, network, optimizer, scaler, train_set, val_set,
                validate or make_f1_validator(config), out_dir, csv_log, state, fingerprint)
    loop.run()
    return out_dir / BEST


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def amp_on(device: torch.device, amp: str) -> str:
    """The autocast choice training applies on `device`: `amp` on CUDA, "off" elsewhere."""
    return amp if device.type == "cuda" else "off"


def effective_settings(config: Mapping, device: torch.device) -> dict:
    """AMP and channels_last apply on CUDA only; a CPU run ignores them with a warning, so one
    experiment config runs on both kinds of machine."""
    cuda = device.type == "cuda"
    for key, off in (("amp", "off"), ("channels_last", False)):
        if config[key] != off and not cuda:
            log.warning("%s=%r needs CUDA; running on %s without it", key, config[key], device)
    return {"amp": amp_on(device, config["amp"]), "channels_last": bool(config["channels_last"]) and cuda}


def model_normalisation(config: Mapping):
    """The input normalisation of the model: it follows the weights the backbone starts from."""
    return normalisation_for_weights(config["model_options"].get("pretrained"))


def make_val_set(config: Mapping, dataset_root: Path) -> ClipDataset | None:
    if not config["val_interval"]:
        return None
    val_set = ClipDataset(dataset_root, "val", train=False, crop_size=config["val_crop_size"],
                          max_objects=config["max_objects"], max_frames=config["val_max_frames"],
                          normalisation=model_normalisation(config))
    if len(val_set) == 0:
        raise TrainingError(
            f"{dataset_root}: the val split has no frames, and the best checkpoint is chosen on val "
            "(never on test). Re-convert the dataset with a validation hold-out, or set val_interval: 0 "
            "to train without validation (best.pt is then the last epoch)")
    return val_set


def restore(path: Path, fingerprint: str, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, device: torch.device) -> TrainState:
    checkpoint = load_checkpoint(path, map_location=device)
    if checkpoint.get("run") != fingerprint:  # a last.pt copied in from another run
        raise StaleRunError(f"{path}: belongs to run {str(checkpoint.get('run'))[:12]}, not to the run recorded in "
                            f"{path.parent / RUN_IDENTITY} ({fingerprint[:12]}); it was not resumed. Start afresh "
                            "with --fresh or use another output folder.")
    model.load_state_dict(checkpoint["state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    restore_rng_state(checkpoint["rng"])
    best = checkpoint["best"]
    return TrainState(checkpoint["epoch"], checkpoint["iteration"], checkpoint["global_step"],
                      best["value"], best["epoch"], dict(checkpoint.get("val") or {}),
                      float(checkpoint["training"]["seconds"]))


class Loop:
    """The epoch/iteration loop; its attributes are what a checkpoint saves."""

    def __init__(self, config, context, effective, model, network, optimizer, scaler, train_set, val_set,
                 validate, out_dir, csv_log, state, fingerprint):
        self.config, self.context, self.effective = config, context, effective
        self.model, self.network, self.optimizer, self.scaler = model, network, optimizer, scaler
        self.train_set, self.val_set, self.validate = train_set, val_set, validate
        self.out_dir, self.csv_log, self.state, self.fingerprint = out_dir, csv_log, state, fingerprint
        self.loss_fn = CenterNetLoss()
        self.amp = effective["amp"]
        self.iterations = iterations_per_epoch(config, len(train_set))
        self.per_process_batch = config["batch_size"] // context.world_size

    def run(self) -> None:
        log.info("training %s: %d epochs x %d iterations, batch %d, crop %s, on %s x%d",
                 self.config["model"], self.config["epochs"], self.iterations, self.config["batch_size"],
                 self.config["crop_size"], self.context.device, self.context.world_size)
        for epoch in range(self.state.epoch + 1, self.config["epochs"] + 1):
            self.train_epoch(epoch)
            self.state.epoch, self.state.iteration = epoch, 0
            if self.validation_due(epoch):
                self.run_validation(epoch)
            if self.context.is_main:
                save_checkpoint(self.out_dir / LAST, self.checkpoint(with_optimizer=True))
            barrier(self.context)
        if self.context.is_main and not (self.out_dir / BEST).exists():
            # No validation ever ran (val_interval 0): the last weights are the only candidate.
            log.warning("no validation ran; %s holds the last epoch's weights", BEST)
            save_checkpoint(self.out_dir / BEST, self.checkpoint(with_optimizer=False))
        if self.context.is_main:
            self.record_budget_in_best()

    def record_budget_in_best(self) -> None:
        """best.pt was written at its epoch, before the run spent its whole budget: it gets the
        run's totals (what models are compared at) and keeps the step of its own weights."""
        best = load_checkpoint(self.out_dir / BEST)
        weights_step = best["training"].get("best_step", best["training"]["steps"])
        best["training"] = {**self.budget(), "best_step": weights_step}
        save_checkpoint(self.out_dir / BEST, best)

    def validation_due(self, epoch: int) -> bool:
        interval = self.config["val_interval"]
        return bool(interval) and (epoch % interval == 0 or epoch == self.config["epochs"])

    def train_epoch(self, epoch: int) -> None:
        lr = lr_at_epoch(self.config, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.train_set.set_epoch(epoch)
        start = self.state.iteration
        sampler = EpochSampler(len(self.train_set), batch_size=self.per_process_batch, iterations=self.iterations,
                               seed=self.config["seed"], epoch=epoch, rank=self.context.rank,
                               world_size=self.context.world_size, start_iteration=start)
        loader = DataLoader(self.train_set, batch_size=self.per_process_batch, sampler=sampler,
                            num_workers=self.config["num_workers"], collate_fn=collate_clips,
                            pin_memory=self.context.device.type == "cuda")
        bar = tqdm(total=self.iterations, initial=start, desc=f"epoch {epoch}/{self.config['epochs']}",
                   file=sys.stderr, disable=not self.show_progress(), dynamic_ncols=True, leave=False)
        self.network.train()
        dropped_in_epoch = 0
        tick = time.perf_counter()
        for iteration, batch in enumerate(loader, start=start + 1):
            losses, dropped = self.step(batch, epoch, iteration)
            self.state.iteration, self.state.global_step = iteration, self.state.global_step + 1
            dropped_in_epoch += dropped
            seconds, tick = time.perf_counter() - tick, time.perf_counter()
            self.state.train_seconds += seconds
            bar.update(1)
            bar.set_postfix(loss=f"{losses['total']:.4f}", refresh=False)
            if self.csv_log and (iteration % self.config["log_interval"] == 0 or iteration == self.iterations):
                self.csv_log.write(kind="train", epoch=epoch, iteration=iteration, step=self.state.global_step,
                                   lr=lr, dropped_objects=dropped, seconds=seconds, **losses)
            every = self.config["checkpoint_every"]
            if every and self.context.is_main and self.state.global_step % every == 0 and iteration < self.iterations:
                save_checkpoint(self.out_dir / LAST, self.checkpoint(with_optimizer=True))
        bar.close()
        if dropped_in_epoch:
            log.warning("epoch %d: %d objects had no target slot because a frame held more than max_objects=%d "
                        "boxes (they stay on the heat map but get no size/offset loss); raise max_objects",
                        epoch, dropped_in_epoch, self.config["max_objects"])

    def step(self, batch: dict, epoch: int, iteration: int) -> tuple[dict[str, float], int]:
        device = self.context.device
        inputs = batch["input"].to(device, non_blocking=True)
        targets = {key: batch[key].to(device, non_blocking=True) for key in TARGET_KEYS}
        with autocast(device, self.amp):
            output = self.network(inputs)
        losses = self.loss_fn(output, targets)
        values = self.agreed_values(losses, batch["n_dropped"])
        if not all(math.isfinite(values[name]) for name in LOSS_NAMES):
            raise self.non_finite_error(epoch, iteration, values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        if self.config["grad_clip"]:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.config["grad_clip"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        dropped = int(values.pop("dropped"))
        return values, dropped

    def agreed_values(self, losses: dict[str, torch.Tensor], dropped: int) -> dict[str, float]:
        """Loss parts averaged over processes (and dropped objects summed), identical on every rank,
        so that a non-finite loss on one process stops all of them together."""
        stacked = torch.stack([losses[name].detach().float() for name in LOSS_NAMES]
                              + [torch.tensor(float(dropped), device=losses["total"].device)])
        summed = sum_over_processes(stacked, self.context).tolist()
        values = {name: summed[i] / self.context.world_size for i, name in enumerate(LOSS_NAMES)}
        values["dropped"] = summed[-1]
        return values

    def non_finite_error(self, epoch: int, iteration: int, values: dict[str, float]) -> NonFiniteLossError:
        parts = ", ".join(f"{name}={values[name]:.6g}" for name in LOSS_NAMES)
        last = self.out_dir / LAST
        where = f"{last} (epoch {self.state.epoch}, iteration {self.state.iteration})" if last.exists() else "none yet"
        return NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, iteration {iteration} (global step {self.state.global_step + 1}): "
            f"{parts}. The weights were not updated with it; last good checkpoint: {where}. "
            "Lower lr, set grad_clip, or check the frames and boxes of this dataset.")

    def run_validation(self, epoch: int) -> None:
        if self.context.is_main:
            tick = time.perf_counter()
            self.model.eval()
            result = self.validate(self.model, self.val_set, self.context.device)
            metrics = {key: float(value) for key, value in result.items()}
            self.model.train()
            if "f1" not in metrics:
                raise TrainingError(f"the validation function returned {sorted(metrics)}; it must return an 'f1' key")
            self.state.last_val = metrics
            log.info("epoch %d validation: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            self.csv_log.write(kind="val", epoch=epoch, iteration=self.state.iteration, step=self.state.global_step,
                               lr=lr_at_epoch(self.config, epoch), seconds=time.perf_counter() - tick,
                               **{k: metrics.get(k) for k in ("precision", "recall", "f1")})
            if self.state.best_value is None or metrics["f1"] > self.state.best_value:
                self.state.best_value, self.state.best_epoch = metrics["f1"], epoch
                save_checkpoint(self.out_dir / BEST, self.checkpoint(with_optimizer=False))
        barrier(self.context)

    def checkpoint(self, *, with_optimizer: bool) -> dict:
        checkpoint = {
            "format": FORMAT,
            "model": {"name": self.config["model"], "options": self.config["model_options"],
                      "config": _plain_or_none(getattr(self.model, "config", None))},
            "state_dict": self.model.state_dict(),
            "normalisation": model_normalisation(self.config).as_dict(),  # what test and detect feed it
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch": self.state.epoch,
            "iteration": self.state.iteration,
            "global_step": self.state.global_step,
            "best": {"metric": "f1", "value": self.state.best_value, "epoch": self.state.best_epoch},
            "val": dict(self.state.last_val),
            "config": dict(self.config),
            "run": self.fingerprint,
            "training": self.budget(),
        }
        if with_optimizer:
            checkpoint["optimizer"] = self.optimizer.state_dict()
            checkpoint["rng"] = capture_rng_state()
            if self.scaler.is_enabled():
                checkpoint["scaler"] = self.scaler.state_dict()
        return checkpoint

    def budget(self) -> dict:
        """What this run has spent so far and where: tables compare models at stated budgets, and
        a score is only reproducible on the same CPU kind and thread count. (best.pt gets the
        totals when the run ends, and `best_step`, the step of its own weights.)"""
        return {"seed": self.config["seed"], "steps": self.state.global_step,
                "samples": self.state.global_step * self.config["batch_size"],
                "seconds": round(self.state.train_seconds, 3), "device": device_name(self.context.device),
                "processes": self.context.world_size, "threads": torch.get_num_threads(), "torch": str(torch.__version__)}

    def show_progress(self) -> bool:
        setting = self.config["progress"]
        return self.context.is_main and (sys.stderr.isatty() if setting == "auto" else bool(setting))


def _plain_or_none(value):
    """Only JSON-like values go into a checkpoint (torch.load(weights_only=True) must read it)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- command line


def read_config_file(path: Path | str) -> dict:
    """A YAML or JSON mapping (JSON is YAML); a `train:` section is used when present."""
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the training config ({error})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping of training settings, found {type(document).__name__}")
    return dict(document.get("train", document))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m micml.engine.train",
        description="Train one micml model on one unified dataset (resumes from OUT/last.pt). "
                    "For several GPUs run it under torchrun (micml.engine.distributed.launch_command).")
    parser.add_argument("--config", required=True,
                        help="YAML/JSON file of training settings (keys and defaults: DEFAULTS in micml/engine/train.py)")
    parser.add_argument("--data", required=True, help="unified dataset folder (results/data/<dataset>)")
    parser.add_argument("--out", required=True, help="output folder for last.pt, best.pt, log.csv, provenance.json")
    parser.add_argument("--fresh", action="store_true",
                        help="start again; an earlier run in OUT is moved to OUT/superseded/ (never deleted)")
    parser.add_argument("--supersede-other", action="store_true",
                        help="resume a run of the same settings, move one of other settings to OUT/superseded/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", stream=sys.stderr)
    try:
        best = train(read_config_file(args.config), args.data, args.out, fresh=args.fresh,
                     supersede_other=args.supersede_other, progress=False if args.no_progress else None)
    except (ValueError, OSError, CheckpointError, TrainingError) as error:  # ours name the file and the fix
        # One line, not a traceback: `micml train` and the workflow's log show it as the error.
        # (Other errors, torch's included, keep their traceback: they are bugs to report.)
        print(f"micml train [rank {rank}]: {error}", file=sys.stderr)
        return 1
    if rank == 0:
        print(best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
