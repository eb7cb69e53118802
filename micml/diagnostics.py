"""Machine and model diagnostics the workflow tabulates: the DCN check and the model table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from micml.io import write_json
from micml.tables import write_table

log = logging.getLogger(__name__)

FRAMES = 5  # clip length every variant takes


def write_dcn_check(json_path: Path | str, md_path: Path | str, *, use_gpu: bool) -> dict:
    """Check the deformable convolution on the device training will use; fail loudly on a mismatch."""
    from micml.ops import check_against_reference

    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    if use_gpu and device.type == "cpu":
        log.warning("a GPU was granted but torch.cuda.is_available() is False: checking on the CPU")
    result = {"device": str(device), "torch": torch.__version__, **check_against_reference(device)}
    result["passed"] = True  # check_against_reference raises when a difference exceeds its tolerance
    write_json(json_path, result, default=str)
    write_table(dcn_check_table(result), None, md_path,
                title=f"Deformable convolution check on {device} (torch {torch.__version__}): passed, "
                      f"tolerance {result['tolerance']:g}")
    return result


def dcn_check_table(result: dict) -> pd.DataFrame:
    """One row per backend: worst difference to the reference, and its speed."""
    rows = []
    for backend, diffs in result["max_abs_diff"].items():
        timing = result["timing_s"].get(backend, {})
        rows.append({
            "backend": backend,
            "max abs diff, output": diffs["output"],
            "max abs diff, gradients": max(v for k, v in diffs.items() if k.startswith("grad")),
            "forward s": timing.get("forward"),
            "forward+backward s": timing.get("forward_backward"),
        })
    return pd.DataFrame(rows)


def multiply_accumulates(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of conv, transposed conv, deformable conv and linear layers for one forward.

    Runs on the model's device; on the `meta` device nothing is allocated or computed, so any
    input size is free. Counts
    follow the usual convention (one MAC per weight use; bias, norm and activations ignored);
    the motion module's ConvLSTM convs are counted as the reference computes them.
    """
    from micml.models.motion import MotionModule
    from micml.ops import ModulatedDeformConv2d

    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, MotionModule):  # its ConvLSTM convs run as F.conv2d pieces
            total += module.reference_convlstm_macs(inputs[0].shape)
        elif isinstance(module, (nn.Conv2d, nn.Conv3d, ModulatedDeformConv2d)):
            weight = module.weight
            total += output.numel() * weight[0].numel()
        elif isinstance(module, nn.ConvTranspose2d):
            x = inputs[0]
            total += x.numel() * module.weight.shape[1] * module.weight[0, 0].numel()
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    counted = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear, ModulatedDeformConv2d, MotionModule)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, counted)]
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return total


def model_rows(variants: Iterable[str], sizes: Sequence[int]) -> list[dict]:
    from micml.models import build, count_parameters

    rows = []
    for variant in variants:
        model = build(variant)
        row = {
            "variant": variant,
            "params_inference": count_parameters(model, inference_only=True),
            "params_total": count_parameters(model, inference_only=False),
        }
        model = model.to("meta").eval()
        for size in sizes:
            macs = multiply_accumulates(model, (1, 3, FRAMES, size, size))
            row[f"gmac_{size}"] = round(macs / 1e9, 2)
            row[f"gflops_{size}"] = round(2 * macs / 1e9, 2)
        log.info("%s: %s", variant, row)
        rows.append(row)
    return rows


def write_model_table(variants: Iterable[str], sizes: Sequence[int], csv_path: Path | str,
                      md_path: Path | str) -> pd.DataFrame:
    table = pd.DataFrame(model_rows(variants, sizes))
    write_table(table, csv_path, md_path, title="Model variants: parameters used at inference, "
                "multiply-accumulates (GMAC) and GFLOPs (2 x GMAC) of one eval forward of a 5-frame clip")
    return table
