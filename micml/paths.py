"""Where a command may write: outputs apart from their inputs, and names that stay where they are put.

Every command that builds a folder from inputs builds it beside the output and then swaps it in,
deleting the old output (`micml.data.unified.replace_folder`). An output that is an input, lies
inside one, or holds one would therefore delete that input, so `check_output_apart` refuses it
before anything is written or deleted. Option values that become file or folder names pass
`plain_name`, so that `name=../..` or an absolute path cannot write outside the output.

Torch- and OpenCV-free: the command line and the workflow can call it before any heavy import.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Iterable

SEPARATORS = ("/", "\\")  # a backslash separates on Windows, so it never belongs in a portable name


class UnsafePathError(ValueError):
    """An output that overlaps an input, or a name that would leave its folder."""


def check_output_apart(output: str | os.PathLike, *inputs: str | os.PathLike, what: str,
                       scratch_suffixes: Iterable[str] = ()) -> None:
    """Refuse `output` when it is, lies inside, or contains one of `inputs`.

    `scratch_suffixes` name the folders the writer builds or deletes beside the output
    (`<output>.partial`, `<output>.old`): an input there is deleted just the same, so each is
    checked like the output. Paths are compared resolved, so a symlink or `..` hides nothing.
    `what` says what the output is ("prediction folder"), for the message.
    """
    output = Path(output)
    written = [output, *(output.with_name(output.name + suffix) for suffix in scratch_suffixes)]
    for target in written:
        for source in map(Path, inputs):
            relation = overlap(target.resolve(), source.resolve())
            if relation:
                role = what if target == output else f"{what}'s work folder"
                raise UnsafePathError(
                    f"{role} {target} {relation} input {source}: writing it would delete or overwrite that "
                    "input, so nothing was written; choose an output path outside the input that does not hold it")


def overlap(target: Path, source: Path) -> str:
    """How the resolved `target` overlaps the resolved `source`, or '' when they are apart."""
    if target == source:
        return "is the same path as"
    if source in target.parents:
        return "lies inside"
    if target in source.parents:
        return "contains"
    return ""


def plain_name(value: str, *, option: str, subfolders: bool = False) -> str:
    """`value` when it is a plain file or folder name, else an UnsafePathError naming `option`.

    A plain name has no separator, is not '.', '..' or empty, so joined to a folder it stays in
    that folder. With `subfolders` a relative path of such names is accepted (an annotation file
    given relative to the dataset folder), still never absolute and never through '..'.
    """
    if subfolders:
        rule = "a relative path inside the folder (no leading '/', no '..' part, not empty)"
        parts = PurePosixPath(str(value).replace("\\", "/")).parts if isinstance(value, str) else ()
        safe = bool(parts) and not value.startswith(SEPARATORS) and all(_plain(part) for part in parts)
    else:
        rule = "a plain file or folder name (no '/' or '\\', not '.', '..' or empty)"
        safe = isinstance(value, str) and _plain(value)
    if not safe:
        raise UnsafePathError(f"{option}={value!r}: it becomes a file or folder name, so it must be {rule}")
    return value


def _plain(name: str) -> bool:
    return name not in ("", ".", "..") and not any(separator in name for separator in SEPARATORS) and "\0" not in name
