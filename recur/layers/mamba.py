"""Mamba: the selective state space block (Mamba-1).

Mamba: Linear-Time Sequence Modeling with Selective State Spaces (Gu, Dao; arXiv:2312.00752):

    x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t B_t u_t,  y_t = C_t x_t + D u_t,  (Δ_t, B_t, C_t) from u_t

Block: in_proj to (u, z); u -> causal depthwise conv -> SiLU; Δ = softplus(W_Δ (W_r u) + b_Δ)
through a rank-⌈d_model/16⌉ projection, B, C = W_B u, W_C u; selective scan; ⊙ SiLU(z);
out_proj. A = −exp(A_log) starts at S4D-Real (A_n = −n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.ssm import SELECTIVE_SCAN, selective_scan
from .base import Mixer, MixerConfig, State
from .parts import ShortConv
from .registry import register_mixer


@dataclass(kw_only=True)
class MambaConfig(MixerConfig):
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    # rank of the Δ projection; 0 means ⌈d_model / 16⌉
    dt_rank: int = 0
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_state", "d_conv", "expand"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.dt_rank < 0:
            raise ValueError(f"dt_rank must be >= 0 (0: ⌈d_model / 16⌉); got {self.dt_rank}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={self.dt_min}, dt_max={self.dt_max}")


@register_mixer("mamba")
class Mamba(Mixer):
    Config = MambaConfig
    family = SELECTIVE_SCAN

    def __init__(self, config: MambaConfig) -> None:
        super().__init__(config)
        D, N = config.d_model, config.d_state
        inner = config.expand * D
        rank = config.dt_rank or math.ceil(D / 16)
        self.d_inner, self.dt_rank = inner, rank
        self.in_proj = nn.Linear(D, 2 * inner, bias=False)
        self.conv = ShortConv(inner, config.d_conv, activation=True)
        self.x_proj = nn.Linear(inner, rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(rank, inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -(rank**-0.5), rank**-0.5)
        log_step = torch.rand(inner) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min)
        step = torch.exp(log_step).clamp(min=config.dt_init_floor)
        with torch.no_grad():
            # the inverse of softplus, so that softplus(bias) = Δ at initialisation
            self.dt_proj.bias.copy_(step + torch.log(-torch.expm1(-step)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, D, bias=False)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        dtype = self.A_log.dtype if self.A_log.dtype == torch.float64 else torch.float32
        return {
            "conv": self.conv.init_state(batch_size, device, self.in_proj.weight.dtype),
            "ssm": torch.zeros(batch_size, self.d_inner, self.config.d_state, dtype=dtype, device=device),
        }

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._mix(x, state, self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self._mix(x.unsqueeze(1), state, "naive")
        return y.squeeze(1), state

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        N = self.config.d_state
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u, conv_state = self.conv(u, None if state is None else state["conv"])
        delta_low, B, C = self.x_proj(u).split([self.dt_rank, N, N], dim=-1)
        y, h = selective_scan(
            u, F.linear(delta_low, self.dt_proj.weight), -torch.exp(self.A_log), B, C,
            D=self.D, z=z, delta_bias=self.dt_proj.bias, delta_softplus=True,
            initial_state=None if state is None else state["ssm"], output_final_state=True, impl=impl,
        )
        return self.out_proj(y), {"conv": conv_state, "ssm": h}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"no_decay": [self.A_log, self.D, self.dt_proj.bias]}
