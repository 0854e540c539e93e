"""ViG: bidirectional gated linear attention over a grid, with 2-D locality and 2-D gating.

ViG: Linear-complexity Visual Sequence Learning with Gated Linear Attention
(Liao et al.; arXiv:2405.18425):

    x_loc = SiLU(DWConv3×3(x))                              2-D locality injection
    q, k, v = x_loc W_q, x_loc W_k, x_loc W_v               shared by both directions
    o = ½ [GLA(q, k, v; g_f) + flip(GLA(flip(q, k, v); flip(g_b)))]
    σ = sigmoid(x_loc W_g)
    y = (RMSNorm(o) ⊙ σ + RMSNorm(x_loc) ⊙ (1 - σ)) W_o       2-D gating

over the cells in row-major order. Each direction has its own data-dependent gate from
one low-rank projection, g = logsigmoid(x_loc W_1 W_2) / τ (per key channel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.gla import GLA as GLA_FAMILY
from ..ops.gla import gla
from .grid import GridMixer, GridMixerConfig, register_grid_mixer
from .parts import RMSNorm, merge_heads, split_heads


@dataclass(kw_only=True)
class ViGConfig(GridMixerConfig):
    num_heads: int = 4
    # key width as a multiple of d_model; values are d_model wide (the 2-D gate mixes them
    # with x_loc)
    expand_k: float = 0.5
    # rank of the gate projection W_1 W_2 (it makes both directions' gates)
    gate_rank: int = 16
    # temperature τ: logsigmoid(·) / τ keeps the gates near 1 at initialisation
    gate_temperature: float = 16.0
    # side of the depthwise convolution of the locality injection (odd)
    conv_size: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.impl not in GLA_FAMILY.impls:
            raise ValueError(f"impl must be one of {list(GLA_FAMILY.impls)} (the GLA op's forms); got {self.impl!r}")
        self.heads(self.num_heads)
        self.width("expand_k", "num_heads")
        if self.gate_rank <= 0:
            raise ValueError(f"gate_rank must be positive; got {self.gate_rank}")
        if self.gate_temperature <= 0:
            raise ValueError(f"gate_temperature must be positive; got {self.gate_temperature}")
        if not isinstance(self.conv_size, int) or self.conv_size <= 0 or self.conv_size % 2 == 0:
            raise ValueError(f"conv_size must be a positive odd int; got {self.conv_size!r}")


@register_grid_mixer("vig")
class ViG(GridMixer):
    Config = ViGConfig

    def __init__(self, config: ViGConfig) -> None:
        super().__init__(config)
        D = config.d_model
        self.key_dim = config.width("expand_k", "num_heads")
        self.conv = nn.Conv2d(D, D, config.conv_size, padding=config.conv_size // 2, groups=D)
        self.q_proj = nn.Linear(D, self.key_dim, bias=False)
        self.k_proj = nn.Linear(D, self.key_dim, bias=False)
        self.v_proj = nn.Linear(D, D, bias=False)
        self.gate_down = nn.Linear(D, config.gate_rank, bias=False)
        self.gate_up = nn.Linear(config.gate_rank, 2 * self.key_dim, bias=True)
        self.mix_gate = nn.Linear(D, D, bias=True)
        self.out_norm = RMSNorm(D)
        self.local_norm = RMSNorm(D)
        self.o_proj = nn.Linear(D, D, bias=False)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        config, H = self.config, self.config.num_heads
        B, rows, cols, D = x.shape
        # 2-D locality injection on [B, D, rows, cols], then cells in row-major order [B, N, D]
        local = F.silu(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).reshape(B, rows * cols, D)
        q, k, v = (split_heads(proj(local), H) for proj in (self.q_proj, self.k_proj, self.v_proj))
        # log gates of the two directions, [B, N, H, K] each
        g_forward, g_backward = (
            split_heads(g, H)
            for g in (F.logsigmoid(self.gate_up(self.gate_down(local))) / config.gate_temperature).chunk(2, dim=-1)
        )
        forward, _ = gla(q, k, v, g=g_forward, impl=config.impl)
        backward, _ = gla(q.flip(1), k.flip(1), v.flip(1), g=g_backward.flip(1), impl=config.impl)
        o = merge_heads(forward + backward.flip(1)) / 2
        # 2-D gating: how much of the global context against the local features, per channel
        sigma = torch.sigmoid(self.mix_gate(local))
        y = self.out_norm(o) * sigma + self.local_norm(local) * (1 - sigma)
        return self.o_proj(y).view(B, rows, cols, D)
