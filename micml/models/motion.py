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
   chaining its states, (h~_tau, c~_tau) = cell_l(x_tau, (h~_tau-1, c~_tau-1)) (reference
   Motion.py:143-148), collecting [h, h~_tau] for tau = 0..T-1 (2*C*T channels)
   -> maxpool to S x S -> conv1 -> se2
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

Performance (outputs equal to the straightforward statement up to float rounding; checked in
tests/test_performance_paths.py): the input half of the ConvLSTM convolution is computed once
per layer for all T inputs and shared by every step and mining chain (the mining chains
themselves are sequential: each re-run starts from the previous re-run's state); h is
max-pooled once per step; the adapter is one batched matmul. The python loops over layers,
steps and mining steps remain.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from micml.ops.matmul import Linear, PointwiseConv2d

from . import layout


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell: one conv on [x, h] gives the i, f, o, g gates.

    `forward` is that statement. `input_gates` + `step` compute the same gates split in two,
    conv([x, h]) = conv_x(x) + conv_h(h) (equal up to float rounding), so that the input part
    of a whole sequence can be computed once and reused by every step that reads it.
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.conv = nn.Conv2d(input_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                              padding=kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        gates = self.conv(torch.cat([x, h], dim=1))
        return self.update(gates, c)

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """conv_x(x) + bias: the part of the gates that does not depend on the state."""
        weight = self.conv.weight[:, :self.input_channels]
        return F.conv2d(x, weight, self.conv.bias, padding=self.conv.padding)

    def step(self, input_gates: torch.Tensor,
             state: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from precomputed input gates; `state=None` is the zero state (no conv_h)."""
        if state is None:
            return self.update(input_gates, None)
        h, c = state
        weight = self.conv.weight[:, self.input_channels:]
        return self.update(input_gates + F.conv2d(h, weight, None, padding=self.conv.padding), c)

    def update(self, gates: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """c' = sigmoid(f) * c + sigmoid(i) * tanh(g), h' = sigmoid(o) * tanh(c'); c=None is 0."""
        i, f, o, g = torch.split(gates, self.hidden_channels, dim=1)
        new_c = torch.sigmoid(i) * torch.tanh(g)
        if c is not None:
            new_c = torch.sigmoid(f) * c + new_c
        h = torch.sigmoid(o) * torch.tanh(new_c)
        return h, new_c


class SqueezeExcitation(nn.Module):
    """Channel attention: global average -> Linear(C, C/r) -> ReLU -> Linear -> sigmoid scale.

    No biases. Keys `fc.0.weight`, `fc.2.weight`.
    """

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        self.fc = nn.Sequential(
            Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            Linear(channels // reduction, channels, bias=False),
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
            self.w0 = Linear(pooled_size * pooled_size, channels)
        if adapter:
            self.w1 = Linear(channels, channels)
        if mining and adapter:
            self.w2 = Linear(channels, channels)
        if adapter:
            self.se1 = SqueezeExcitation(channels, reduction=2)
        if mining:
            self.se2 = SqueezeExcitation(channels, reduction=2)
            self.conv1 = nn.Sequential(
                PointwiseConv2d(2 * channels * num_frames, channels, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            )
        self.mapping = nn.Sequential(
            Linear(2 * channels, channels, bias=False),
            nn.ReLU(inplace=True),
            Linear(channels, channels, bias=False),
        )

    # ------------------------------------------------------------------ the pieces of the math
    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """The adaptive max-pool, on channels-last memory on CPU: PyTorch's CPU kernel for
        (B, C, H, W)-contiguous input is 10-20x slower (4 x 64 x 96 x 96 -> 64 x 64, 2 threads:
        9.7 ms against 0.5 ms forward), and the ConvLSTM's states come out in that layout."""
        return self.maxpool(layout.to_channels_last(h))

    def node_features(self, h: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """Step 2: P = se1(maxpool(h)) raw-reshaped to B x (S*S) x C (memory order kept).

        `pooled` is maxpool(h) when the caller has it already (mining pools h too).
        """
        pooled = self.pool(h) if pooled is None else pooled
        return self.se1(pooled).reshape(h.shape[0], -1, self.channels)

    def mined_map(self, cell: ConvLSTMCell, input_gates: list[torch.Tensor], h: torch.Tensor,
                  c: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """Step 3 up to se2: re-run `cell` from (h, c) over all inputs -> B x C x S x S.

        The cell's states are chained over tau (reference Motion.py: each mining step starts
        from the previous one's state), so the steps stay sequential; their input gates are
        the layer's, computed once. The adaptive max-pool acts per channel, so pooling the
        2*C*T-channel concatenation [h, h~_0, h, h~_1, ...] equals concatenating the pooled
        pieces: h is pooled once (`pooled`) and the full-resolution concatenation never exists.
        """
        pooled = self.pool(h) if pooled is None else pooled
        pieces = []
        state = (h, c)
        for gates in input_gates:
            state = cell.step(gates, state)
            pieces += [pooled, self.pool(state[0])]
        return self.se2(self.conv1(torch.cat(pieces, dim=1)))

    def pattern_matrix(self, mined: torch.Tensor) -> torch.Tensor:
        """Step 3 end: one row of S*S per channel -> w0 -> M, B x C x C."""
        batch = mined.shape[0]
        return self.w0(mined.reshape(batch * self.channels, -1)).reshape(batch, self.channels, -1)

    def adapt(self, nodes: torch.Tensor, patterns: torch.Tensor | None) -> torch.Tensor:
        """Step 4, all samples at once: (A + M @ Bm) / 2 (or A alone without mining), B x C x S x S.

        The reference loops over the batch (one 64x64 @ 64x4096 product per sample); one
        batched matmul computes the same products.
        """
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

    def motion_map(self, cell: ConvLSTMCell, input_gates: list[torch.Tensor],
                   h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Steps 2-4 for one layer and step, according to the ablation switches."""
        pooled = self.pool(h)
        if not self.adapter:
            return self.mined_map(cell, input_gates, h, c, pooled)
        nodes = self.node_features(h, pooled)
        patterns = self.pattern_matrix(self.mined_map(cell, input_gates, h, c, pooled)) if self.mining else None
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
        layer_input = sequence
        for cell in self.cell_list:
            layer_input = self.run_layer(cell, layer_input)
        return layer_input

    def reference_convlstm_macs(self, sequence_shape: Sequence[int]) -> int:
        """MACs of the ConvLSTM convolutions as the reference computes them, for one forward.

        The reference evaluates the full conv([x, h]) once per step and, with mining, once per
        mining step (T per step); this module shares the input half instead, so a hook on its
        convolutions would count less work than the model defines. The model table reports
        the reference's count, which is what the paper's GFLOPs column compares.
        """
        batch, steps, _, height, width = sequence_shape
        evaluations_per_step = 1 + (steps if self.mining else 0)
        macs = 0
        for cell in self.cell_list:
            weight = cell.conv.weight
            macs += steps * evaluations_per_step * batch * height * width * weight.shape[0] * weight[0].numel()
        return macs

    def run_layer(self, cell: ConvLSTMCell, layer_input: torch.Tensor) -> torch.Tensor:
        """One ConvLSTM layer with mining and adapter at every step: (B, T, C, h, w) -> same.

        The input half of the cell's convolution, conv_x(x_tau), is computed once for all T
        inputs (one batched call) and shared by the step t and by every mining chain: the
        reference evaluates it 1 + T times per step.
        """
        batch, steps, channels, height, width = layer_input.shape
        input_gates = cell.input_gates(layer_input.reshape(batch * steps, channels, height, width))
        input_gates = list(input_gates.view(batch, steps, -1, height, width).unbind(dim=1))
        state, outputs = None, []  # None: the zero state every layer starts from
        for t in range(steps):
            h, c = cell.step(input_gates[t], state)
            h = self.inject(h, self.motion_map(cell, input_gates, h, c))
            state = (h, c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)
