"""Checkpoints: the one module that writes, reads, verifies and converts them.

Training writes them (`micml.engine`), inference reads them (`micml.inference`), and
`convert_reference_checkpoint` turns a reference MICML/DSFNet `model_best.pth` into one; every
file is read by `read_weights_file` (`torch.load(weights_only=True)`: tensors and plain values).

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
from pathlib import Path
from typing import Any, Callable, Mapping

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
    return rebuild_model(load_checkpoint(path, map_location), path).eval()


# --------------------------------------------------------------------------- any micml checkpoint


# Options that describe how a model was *initialised*, not its architecture: the checkpoint's
# weights replace them, and the file they name need not exist where the model is used.
INITIALISATION_OPTIONS = ("pretrained",)


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint with weights and a model description: this format, or an older flat one
    (`variant` + `model_options`); its digest verified. CheckpointError naming the file otherwise."""
    path = Path(path)
    checkpoint = read_weights_file(path, map_location)
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a micml checkpoint (expected a dict with a 'state_dict', found "
                              f"{found}); give a checkpoint written by `micml train`")
    verify_weights(checkpoint, path)
    return dict(checkpoint)


def model_description(checkpoint: Mapping, path: Path | str) -> tuple[str, dict]:
    """(variant, build options) of a checkpoint: `model: {name, options}`, or the flat
    `variant` + `model_options` form; initialisation options left out."""
    model = checkpoint.get("model")
    if isinstance(model, Mapping) and "name" in model:
        name, options = model["name"], model.get("options")
    elif "variant" in checkpoint:
        name, options = checkpoint["variant"], checkpoint.get("model_options")
    else:
        raise CheckpointError(
            f"{path}: holds weights but no model description (no 'model' or 'variant' entry), as a checkpoint "
            "of the reference MICML/DSFNet code (model_best.pth) does; convert it first: "
            f"micml convert-checkpoint {path} converted.pt --model <variant>, then use "
            "converted.pt (in Python: micml.models.load_reference_checkpoint(micml.models.build(<variant>), path))")
    options = {key: value for key, value in dict(options or {}).items()
               if key not in INITIALISATION_OPTIONS and key != "variant"}
    return str(name), options


def rebuild_model(checkpoint: Mapping, path: Path | str, expected_variant: str | None = None) -> nn.Module:
    """The model `checkpoint` describes, with its weights; CheckpointError naming `path` when it is
    of another variant than `expected_variant` or its weights do not fit."""
    variant, options = model_description(checkpoint, path)
    if expected_variant is not None and variant != expected_variant:
        raise CheckpointError(
            f"{path}: checkpoint holds a {variant!r} model but {expected_variant!r} was asked for; "
            f"pass a checkpoint trained as {expected_variant!r}, or ask for {variant!r}")
    model = build_model(variant, options, source=path)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: its weights do not fit the {variant!r} model rebuilt from its own options "
            f"({str(error).splitlines()[0]}); the file comes from an incompatible micml version or was "
            "modified: re-train or re-download it") from error
    return model


# --------------------------------------------------------------------------- reference checkpoints


def convert_reference_checkpoint(source: str | os.PathLike, target: str | os.PathLike, model_name: str, *,
                                 head_conv: int = 128) -> dict:
    """Write a reference checkpoint (`model_best.pth`) as a micml checkpoint that `micml test` and
    `micml detect` load: model `model_name` rebuilt, its weights converted and loaded strictly
    (`micml.models.checkpoint_keys`), the reference's input normalisation (it trained every model
    with it), and where it came from. Returns the provenance record. `micml convert-checkpoint` runs this."""
    import micml  # late: the version; the data and model stacks are not needed to read checkpoints
    from micml.data.clips import REFERENCE_NORMALISATION
    from micml.models.checkpoint_keys import load_reference_checkpoint, read_reference_checkpoint
    from micml.models.registry import build

    source = os.fspath(source)
    raw = read_reference_file(source)
    if isinstance(raw, Mapping) and raw.get("format") == FORMAT:
        raise ValueError(f"{source!r}: is already a {FORMAT} checkpoint; use it as it is")
    model = build(model_name, head_conv=head_conv)
    try:
        load_reference_checkpoint(model, read_reference_checkpoint(raw))
    except (TypeError, RuntimeError) as error:
        raise ValueError(f"{source!r}: its weights do not fit model {model_name!r} "
                         f"({' '.join(str(error).split())[:300]}); give --model the variant it was trained as "
                         "(a MICML checkpoint also loads as its variant without the training-only motion "
                         "module)") from None
    with open(source, "rb") as handle:
        source_sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    provenance = {"converted_from": source, "source_sha256": source_sha256,
                  "source_epoch": raw.get("epoch") if isinstance(raw, Mapping) else None,
                  "converted_by": f"micml {micml.__version__}", "torch": str(torch.__version__)}
    save_checkpoint(target, {
        "format": FORMAT,
        "model": {"name": model_name, "options": {"head_conv": head_conv}, "config": dict(model.config)},
        "state_dict": model.state_dict(),
        "normalisation": REFERENCE_NORMALISATION.as_dict(),
        "provenance": provenance,
    })
    return provenance


def read_reference_file(path: str | os.PathLike) -> Any:
    """A reference checkpoint file read by `read_weights_file`; its errors as FileNotFoundError or
    ValueError (what `micml convert-checkpoint` and `load_reference_checkpoint` report)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}. Fix: check the path (reference checkpoints "
                                "are e.g. weights/rsdata/MICML/model_best.pth)")
    try:
        return read_weights_file(path)
    except CheckpointError as error:
        raise ValueError(str(error)) from None
