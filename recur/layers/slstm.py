"""sLSTM: the scalar-memory LSTM of xLSTM, with exponential gating and head-wise recurrence.

xLSTM: Extended Long Short-Term Memory (Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp,
Klambauer, Brandstetter, Hochreiter; arXiv:2405.04517), §2.2 and the sLSTM block:

    c_t = f_t c_{t-1} + i_t tanh(z̃_t),  n_t = f_t n_{t-1} + i_t,  h_t = σ(õ_t) c_t / n_t,
    i_t = exp(ĩ_t), f_t = σ(f̃_t), stabilised by the running max m_t

The input and forget gates read a causal convolution (SiLU) of x, z and o read x itself;
a per-head normalisation and an output projection follow (the block's MLP is the
model's). Usable next to mLSTM layers in an LM pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.rnn import SLSTM as SLSTMCell
from .base import State
from .parts import ShortConv, ShortConvConfig
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class SLSTMConfig(RNNConfig, ShortConvConfig):
    """RNNConfig's options and `conv_size`, the causal convolution feeding the input and
    forget gates."""

    num_heads: int = 4

    def __post_init__(self) -> None:
        if self.bidirectional:
            raise ValueError("slstm has no bidirectional form (its gate convolution is causal); got bidirectional=True")
        super().__post_init__()


@register_mixer("slstm")
class SLSTM(RNNLayer):
    Config = SLSTMConfig
    cell_type = SLSTMCell

    def __init__(self, config: SLSTMConfig) -> None:
        super().__init__(config)
        D = config.d_model
        self.conv = ShortConv(D, config.conv_size)
        direction = self.directions[0]
        # z and o from x; i and f from the convolution
        direction.in_proj = nn.Linear(D, 2 * self.hidden, bias=False)
        direction.gate_proj = nn.Linear(D, 2 * self.hidden, bias=False)
        self.norm = nn.GroupNorm(self.heads, self.hidden)
        self.out_proj = nn.Linear(self.hidden, D, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        direction = self.directions[0]
        with torch.no_grad():
            # forget gates open at the start, from 3 to 6 over the units (as for mLSTM)
            direction.b[1] = torch.linspace(3.0, 6.0, self.hidden).reshape(self.heads, self.head_dim)
            direction.b[0].zero_()

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        return {**super().init_state(batch_size, device), **self.conv.init_state(batch_size, device)}

    def gate_inputs(self, x: torch.Tensor, state: State | None):
        conv, conv_state = self.conv(x, state)
        return torch.cat([conv, x], dim=-1), conv_state

    def project(self, direction, inputs):
        conv, x = inputs.chunk(2, dim=-1)
        return torch.cat([direction.gate_proj(conv), direction.in_proj(x)], dim=-1)

    def readout(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = h.shape
        h = self.norm(h.reshape(B * T, -1).to(x.dtype)).reshape(B, T, -1)
        return self.out_proj(h)


