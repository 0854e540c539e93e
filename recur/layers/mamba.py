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
from .base import RecurrentMixer, State
from .parts import ShortConv, ShortConvConfig, StepSizeConfig, state_dtype, step_size_bias
from .registry import register_mixer


@dataclass(kw_only=True)
class MambaConfig(ShortConvConfig, StepSizeConfig):
    d_state: int = 16
    # inner width = expand · d_model
    expand: float = 2.0
    # rank of the Δ projection; 0 means ⌈d_model / 16⌉
    dt_rank: int = 0
    # the initial Δ is at least this
    dt_init_floor: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        self.width("expand")
        if self.d_state <= 0:
            raise ValueError(f"d_state must be positive; got {self.d_state}")
        if self.dt_rank < 0:
            raise ValueError(f"dt_rank must be >= 0 (0: ⌈d_model / 16⌉); got {self.dt_rank}")


@register_mixer("mamba")
class Mamba(RecurrentMixer):
    Config = MambaConfig
    family = SELECTIVE_SCAN

    def __init__(self, config: MambaConfig) -> None:
        super().__init__(config)
        D, N = config.d_model, config.d_state
        inner = config.width("expand")
        rank = config.dt_rank or math.ceil(D / 16)
        self.d_inner, self.dt_rank = inner, rank
        self.in_proj = nn.Linear(D, 2 * inner, bias=False)
        self.conv = ShortConv(inner, config.conv_size)
        self.x_proj = nn.Linear(inner, rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(rank, inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -(rank**-0.5), rank**-0.5)
        with torch.no_grad():
            # softplus(bias) = Δ at initialisation
            self.dt_proj.bias.copy_(step_size_bias(inner, config.dt_min, config.dt_max, config.dt_init_floor))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, D, bias=False)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        ssm = torch.zeros(batch_size, self.d_inner, self.config.d_state, dtype=state_dtype(self), device=device)
        return {"ssm": ssm, **self.conv.init_state(batch_size, device)}

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        N = self.config.d_state
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u, conv_state = self.conv(u, state)
        delta_low, B, C = self.x_proj(u).split([self.dt_rank, N, N], dim=-1)
        y, h = selective_scan(
            u, F.linear(delta_low, self.dt_proj.weight), -torch.exp(self.A_log), B, C,
            D=self.D, z=z, delta_bias=self.dt_proj.bias, delta_softplus=True,
            initial_state=None if state is None else state["ssm"], output_final_state=True, impl=impl,
        )
        return self.out_proj(y), {"ssm": h, **conv_state}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"no_decay": [self.A_log, self.D, self.dt_proj.bias]}
