"""GSS: the gated state space layer.

Long Range Language Modeling via Gated State Spaces (Mehta, Gupta, Cutkosky, Neyshabur;
arXiv:2206.13947), Fig. 1:

    v = GELU(x W_v),  u = GELU(x W_u),  y = DSS(u),  o = ((y W_uc) ⊙ v) W_o

The SSM (a DSS) runs on a narrow projection (expand_ssm · d_model channels) and a wide
multiplicative gate (expand · d_model) carries the width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.ssm import DIAG_SSM
from .base import State
from .dss import DSSConfig
from .registry import register_mixer
from .s4d import ConvSSMMixer, DiagonalSSM


@dataclass(kw_only=True)
class GSSConfig(DSSConfig):
    # width of the gate v as a multiple of d_model (F = 4096 for E = 1024 in the paper)
    expand: float = 4.0
    # channels of the SSM as a multiple of d_model (H = 256 for E = 1024)
    expand_ssm: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        self.width("expand")
        self.width("expand_ssm")


@register_mixer("gss")
class GSS(ConvSSMMixer):
    Config = GSSConfig
    family = DIAG_SSM

    def __init__(self, config: GSSConfig) -> None:
        super().__init__(config)
        E = config.d_model
        width, channels = config.width("expand"), config.width("expand_ssm")
        self.v_proj = nn.Linear(E, width)
        self.u_proj = nn.Linear(E, channels)
        self.ssm = DiagonalSSM(
            channels, config.d_state, config.init, "dss", config.dt_min, config.dt_max, length=config.kernel_length
        )
        self.D = nn.Parameter(torch.randn(channels))
        self.uc_proj = nn.Linear(channels, width)
        self.o_proj = nn.Linear(width, E)

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        v = F.gelu(self.v_proj(x))
        u = F.gelu(self.u_proj(x))
        y, h = self.ssm(u, None if state is None else state["x"], self.D, impl)
        return self.o_proj(self.uc_proj(y) * v), {"x": h}
