"""LSSL: the linear state space layer with a fixed HiPPO matrix and a Krylov kernel.

Combining Recurrent, Convolutional, and Continuous-time Models with Linear State-Space
Layers (Gu, Johnson, Goel, Saab, Dao, Rudra, Ré; arXiv:2110.13985):

    x_t = Ā x_{t-1} + B̄ u_t,  y_t = C x_t + D u_t,  (Ā, B̄) = bilinear(A_HiPPO, B_HiPPO, Δ)

A and B are the HiPPO matrices (fixed, LSSL-f), Δ and C are learnt per channel; the
convolution form builds K = (C B̄, C Ā B̄, …, C Ā^{L−1} B̄) by Krylov doubling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.ssm import DENSE_SSM, dense_ssm, discretize_dense, hippo
from ..ops.ssm.hippo import MEASURES
from .parts import StepSizeConfig, log_uniform, state_dtype
from .registry import register_mixer
from .s4d import ConvSSMMixer


@dataclass(kw_only=True)
class LSSLConfig(StepSizeConfig):
    d_state: int = 64
    # the HiPPO measure: "legs" (scaled Legendre), "legt" (translated) or "fout" (Fourier)
    measure: str = "legs"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.measure not in MEASURES:
            raise ValueError(f"measure must be one of {list(MEASURES)}; got {self.measure!r}")
        if self.d_state <= 0 or (self.measure == "fout" and self.d_state % 2):
            raise ValueError(f"d_state must be positive (and even for 'fout'); got {self.d_state}")


class HiPPOSSM(nn.Module):
    def __init__(self, channels: int, d_state: int, measure: str, dt_min: float, dt_max: float) -> None:
        super().__init__()
        A, B = hippo(measure, d_state)
        self.register_buffer("A", A.float())
        self.register_buffer("B", B.float())
        self.log_step = nn.Parameter(log_uniform(channels, dt_min, dt_max))
        self.C = nn.Parameter(torch.randn(channels, d_state) * d_state**-0.5)
        self.channels, self.d_state = channels, d_state

    def ssm_parameters(self) -> list[nn.Parameter]:
        return [self.log_step]

    def init_state(self, batch_size: int, device=None) -> torch.Tensor:
        return torch.zeros(batch_size, self.channels, self.d_state, dtype=state_dtype(self), device=device)

    def forward(self, u: torch.Tensor, state: torch.Tensor | None, D: torch.Tensor, impl: str):
        real = state_dtype(self)
        H, N = self.channels, self.d_state
        step = torch.exp(self.log_step.to(real))
        A_bar, B_bar = discretize_dense(self.A.to(real).expand(H, N, N), step, self.B.to(real).expand(H, N))
        return dense_ssm(u, A_bar, B_bar, self.C.to(real), D=D, initial_state=state, output_final_state=True, impl=impl)


@register_mixer("lssl")
class LSSL(ConvSSMMixer):
    Config = LSSLConfig
    family = DENSE_SSM

    def __init__(self, config: LSSLConfig) -> None:
        super().__init__(config)
        H = config.d_model
        self.ssm = HiPPOSSM(H, config.d_state, config.measure, config.dt_min, config.dt_max)
        self._init_head(H)
