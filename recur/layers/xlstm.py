"""xLSTM mLSTM block: up-projection, causal convolution, mLSTM cell, gated down-projection.

xLSTM: Extended Long Short-Term Memory (Beck et al.; arXiv:2405.04517), §2.4 and Fig. 10
(the pre-up-projection mLSTM block):

    (x_m, z) = x W_up,  c = SiLU(conv(x_m)),  q = c W_q,  k = c W_k,  v = x_m W_v,
    h = (GroupNorm(mLSTM(q, k, v)) + s ⊙ c) ⊙ SiLU(z),   y = h W_down

The input and forget gates read [q, k, v]. sLSTM blocks are the `slstm` layer; stack both
with `LMConfig(pattern=("xlstm", "slstm", ...), mlp_ratio=0)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import State
from .mlstm import MLSTMCellConfig, MLSTMMixer
from .parts import RMSNorm, ShortConv, ShortConvConfig, merge_heads
from .registry import register_mixer


@dataclass(kw_only=True)
class XLSTMConfig(MLSTMCellConfig, ShortConvConfig):
    # inner width = expand · d_model
    expand: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.width("expand", "num_heads")


@register_mixer("xlstm")
class XLSTM(MLSTMMixer):
    Config = XLSTMConfig

    def __init__(self, config: XLSTMConfig) -> None:
        super().__init__(config)
        D = config.d_model
        self.inner = config.width("expand", "num_heads")
        self.head_k = self.head_v = self.inner // config.num_heads
        self.up_proj = nn.Linear(D, 2 * self.inner, bias=False)
        self.conv = ShortConv(self.inner, config.conv_size)
        self.q_proj = nn.Linear(self.inner, self.inner, bias=False)
        self.k_proj = nn.Linear(self.inner, self.inner, bias=False)
        self.v_proj = nn.Linear(self.inner, self.inner, bias=False)
        self._init_gates(3 * self.inner)
        self.norm = RMSNorm(self.head_v)
        # learnable skip from the convolution output around the cell
        self.skip = nn.Parameter(torch.ones(self.inner))
        self.down_proj = nn.Linear(self.inner, D, bias=False)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        return {**super().init_state(batch_size, device), **self.conv.init_state(batch_size, device)}

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        x_m, z = self.up_proj(x).chunk(2, dim=-1)
        c, conv_state = self.conv(x_m, state)
        q, k, v = self.q_proj(c), self.k_proj(c), self.v_proj(x_m)
        qkv = torch.cat([q, k, v], dim=-1)
        h, new_state = self._cell(q, k, v, self.igate(qkv), self.fgate(qkv), state, impl)
        h = merge_heads(self.norm(h)) + self.skip * c
        return self.down_proj(h * F.silu(z)), {**new_state, **conv_state}
