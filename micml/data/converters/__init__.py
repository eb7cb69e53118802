"""Converters from each native dataset format into the unified layout (`micml.data.unified`).

`convert(native_format, src, dst, **options)` dispatches by name; each converter's docstring
lists its options and why each default is what it is.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from ..unified import DatasetError
from .dronecrowd import DRONECROWD_TEST_SEQUENCES, convert_dronecrowd
from .rscar import convert_rscar
from .video import convert_video
from .viso import DSFNET_TEST_VIDEOS, convert_viso

_CONVERTERS = {
    "rscar": convert_rscar,
    "viso": convert_viso,
    "dronecrowd": convert_dronecrowd,
    "video": convert_video,
}
CONVERTERS = tuple(_CONVERTERS)

__all__ = ["CONVERTERS", "DRONECROWD_TEST_SEQUENCES", "DSFNET_TEST_VIDEOS", "check_options", "convert",
           "convert_dronecrowd", "convert_rscar", "convert_video", "convert_viso"]


def convert(native_format: str, src: Path | str, dst: Path | str, **options) -> Path:
    """Convert the native dataset at `src` into the unified layout at `dst`; returns `dst`."""
    if native_format not in _CONVERTERS:
        raise ValueError(f"unknown native format {native_format!r}; expected one of {', '.join(CONVERTERS)}")
    converter = _CONVERTERS[native_format]
    accepted = [p for p in inspect.signature(converter).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - {p.name for p in accepted})
    if unknown:
        raise ValueError(f"{native_format}: unknown option(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(p.name for p in accepted)}")
    check_options(native_format, options, where=str(src))
    return converter(src, dst, **options)


def check_options(native_format: str, options: Mapping[str, Any], *, where: str) -> None:
    """Refuse converter options of the wrong type or an impossible frame rate, naming `where`.

    Options come from YAML or from the command line's JSON, where `val_videos: [004]` holds
    the number 4 and `val_videos: "004"` a string that a converter would read as the three
    names '0', '0', '4'; checked here, such a value stops before any file is read.
    """
    hints = typing.get_type_hints(_CONVERTERS[native_format])
    for name, value in options.items():
        if name in hints and not _matches(value, hints[name]):
            raise DatasetError(
                f"{where}: {native_format} converter option {name}={value!r} has the wrong type: expected "
                f"{_describe(hints[name])}, found {type(value).__name__}; fix it in the dataset's `convert:` "
                f"options of the workflow config, or in `-o {name}=...` of `micml convert`")
    fps = options.get("fps")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise DatasetError(f"{where}: {native_format} converter option fps={fps!r}: expected a positive frame rate "
                           "(frames per second), or leave it out")


def _matches(value: Any, hint: Any) -> bool:
    """isinstance for the few annotations converters use (unions, None, float, str, Path, Sequence[str])."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):  # a YAML `yes` is not a number or a name
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    if hint is Path:
        return isinstance(value, (str, Path))
    if origin is collections.abc.Sequence:
        item = (typing.get_args(hint) or (object,))[0]
        return isinstance(value, (list, tuple)) and all(_matches(element, item) for element in value)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(hint))
    if origin is collections.abc.Sequence:
        item = (typing.get_args(hint) or (object,))[0]
        return "a list of strings (quote names such as '002')" if item is str else f"a list of {_describe(item)}"
    names = {type(None): "null", float: "a number", int: "an integer", str: "a string", Path: "a path", bool: "true/false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
