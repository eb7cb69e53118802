"""Checkpoints that survive a kill and load with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors and plain Python values only:
    format, model {name, options}, state_dict, optimizer (absent in best.pt), lr, epoch
    (completed epochs), iteration (iterations completed in epoch+1, 0 at an epoch boundary),
    global_step, rng, best {metric, value, epoch}, val (last validation metrics), config.
The model name and options are what `micml.models.build` (or a 'module:function' builder) needs
to rebuild the network, so a checkpoint is usable without the run's config file.
"""

from __future__ import annotations

import importlib
import os
import pickle
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

FORMAT = "micml.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


def save_checkpoint(path: Path | str, checkpoint: dict) -> Path:
    """Write to a temporary file in the same folder, flush to disk, then rename over `path`.

    A kill at any moment leaves either the previous complete file or the new complete file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train first or pass the right path")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        if refused_pickle(error):
            raise CheckpointError(refused_pickle_message(path)) from None
        raise CheckpointError(f"{path}: cannot be read as a micml checkpoint ({error_summary(error)}); "
                              "delete it to start again, or point to another file") from None
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
    if found != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (found {found!r}); "
                              "a reference (model_best.pth) checkpoint loads with micml.models.load_reference_checkpoint")
    return checkpoint


def refused_pickle(error: BaseException) -> bool:
    """Whether torch.load(weights_only=True) failed because the file pickles other objects
    (not because it is damaged: that gives EOFError, KeyError, RuntimeError...)."""
    return isinstance(error, pickle.UnpicklingError) and str(error).startswith("Weights only load failed")


def refused_pickle_message(path: Path) -> str:
    """torch.load(weights_only=True) refused to run the file's pickled Python objects.

    torch's own message suggests weights_only=False, which would execute whatever the file
    holds; a micml checkpoint never needs it, so the message says so instead.
    """
    return (f"{path}: holds pickled Python objects besides tensors and plain values, which are not loaded "
            "(torch.load(weights_only=True) refuses to run them; a micml checkpoint never holds any): "
            "it is not a micml checkpoint, or not one to trust; use a checkpoint written by `micml train`")


def error_summary(error: BaseException) -> str:
    """`Type: first line of the text`: torch's errors run over several lines, some have none."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def resolve_builder(name: str) -> Callable[..., nn.Module]:
    """`micml.models.build(name, ...)` for registry names; `pkg.module:function` for custom models."""
    if ":" in name:
        module_name, _, function = name.partition(":")
        return getattr(importlib.import_module(module_name), function)
    from micml.models import build  # imported late: the engine must not require the models at import time
    return lambda **options: build(name, **options)


def build_model(name: str, options: dict | None = None) -> nn.Module:
    return resolve_builder(name)(**dict(options or {}))


def model_from_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network a checkpoint was trained as and load its weights (eval mode)."""
    checkpoint = load_checkpoint(path, map_location)
    options = dict(checkpoint["model"]["options"])
    options.pop("pretrained", None)  # the checkpoint's weights replace it; the file may be gone
    model = build_model(checkpoint["model"]["name"], options)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


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
