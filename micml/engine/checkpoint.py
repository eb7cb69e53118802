"""Checkpoints that survive a kill and load with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors and plain Python values only:
    format, model {name, options}, state_dict, optimizer (absent in best.pt), lr, epoch
    (completed epochs), iteration (iterations completed in epoch+1, 0 at an epoch boundary),
    global_step, rng, best {metric, value, epoch}, val (last validation metrics), config.
The model name and options are what `micml.models.builder_for` needs to rebuild the network, so
a checkpoint is usable without the run's config file. The name selects a registered model only:
checkpoints are shared and downloaded, and loading one must never import or run code it names.
`weights_sha256` (digest of the state_dict, `weights_digest`) is checked on every load, so a
damaged tensor is an error rather than silently wrong detections.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

FORMAT = "micml.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


def save_checkpoint(path: Path | str, checkpoint: dict) -> Path:
    """Write to a temporary file in the same folder, flush to disk, then rename over `path`.

    A kill at any moment leaves either the previous complete file or the new complete file.
    The state_dict's digest is recorded as `weights_sha256`.
    """
    path = Path(path)
    checkpoint = {**checkpoint, "weights_sha256": weights_digest(checkpoint["state_dict"])}
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    checkpoint = read_weights_file(path, map_location)
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
    if found != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (found {found!r}); "
                              "a reference (model_best.pth) checkpoint loads with micml.models.load_reference_checkpoint")
    verify_weights(checkpoint, path)
    return checkpoint


def read_weights_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` of `path`, every failure a CheckpointError naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train a model (`micml train`) or give the "
                              "path of an existing checkpoint file")
    try:
        # weights_only=True: tensors and plain values only; never unpickle code from a shared file.
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        if refused_pickle(error):
            raise CheckpointError(refused_pickle_message(path)) from None
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({error_summary(error)}); the file is "
                              "corrupt or truncated: re-train or re-download it") from None


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every entry's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(state_dict[name].shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def verify_weights(checkpoint: Mapping, path: Path) -> None:
    """Refuse weights that differ from the digest written with them (checkpoints made before
    digests were recorded have none and are accepted)."""
    recorded = checkpoint.get("weights_sha256")
    if recorded is None:
        return
    if not isinstance(checkpoint.get("state_dict"), Mapping) or weights_digest(checkpoint["state_dict"]) != recorded:
        raise CheckpointError(f"checkpoint corrupt: {path}: its weights do not match the SHA-256 recorded when it "
                              "was written (damaged on disk or in transfer, or edited); re-train or re-download it")


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


def resolve_builder(name: object, source: Path | str | None = None) -> Callable[..., nn.Module]:
    """The registered builder of model `name` (a variant or a model added with
    `micml.models.register`); a CheckpointError naming `source` and the known models otherwise."""
    from micml import models  # imported late: the engine must not require the models at import time

    try:
        return models.builder_for(str(name))
    except ValueError:
        known = ", ".join(models.known_models())
        if source is None:
            raise ValueError(f"unknown model {str(name)[:80]!r} (known: {known}); a custom model is registered "
                             "with micml.models.register by a module named in the training config's plugins") from None
        raise CheckpointError(
            f"{source}: names model {str(name)[:80]!r}, which is not a registered micml model (known: {known}); "
            "a checkpoint selects a registered model and never names code to import: a custom model must be "
            "registered with micml.models.register by the program that loads it") from None


def build_model(name: str, options: dict | None = None, source: Path | str | None = None) -> nn.Module:
    return resolve_builder(name, source)(**dict(options or {}))


def model_from_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network a checkpoint was trained as and load its weights (eval mode)."""
    checkpoint = load_checkpoint(path, map_location)
    options = dict(checkpoint["model"]["options"])
    options.pop("pretrained", None)  # the checkpoint's weights replace it; the file may be gone
    model = build_model(checkpoint["model"]["name"], options, source=path)
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
