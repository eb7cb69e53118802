"""Pretrained backbone weights: what `training.pretrained` means, where the ImageNet file comes
from, and the sha256 pin that keeps every run on the same file.

`training.pretrained` (workflow config, a `per_model` entry, or `micml train --set pretrained=...`):

    null       the DLA-34 backbone starts from random weights (the default)
    imagenet   timm's ImageNet DLA-34 (`timm/dla34.in1k`, model.safetensors) at IMAGENET_WEIGHTS;
               the workflow's `backbone_weights` rule downloads it, or says where to place it
    <path>     a local .safetensors or .pth of timm's dla34 or of the reference's DLA-34 ImageNet
               file (dla34-ba72cf86.pth, MICPL's backbone.pth)

The model's input normalisation follows the weights (`micml.data.clips.normalisation_for_weights`).
The ImageNet file's sha256 is recorded in WEIGHTS_MANIFEST the first time it is used (downloaded
or placed by hand) and a file that later differs is refused: the hub publishes no checksum to pin
in advance, so the first file seen is the one every run is compared on.

Imports neither torch nor cv2: the Snakefile reads it to decide which runs need the file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Mapping

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
IMAGENET_WEIGHTS = "resources/weights/dla34_in1k.safetensors"
WEIGHTS_MANIFEST = "manifest.json"  # beside the weights file
IMAGENET_REPOSITORY = "timm/dla34.in1k"
IMAGENET_URL = f"https://huggingface.co/{IMAGENET_REPOSITORY}/resolve/main/model.safetensors"


class WeightsFileError(ValueError):
    """A weights file that is absent or differs from the one first used; the message says what to do."""


def pretrained_choice(training: Mapping, model: str, overrides: Mapping | None = None) -> str | None:
    """The `pretrained` setting of one model: the training section's, then its per_model entry's,
    then `overrides` (the layering of `micml.engine.launch.model_training_config`)."""
    per_model = (training.get("per_model") or {}).get(model) or {}
    for layer in (overrides or {}, per_model):
        if "pretrained" in layer:
            return layer["pretrained"]
    return training.get("pretrained")


def resolve_pretrained(choice: str | os.PathLike | None, weights: str | os.PathLike = IMAGENET_WEIGHTS) -> str | None:
    """The file a `pretrained` setting names (None: random weights). `imagenet` is `weights`,
    checked against its recorded sha256 (recorded now on its first use)."""
    if choice is None:
        return None
    if choice == IMAGENET:
        path = Path(weights)
        if not path.is_file():
            raise WeightsFileError(manual_download_message(path, reason="it is not there"))
        pin_sha256(path)
        return str(path)
    return os.fspath(choice)


def manual_download_message(path: Path, reason: str) -> str:
    return (f"training.pretrained: imagenet needs the ImageNet DLA-34 weights at {path}, but {reason}. Fetch "
            f"{IMAGENET_URL} (file model.safetensors of {IMAGENET_REPOSITORY} on the Hugging Face hub) and save it "
            f"as {path.resolve()}, or let the workflow do it: snakemake --cores 1 {IMAGENET_WEIGHTS}")


def pin_sha256(path: str | os.PathLike) -> str:
    """`path`'s sha256, recorded in the manifest beside it on first use; WeightsFileError when it
    differs from the one recorded earlier."""
    from micml.data.download import file_sha256  # late: it brings in the data stack

    path = Path(path)
    manifest_path = path.parent / WEIGHTS_MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    digest = file_sha256(path)
    recorded = manifest.get(path.name)
    if recorded is None:
        manifest[path.name] = {"sha256": digest, "bytes": path.stat().st_size, "source": IMAGENET_URL,
                               "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = manifest_path.with_name(manifest_path.name + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, manifest_path)
        log.info("%s: sha256 %s recorded in %s (first use)", path, digest, manifest_path)
    elif recorded["sha256"] != digest:
        raise WeightsFileError(
            f"{path}: sha256 is {digest}, but {recorded['sha256']} was recorded in {manifest_path} when the file was "
            f"first used ({recorded.get('recorded', 'earlier')}): the file changed (damaged, or another download). "
            f"Restore the original; or, to start over with this file, delete its entry in {manifest_path} "
            "(runs trained from the earlier file are then not comparable)")
    return digest


def fetch_imagenet_weights(path: str | os.PathLike = IMAGENET_WEIGHTS, *, opener: Callable | None = None,
                           retries: int | None = None) -> dict:
    """Make `path` the ImageNet DLA-34 file: kept when there (placed by hand or fetched before),
    else downloaded (resumable, micml.data.download); then its sha256 pinned. Offline, a
    ManualDownloadRequired says which file to fetch and where to place it."""
    from micml.data import download  # late: it brings in the data stack

    path = Path(path)
    obtained = "placed"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tries = {} if retries is None else {"retries": retries}
        try:
            download.download_file(IMAGENET_URL, path, opener=opener, **tries)
        except download.CorruptFileError:
            raise
        except download.SourceError as error:
            raise download.ManualDownloadRequired(
                manual_download_message(path, reason=f"it could not be downloaded ({error})")) from None
        obtained = "downloaded"
    digest = pin_sha256(path)
    return {"path": str(path), "sha256": digest, "bytes": path.stat().st_size, "obtained": obtained,
            "source": IMAGENET_URL}
