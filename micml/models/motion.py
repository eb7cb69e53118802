"""MICML's motion module: a ConvLSTM with motion pattern mining and a motion-vision adapter.

Faithful to the reference (MICPL/MICML lib/models/Motion.py; reference/MICML_SPEC.md §2.5).
The module takes the deepest temporal features as a sequence `(B, T, C, h, w)` (C = 64,
T = 5) and returns the last layer's per-step hidden states `(B, T, C, h, w)`; the temporal
branch adds them to its features (in training only, unless asked otherwise).

For every layer l and step t:

1. `h, c = cell_l(x_t, (h, c))`, states starting at zero for every layer.
2. Node features (adapter input): `P = se1(maxpool(h))` (B x C x S x S, S = 64) **raw-reshaped**
   to B x (S*S) x C. The reshape keeps memory order (channel, row, column): row r of P is
   (channel r // S, image row r % S) and its C entries are the S pooled columns (C == S in
   MICML). This is deliberately not a channel-last permute.
3. Motion pattern mining: from (h, c), run the *same* cell over all T inputs of the layer,
   collecting [h, h~_tau] for tau = 0..T-1 (2*C*T channels) -> maxpool to S x S -> conv1 -> se2
   -> one row of S*S per channel -> w0 -> M, a B x C x C matrix. The inner loop's states are
   then discarded.
4. Motion-vision adapter: A = w1(P) and G = M @ w2(P), both raw-reshaped to B x C x (S*S);
   the adapted map is (A + G) / 2, reshaped to B x C x S x S.
5. The map is up-sampled (bilinear, align_corners=True) to h x w, concatenated with h, and
   mapped per pixel (`mapping`, channel-last linear layers); `h <- h + sigmoid(mapping)`.
   This h is the step output and the recurrent state; c stays the one from step 1.

Ablations (flags of MotionModule, used by the registry):
* `mining=False` ("micml_no_mining"): step 3 is skipped, so there is no M; the adapter keeps
  only its visual term, the adapted map is reshape(w1(P)) (not halved). `conv1`, `se2`, `w0`
  and `w2` are not built.
* `adapter=False` ("micml_no_adapter"): steps 2 and 4 are skipped; the mined map of step 3
  before w0 (se2(conv1(maxpool([h, h~_tau]...))), B x C x S x S) goes straight to step 5.
  `se1`, `w0`, `w1` and `w2` are not built.
Step 5 (the gated residual through `mapping`) is kept in both: without it nothing of the
module would reach the hidden state.

The code favours readability over speed (one python loop per layer, step and mining step);
each piece of the math is a small method so that it can later be batched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell: one conv on [x, h] gives the i, f, o, g gates."""

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.conv = nn.Conv2d(input_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                              padding=kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        gates = self.conv(torch.cat([x, h], dim=1))
        i, f, o, g = torch.split(gates, self.hidden_channels, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class SqueezeExcitation(nn.Module):
    """Channel attention: global average -> Linear(C, C/r) -> ReLU -> Linear -> sigmoid scale.

    No biases. Keys `fc.0.weight`, `fc.2.weight`.
    """

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class MotionModule(nn.Module):
    """See the module docstring. Attribute names are the reference's (state_dict keys).

    Args:
        channels: feature channels C of the input and of every hidden state (64).
        num_layers: stacked ConvLSTM layers (3).
        num_frames: T; the mining concatenation has 2*C*T channels, so T is fixed (5).
        pooled_size: S, side of the adaptive max-pool. The reference passes its `input_dim`
            (64) here, i.e. it ties S to C; we keep the value and name it.
        kernel_size: ConvLSTM kernel (3).
        mining, adapter: ablation switches (see the module docstring).
    """

    def __init__(self, channels: int = 64, num_layers: int = 3, num_frames: int = 5,
                 pooled_size: int = 64, kernel_size: int = 3, mining: bool = True, adapter: bool = True):
        super().__init__()
        if not (mining or adapter):
            raise ValueError("MotionModule needs mining or the adapter (or both); with neither "
                             "it would have no motion map to inject")
        self.channels = channels
        self.num_layers = num_layers
        self.num_frames = num_frames
        self.pooled_size = pooled_size
        self.mining = mining
        self.adapter = adapter

        cells = [ConvLSTMCell(channels, channels, kernel_size) for _ in range(num_layers)]
        self.cell_list = nn.ModuleList(cells)
        # The mining loop uses the very same cells; the reference registers them a second time,
        # so checkpoints hold both `cell_list.*` and `cell_list2.*` (identical tensors).
        self.cell_list2 = nn.ModuleList(cells)
        self.maxpool = nn.AdaptiveMaxPool2d(pooled_size)
        if mining and adapter:
            self.w0 = nn.Linear(pooled_size * pooled_size, channels)
        if adapter:
            self.w1 = nn.Linear(channels, channels)
        if mining and adapter:
            self.w2 = nn.Linear(channels, channels)
        if adapter:
            self.se1 = SqueezeExcitation(channels, reduction=2)
        if mining:
            self.se2 = SqueezeExcitation(channels, reduction=2)
            self.conv1 = nn.Sequential(
                nn.Conv2d(2 * channels * num_frames, channels, 1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            )
        self.mapping = nn.Sequential(
            nn.Linear(2 * channels, channels, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels, channels, bias=False),
        )

    # ------------------------------------------------------------------ the pieces of the math
    def node_features(self, h: torch.Tensor) -> torch.Tensor:
        """Step 2: P = se1(maxpool(h)) raw-reshaped to B x (S*S) x C (memory order kept)."""
        pooled = self.se1(self.maxpool(h))
        return pooled.reshape(h.shape[0], -1, self.channels)

    def mined_map(self, cell: ConvLSTMCell, inputs: list[torch.Tensor],
                  h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Step 3 up to se2: re-run `cell` from (h, c) over all inputs -> B x C x S x S."""
        pairs = []
        h_tilde, c_tilde = h, c
        for x in inputs:
            h_tilde, c_tilde = cell(x, (h_tilde, c_tilde))
            pairs.append(torch.cat([h, h_tilde], dim=1))
        stacked = self.maxpool(torch.cat(pairs, dim=1))
        return self.se2(self.conv1(stacked))

    def pattern_matrix(self, mined: torch.Tensor) -> torch.Tensor:
        """Step 3 end: one row of S*S per channel -> w0 -> M, B x C x C."""
        batch = mined.shape[0]
        return self.w0(mined.reshape(batch * self.channels, -1)).reshape(batch, self.channels, -1)

    def adapt(self, nodes: torch.Tensor, patterns: torch.Tensor | None) -> torch.Tensor:
        """Step 4: (A + M @ Bm) / 2 (or A alone without mining), as B x C x S x S."""
        batch, size = nodes.shape[0], self.pooled_size
        visual = self.w1(nodes).reshape(batch, self.channels, -1)
        if patterns is None:
            adapted = visual
        else:
            motion = torch.matmul(patterns, self.w2(nodes).reshape(batch, self.channels, -1))
            adapted = (visual + motion) / 2
        return adapted.reshape(batch, self.channels, size, size)

    def inject(self, h: torch.Tensor, motion_map: torch.Tensor) -> torch.Tensor:
        """Step 5: h + sigmoid(mapping([h, upsample(motion_map)])) with per-pixel linears."""
        upsampled = F.interpolate(motion_map, size=h.shape[-2:], mode="bilinear", align_corners=True)
        joint = torch.cat([h, upsampled], dim=1).permute(0, 2, 3, 1)
        gate = self.mapping(joint).permute(0, 3, 1, 2)
        return h + torch.sigmoid(gate)

    def motion_map(self, cell: ConvLSTMCell, inputs: list[torch.Tensor],
                   h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Steps 2-4 for one layer and step, according to the ablation switches."""
        if not self.adapter:
            return self.mined_map(cell, inputs, h, c)
        nodes = self.node_features(h)
        patterns = self.pattern_matrix(self.mined_map(cell, inputs, h, c)) if self.mining else None
        return self.adapt(nodes, patterns)

    # ------------------------------------------------------------------ forward
    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) -> last layer's hidden states (B, T, C, h, w)."""
        if sequence.dim() != 5 or sequence.shape[2] != self.channels:
            raise ValueError(f"MotionModule expects (B, T, {self.channels}, h, w); found shape "
                             f"{tuple(sequence.shape)}")
        if self.mining and sequence.shape[1] != self.num_frames:
            raise ValueError(f"MotionModule was built for T={self.num_frames} frames (conv1 takes "
                             f"2*C*T channels); found T={sequence.shape[1]}")
        batch, steps, _, height, width = sequence.shape
        inputs = list(sequence.unbind(dim=1))
        for cell in self.cell_list:
            h = sequence.new_zeros(batch, cell.hidden_channels, height, width)
            c = torch.zeros_like(h)
            outputs = []
            for t in range(steps):
                h, c = cell(inputs[t], (h, c))
                h = self.inject(h, self.motion_map(cell, inputs, h, c))
                outputs.append(h)
            inputs = outputs
        return torch.stack(inputs, dim=1)
