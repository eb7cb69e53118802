"""Mixed precision: the autocast choices shared by training and inference (one list for both)."""

from __future__ import annotations

import torch

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str) -> None:
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, found {amp!r}")


def autocast(device: torch.device | str, amp: str) -> torch.autocast:
    """`torch.autocast` in the dtype that `amp` names on `device`'s type; disabled for "off"."""
    check_amp(amp)
    dtype = AMP_DTYPES[amp]
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)
