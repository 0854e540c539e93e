"""Gated DeltaNet: the delta rule with a Mamba-2 style decay gate and an output gate.

Gated Delta Networks: Improving Mamba2 with Delta Rule (Yang, Kautz, Hatamizadeh;
arXiv:2412.06464):

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,   α_t = exp(−exp(A) softplus(x_t W_a + dt_bias)),
    y_t = (RMSNorm(S_tᵀ q_t) ⊙ SiLU(x_t W_g)) W_o
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .deltanet import DeltaNet, DeltaNetConfig
from .parts import GatedRMSNorm
from .registry import register_mixer


@dataclass(kw_only=True)
class GatedDeltaNetConfig(DeltaNetConfig):
    # the decay rate A of each head starts uniform in [a_min, a_max] (Mamba-2)
    a_min: float = 1.0
    a_max: float = 16.0
    # the step size softplus(dt_bias) starts log-uniform in [dt_min, dt_max]
    dt_min: float = 1e-3
    dt_max: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.a_min <= self.a_max:
            raise ValueError(f"need 0 < a_min <= a_max; got a_min={self.a_min}, a_max={self.a_max}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={self.dt_min}, dt_max={self.dt_max}")


def mamba2_gate_parameters(num: int, config: GatedDeltaNetConfig) -> tuple[nn.Parameter, nn.Parameter]:
    """A_log and dt_bias for `num` gates, initialised as in Mamba-2."""
    A = torch.empty(num).uniform_(config.a_min, config.a_max)
    dt = torch.exp(torch.rand(num) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min))
    dt = dt.clamp(min=1e-4)
    # inverse softplus, so that softplus(dt_bias) = dt
    dt_bias = dt + torch.log(-torch.expm1(-dt))
    return nn.Parameter(A.log()), nn.Parameter(dt_bias)


def mamba2_log_decay(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    """log α = −exp(A_log) · softplus(a + dt_bias), computed in float32 or wider."""
    wide = torch.promote_types(a.dtype, torch.float32)
    return -A_log.to(wide).exp() * F.softplus(a.to(wide) + dt_bias.to(wide))


@register_mixer("gated_deltanet")
class GatedDeltaNet(DeltaNet):
    Config = GatedDeltaNetConfig

    def __init__(self, config: GatedDeltaNetConfig) -> None:
        super().__init__(config)
        H = config.num_heads
        self.use_forget_gate = getattr(config, "use_forget_gate", True)
        if self.use_forget_gate:
            self.a_proj = nn.Linear(config.d_model, H, bias=False)
            self.A_log, self.dt_bias = mamba2_gate_parameters(H, config)

    def _init_output(self) -> None:
        self.g_proj = nn.Linear(self.config.d_model, self.value_dim, bias=False)
        self.norm = GatedRMSNorm(self.head_v)

    def _log_decay(self, x: torch.Tensor) -> torch.Tensor | None:
        if not self.use_forget_gate:
            return None
        return mamba2_log_decay(self.a_proj(x), self.A_log, self.dt_bias)

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gate = rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=self.config.num_heads)
        return self.norm(o, gate)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"no_decay": [self.A_log, self.dt_bias]} if self.use_forget_gate else {}
