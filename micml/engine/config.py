"""The training settings: one typed `TrainingConfig`, checked once where a run is asked for.

Defaults come from config/schema.yaml only (`micml.config.training_defaults`: the workflow's
`training` keys and the engine's others under `$defs/engine_training`). `TrainingConfig.from_mapping`
fills them in and rejects unknown keys and invalid values with the key named; everything after
it (launch, the loop, a torchrun child reading the file `as_dict` wrote) takes the result as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from micml.config import training_defaults
from micml.data.clips import Augmentation, Normalisation, as_size, normalisation_for_weights
from micml.precision import AMP_DTYPES

log = logging.getLogger("micml.engine")

#: Every training key with its default, from config/schema.yaml.
DEFAULTS: dict = training_defaults()


@dataclass(frozen=True)
class TrainingConfig(Mapping):
    """Resolved training settings (config/schema.yaml describes each key); also read as a
    mapping of those keys, like the settings it was built from."""

    crop_size: list[int]              # [h, w], multiples of 16
    batch_size: int                   # global, split over torchrun processes
    epochs: int
    iters_per_epoch: int | None       # None: epoch_fraction of a full pass
    epoch_fraction: float
    lr: float
    lr_steps: list[int]               # lr *= lr_factor after each of these epochs
    lr_factor: float
    object_crop_prob: float
    augment: Any                      # micml.data.clips.Augmentation.from_config's input
    val_interval: int                 # 0: never validate (best = last)
    val_max_frames: int | None
    num_workers: int
    amp: str
    channels_last: bool
    compile: bool
    find_unused_parameters: bool
    sync_batchnorm: bool
    model: str
    plugins: list[str]
    model_options: dict
    grad_clip: float | None
    val_crop_size: list[int] | None
    val_score_threshold: float
    val_top_k: int
    val_iou_threshold: float
    max_objects: int
    seed: int
    device: str
    threads: int | None
    checkpoint_every: int | None
    log_interval: int
    progress: Any                     # "auto" | True | False

    @classmethod
    def from_mapping(cls, settings: Mapping | None) -> TrainingConfig:
        """Defaults filled in, unknown keys and invalid values rejected with the key named."""
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"training config: unknown keys {unknown}; valid keys: {sorted(DEFAULTS)}")
        resolved = {**copy.deepcopy(DEFAULTS), **settings}
        resolved["model_options"] = dict(resolved["model_options"] or {})
        resolved["lr_steps"] = [int(step) for step in resolved["lr_steps"] or []]
        resolved["plugins"] = list(resolved["plugins"] or [])
        _check(resolved)
        return cls(**resolved)

    def __getitem__(self, key: str) -> Any:
        if key not in DEFAULTS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return (field.name for field in dataclasses.fields(self))

    def __len__(self) -> int:
        return len(DEFAULTS)

    def as_dict(self) -> dict:
        """The settings as plain values (what checkpoints, run.json and provenance.json record)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def lr_at(self, epoch: int) -> float:
        """lr of 1-based `epoch`: lr * factor^(number of lr_steps already finished)."""
        finished = sum(1 for step in self.lr_steps if step < epoch)
        return float(self.lr) * float(self.lr_factor) ** finished

    def iterations_per_epoch(self, n_samples: int) -> int:
        """Explicit `iters_per_epoch`, else `epoch_fraction` of the full passes a drop-last loader makes."""
        if self.iters_per_epoch is not None:
            return int(self.iters_per_epoch)
        full = n_samples // self.batch_size
        return max(1, math.floor(full * float(self.epoch_fraction) + 1e-9))

    @property
    def normalisation(self) -> Normalisation:
        """The input normalisation of the model: it follows the weights the backbone starts from."""
        return normalisation_for_weights(self.model_options.get("pretrained"))


def training_config(settings: TrainingConfig | Mapping | None) -> TrainingConfig:
    """`settings` as a TrainingConfig: checked when it is a mapping, taken as it is otherwise."""
    return settings if isinstance(settings, TrainingConfig) else TrainingConfig.from_mapping(settings)


def resolve_config(settings: Mapping | None) -> dict:
    """The resolved settings as a plain dict (`TrainingConfig.from_mapping(...).as_dict()`)."""
    return TrainingConfig.from_mapping(settings).as_dict()


def lr_at_epoch(settings: TrainingConfig | Mapping, epoch: int) -> float:
    return training_config(settings).lr_at(epoch)


def iterations_per_epoch(settings: TrainingConfig | Mapping, n_samples: int) -> int:
    return training_config(settings).iterations_per_epoch(n_samples)


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


# --------------------------------------------------------------------------- what applies on a device


def amp_on(device: torch.device, amp: str) -> str:
    """The autocast choice training applies on `device`: `amp` on CUDA, "off" elsewhere."""
    return amp if device.type == "cuda" else "off"


def effective_settings(config: TrainingConfig, device: torch.device) -> dict:
    """AMP and channels_last apply on CUDA only; a CPU run ignores them with a warning, so one
    experiment config runs on both kinds of machine."""
    cuda = device.type == "cuda"
    for key, off in (("amp", "off"), ("channels_last", False)):
        if getattr(config, key) != off and not cuda:
            log.warning("%s=%r needs CUDA; running on %s without it", key, getattr(config, key), device)
    return {"amp": amp_on(device, config.amp), "channels_last": bool(config.channels_last) and cuda}


# --------------------------------------------------------------------------- checks


def _check(config: dict) -> None:
    _check_size(config, "crop_size", required=True)
    _check_size(config, "val_crop_size", required=False)
    for key in ("batch_size", "epochs", "val_top_k", "max_objects", "log_interval"):
        _check_int(config, key, minimum=1)
    for key in ("val_interval", "num_workers", "seed"):
        _check_int(config, key, minimum=0)
    for key in ("iters_per_epoch", "val_max_frames", "checkpoint_every", "threads"):
        if config[key] is not None:
            _check_int(config, key, minimum=1)
    _check_choice(config, "device", ("auto", "cpu", "cuda"))
    _check_choice(config, "amp", tuple(AMP_DTYPES))
    _check_choice(config, "progress", ("auto", True, False))
    if not 0 < float(config["epoch_fraction"]) <= 1:
        raise ValueError(f"training config: epoch_fraction must be in (0, 1], found {config['epoch_fraction']}")
    if not float(config["lr"]) > 0 or not float(config["lr_factor"]) > 0:
        raise ValueError("training config: lr and lr_factor must be > 0")
    if config["grad_clip"] is not None and not float(config["grad_clip"]) > 0:
        raise ValueError(f"training config: grad_clip must be null or > 0, found {config['grad_clip']}")
    try:
        Augmentation.from_config(config["augment"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"training config: {error}") from None
    if not isinstance(config["model"], str) or not config["model"]:
        raise ValueError(f"training config: model must be a variant name, found {config['model']!r}")
    if not all(isinstance(name, str) and name for name in config["plugins"]):
        raise ValueError(f"training config: plugins must be a list of module names, found {config['plugins']!r}")


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


def _check_fields_match_the_schema() -> None:
    fields = [field.name for field in dataclasses.fields(TrainingConfig)]
    if sorted(fields) != sorted(DEFAULTS):
        raise RuntimeError(f"micml.engine.config.TrainingConfig fields {sorted(set(fields) ^ set(DEFAULTS))} differ "
                           "from the training keys of config/schema.yaml; add or remove them in both")


_check_fields_match_the_schema()
