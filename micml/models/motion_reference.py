"""The motion module computed as the reference code computes it: slow, plain, per sample.

Every step and every mining step runs the full ConvLSTM convolution on [x, h]; the 2*C*T-channel
concatenation is max-pooled at full resolution as a whole; the adapter loops over the batch
(reference/MICML_SPEC.md section 2.5, UESTC-nnLab/MICPL lib/models/Motion.py). It uses the
layers of a `MotionModule` and honours its ablation switches. It is the oracle of the tests and
the baseline of the benchmarks (like `micml.ops.reference` for the deformable convolution);
`MotionModule.forward` computes the same function faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .motion import MotionModule


def reference_motion_forward(motion: MotionModule, sequence: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, C, H, W), the reference's statement with `motion`'s layers."""
    batch, steps, channels, height, width = sequence.shape
    size = motion.pooled_size
    layer_input = sequence
    for layer, cell in enumerate(motion.cell_list):
        mining_cell = motion.cell_list2[layer]
        h = sequence.new_zeros(batch, channels, height, width)
        c = torch.zeros_like(h)
        outputs = []
        for t in range(steps):
            h, c = cell(layer_input[:, t], (h, c))
            if motion.mining:  # chained: each re-run starts from the previous re-run's state
                pairs, h_tilde, c_tilde = [], h, c
                for tau in range(steps):
                    h_tilde, c_tilde = mining_cell(layer_input[:, tau], (h_tilde, c_tilde))
                    pairs.append(torch.cat((h, h_tilde), 1))
                mined = motion.se2(motion.conv1(motion.maxpool(torch.cat(pairs, 1))))
            if motion.adapter:
                motion_map = _adapted_per_sample(motion, h, mined if motion.mining else None, size)
            else:
                motion_map = mined
            upsampled = F.interpolate(motion_map, size=[height, width], mode="bilinear", align_corners=True)
            gate = motion.mapping(torch.cat((h, upsampled), 1).permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
            h = h + torch.sigmoid(gate)
            outputs.append(h)
        layer_input = torch.stack(outputs, 1)
    return layer_input


def _adapted_per_sample(motion: MotionModule, h: torch.Tensor, mined: torch.Tensor | None, size: int) -> torch.Tensor:
    """The adapter, one sample at a time: w1(P), averaged with M @ w2(P) when mining."""
    batch, channels = h.shape[:2]
    nodes = motion.se1(motion.maxpool(h)).view(batch, -1, channels)
    patterns = None if mined is None else motion.w0(mined.view(batch * channels, -1)).view(batch, channels, -1)
    per_sample = []
    for b in range(batch):
        adapted = motion.w1(nodes[b]).view(channels, -1)
        if patterns is not None:
            mixed = torch.matmul(patterns[b], motion.w2(nodes[b]).view(channels, -1))
            adapted = torch.stack([adapted, mixed], 1).mean(1)
        per_sample.append(adapted.view(1, channels, size, size))
    return torch.cat(per_sample, 0)
