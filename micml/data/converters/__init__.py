"""Converters from each native dataset format into the unified layout (`micml.data.unified`).

`convert(native_format, src, dst, **options)` dispatches by name; each converter's docstring
lists its options and why each default is what it is.
"""

from __future__ import annotations

import inspect
from pathlib import Path

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

__all__ = ["CONVERTERS", "DRONECROWD_TEST_SEQUENCES", "DSFNET_TEST_VIDEOS", "convert", "convert_dronecrowd",
           "convert_rscar", "convert_video", "convert_viso"]


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
    return converter(src, dst, **options)
