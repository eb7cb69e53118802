"""Atomic writes: every file and folder micml produces appears whole or not at all.

A job killed mid-write (Ctrl-C, a SLURM time limit, a full disk) must leave either the old
result or the new one. Snakemake would otherwise see a truncated table, .mat or checkpoint as
done, and a resumed training run would load half a file. Every writer in micml goes through
these four functions; none renames by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

# Suffixes of the work folders beside a folder being replaced; micml.paths refuses outputs
# that overlap them, so they are named here once.
PARTIAL_SUFFIX = ".partial"
RETIRED_SUFFIX = ".old"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(stream)`` on a temp file beside ``path``, then rename it over ``path``.

    The temp file has a unique name, so two processes writing the same path never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda stream: stream.write(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 2,
               sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> None:
    text = json.dumps(value, indent=indent, sort_keys=sort_keys, default=default)
    write_text(path, text + "\n")


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the finished folder ``new`` to ``target``; an older ``target`` is deleted only afterwards.

    Deleting the old folder first would let a kill in the middle of the deletion leave a
    ``target`` that still looks complete but has lost files. Renaming it aside is atomic, so at
    every moment ``target`` is absent, the old complete folder, or the new one.
    """
    new, target = Path(new), Path(target)
    retired = target.with_name(target.name + RETIRED_SUFFIX)
    if retired.exists():
        shutil.rmtree(retired)  # left by a run killed after the swap: its data was replaced
    if target.exists():
        os.replace(target, retired)
    os.replace(new, target)
    shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(root: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield ``<root>.partial`` to write into; on success it replaces ``root``, on error it is removed."""
    root = Path(root).absolute()
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: exists and is not a folder; remove it or choose another output folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root}: exists and is not empty; pass overwrite=True (CLI: --overwrite) "
                              "to replace it")
    partial = root.with_name(root.name + PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)  # left over from an interrupted run
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_folder(partial, root)
