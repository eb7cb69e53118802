"""What a result was computed on, in words a reader can compare (results differ between CPU kinds)."""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The CPU's model name as `lscpu` prints it ('AMD EPYC 7B13'); platform.processor() where
    /proc/cpuinfo is absent (it gives only the architecture on Linux, hence the file first)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of /proc/cpuinfo ('avx2', 'avx512_bf16', 'amx_bf16', ...);
    empty where the file is absent."""
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()
