"""GSS: the gated state space layer.

Long Range Language Modeling via Gated State Spaces (Mehta, Gupta, Cutkosky, Neyshabur;
arXiv:2206.13947), Fig. 1:

    v = GELU(x W_v),  u = GELU(x W_u),  y = DSS(u),  o = ((y W_uc) ⊙ v) W_o

The SSM runs on a narrow projection (d_model / 4 channels) and a wide multiplicative gate
(expand · d_model) carries the width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.ssm import DIAG_SSM
from .base import Mixer, MixerConfig, State
from .registry import register_mixer
from .s4d import DiagonalSSM, check_ssm_options


@dataclass(kw_only=True)
class GSSConfig(MixerConfig):
    # width of the gate v as a multiple of d_model (F = 4096 for E = 1024 in the paper)
    expand: int = 4
    # channels of the SSM as a fraction of d_model (H = 256 for E = 1024)
    ssm_fraction: float = 0.25
    # state size per SSM channel (N/2 conjugate pairs)
    d_state: int = 64
    kernel_length: int = 1024
    dt_min: float = 1e-3
    dt_max: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ssm_options(self)
        if self.expand <= 0:
            raise ValueError(f"expand must be positive; got {self.expand}")
        if not 0 < self.ssm_fraction * self.d_model == int(self.ssm_fraction * self.d_model):
            raise ValueError(f"ssm_fraction * d_model must be a positive int; got {self.ssm_fraction * self.d_model}")


@register_mixer("gss")
class GSS(Mixer):
    Config = GSSConfig
    family = DIAG_SSM

    def __init__(self, config: GSSConfig) -> None:
        super().__init__(config)
        E = config.d_model
        width, channels = config.expand * E, int(config.ssm_fraction * E)
        self.v_proj = nn.Linear(E, width)
        self.u_proj = nn.Linear(E, channels)
        self.ssm = DiagonalSSM(
            channels, config.d_state, "legs", "dss", config.dt_min, config.dt_max, length=config.kernel_length
        )
        self.D = nn.Parameter(torch.randn(channels))
        self.uc_proj = nn.Linear(channels, width)
        self.o_proj = nn.Linear(width, E)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        return {"x": self.ssm.init_state(batch_size, device)}

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._mix(x, state, self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self._mix(x.unsqueeze(1), state, "naive")
        return y.squeeze(1), state

    def _mix(self, x, state, impl):
        v = F.gelu(self.v_proj(x))
        u = F.gelu(self.u_proj(x))
        y, h = self.ssm(u, None if state is None else state["x"], self.D, impl)
        return self.o_proj(self.uc_proj(y) * v), {"x": h}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"ssm": self.ssm.ssm_parameters()}
