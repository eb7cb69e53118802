"""The data stage as the workflow runs it: get a native tree, then convert it.

Each dataset passes through a manifest, ``<raw>/<dataset>.manifest.json``, written only after
its native tree is complete (generated, or verified and unpacked). The converter reads the
tree the manifest points to and records the manifest in the unified dataset's meta.json
(`native_source`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

from micml.data import converters, download, synthetic, unified
from micml.data.synthetic import native
from micml.io import write_json

log = logging.getLogger(__name__)


def write_manifest(path: Path | str, manifest: Mapping[str, Any]) -> None:
    write_json(path, manifest, indent=2, default=str)


def read_manifest(path: Path | str) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise download.SourceError(f"{path}: unreadable manifest ({error}); delete it and re-run the workflow") from None


def prepare_synthetic(dataset: str, entry: Mapping[str, Any], settings: Mapping[str, Any], *,
                      tree: Path | str, manifest_path: Path | str) -> dict:
    """Render the embedded synthetic default into `tree` in the entry's native format."""
    spec = synthetic.spec_from_settings(settings)
    log.info("rendering synthetic %s (%s format) into %s", dataset, entry["format"], tree)
    rendered = native.synthesize(entry["format"], Path(tree), spec, overwrite=True)
    manifest = {
        "dataset": dataset,
        "source": "synthetic",
        "format": entry["format"],
        "tree": str(native.native_input(entry["format"], Path(tree))),
        "converter_options": rendered.get("converter_options", {}),
        "synthetic": rendered,
    }
    write_manifest(manifest_path, manifest)
    return manifest


def prepare_placed(dataset: str, entry: Mapping[str, Any], sources_path: Path | str, *,
                   raw_dir: Path | str, tree: Path | str, manifest_path: Path | str) -> dict:
    """Verify (and unpack or download) a real dataset, or check a tree/video the user points at."""
    if entry["source"] == "path":
        path = Path(tree)
        if not path.exists():
            raise download.SourceError(
                f"{path}: not found; dataset {dataset!r} has source 'path' in the config, so this "
                "file or folder must exist (fix `path:` in config/config.yaml)")
        fetched = {"tree": str(path.resolve()), "placed_tree": True, "files": []}
    else:
        catalogue = download.load_sources(sources_path)
        name = entry.get("archive") or dataset
        if name not in catalogue:
            raise download.SourceError(
                f"{sources_path}: no entry {name!r} for dataset {dataset!r}; known: {', '.join(sorted(catalogue))}")
        fetched = download.fetch_dataset(name, catalogue, Path(raw_dir), Path(tree))
    manifest = {**fetched, "dataset": dataset, "source": entry["source"], "format": entry["format"],
                "converter_options": {}}
    write_manifest(manifest_path, manifest)
    return manifest


def convert_prepared(manifest_path: Path | str, dst: Path | str, entry: Mapping[str, Any]) -> Path:
    """Convert the tree a manifest points to; config options override the manifest's suggestions."""
    manifest = read_manifest(manifest_path)
    configured = dict(entry.get("convert", {}))
    # Named as the config key: the schema cannot type these options, which differ per format.
    converters.check_options(manifest["format"], configured,
                             where=f"config datasets.{manifest.get('dataset', '?')}.convert")
    options = {**manifest.get("converter_options", {}), **configured}
    log.info("converting %s (%s) with options %s", manifest["tree"], manifest["format"], options)
    root = converters.convert(manifest["format"], Path(manifest["tree"]), Path(dst), **options)
    unified.update_meta(root, native_source=manifest)
    return root
