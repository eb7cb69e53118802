"""Resuming: a run's identity (run.json), whether `last.pt` may be continued, and the state it restores.

A run resumes from `last.pt` only when its identity equals the one asked for; otherwise it stops
and names the settings that differ. Starting afresh moves the earlier run's files to
`out_dir/superseded/<its fingerprint>/`: nothing is deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

import micml
from micml.checkpoint import error_summary, load_checkpoint
from micml.engine.distributed import DistContext, barrier
from micml.engine.errors import StaleRunError
from micml.engine.records import BEST, LAST, LOG_CSV, PROVENANCE, RUN_IDENTITY, SUPERSEDED
from micml.io import write_json

log = logging.getLogger("micml.engine")

# Settings of the machine and of the logs, not of the experiment: a run killed on one machine may
# resume with other cores, workers or devices (they change float rounding, not what is trained).
MACHINE_KEYS = ("device", "threads", "num_workers", "progress", "log_interval", "checkpoint_every")


@dataclass
class TrainState:
    epoch: int = 0          # completed epochs
    iteration: int = 0      # completed iterations of epoch + 1
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    last_val: dict = field(default_factory=dict)
    train_seconds: float = 0.0  # wall time of the training iterations so far, resumed runs included


# --------------------------------------------------------------------------- run identity


def run_identity(config: Mapping, dataset_root: Path) -> dict:
    """Everything that changes what a run trains: the resolved training settings (model variant,
    options, schedule, crops, augmentation, seed...) less `MACHINE_KEYS`, the dataset's
    fingerprint and micml's version (not the git commit: a documentation commit must not
    orphan a week of training)."""
    from micml.data.unified import UnifiedDataset

    training = {key: value for key, value in config.items() if key not in MACHINE_KEYS}
    return json.loads(json.dumps({"training": training, "dataset": UnifiedDataset(dataset_root).fingerprint(),
                                  micml.__name__: micml.__version__}))


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
    write_json(out_dir / RUN_IDENTITY, document, sort_keys=True)


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


# --------------------------------------------------------------------------- resume or start afresh


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


# --------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (numpy's key array becomes an int64 tensor)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": _plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached"]))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
