"""S4: a structured state space per channel with a diagonal-plus-low-rank HiPPO matrix.

Efficiently Modeling Long Sequences with Structured State Spaces (Gu, Goel, Ré;
arXiv:2111.00396):

    x_t = Ā x_{t-1} + B̄ u_t,  y_t = Re(C x_t) + D u_t,  A = Λ − P P^* (HiPPO-LegS in its NPLR basis), bilinear Ā, B̄

The convolution form computes K_l = Re(C Ā^l B̄) by S4's Cauchy kernel with a Woodbury
correction at the roots of unity; the recurrence uses the dense N × N Ā. The parameters
hold one eigenvalue of each conjugate pair and the model runs on the pair, so it equals a
real-valued SSM of size N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.ssm import DPLR_SSM, dplr_ssm, nplr
from .parts import StepSizeConfig, log_uniform, state_dtype
from .registry import register_mixer
from .s4d import ConvSSMMixer, complex_pair


@dataclass(kw_only=True)
class S4Config(StepSizeConfig):
    # state size N (real-equivalent; N/2 conjugate pairs are parameters)
    d_state: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_state <= 0 or self.d_state % 2:
            raise ValueError(f"d_state must be a positive even int; got {self.d_state}")


class DPLRSSM(nn.Module):
    """A = diag(Λ) − P P^* shared by all channels, B shared, C and Δ per channel."""

    def __init__(self, channels: int, d_state: int, dt_min: float, dt_max: float) -> None:
        super().__init__()
        Lambda, P, B, _ = nplr("legs", d_state)
        # one of each conjugate pair (Im λ > 0); the partners are rebuilt in `system`
        keep = Lambda.imag > 0
        if int(keep.sum()) != d_state // 2:
            raise ValueError(f"HiPPO-LegS of size {d_state} has no {d_state // 2} conjugate pairs; pick another d_state")
        Lambda, P, B = Lambda[keep], P[0, keep], B[keep]
        self.log_step = nn.Parameter(log_uniform(channels, dt_min, dt_max))
        self.log_A_real = nn.Parameter(torch.log(-Lambda.real).float())
        self.A_imag = nn.Parameter(Lambda.imag.float())
        self.P = nn.Parameter(torch.view_as_real(P).float())
        self.B = nn.Parameter(torch.view_as_real(B).float())
        self.C = nn.Parameter(torch.randn(channels, d_state // 2, 2) * 0.5**0.5)
        self.channels, self.d_state = channels, d_state

    def _full(self, pair: torch.Tensor, real: torch.dtype) -> torch.Tensor:
        """Half of a conjugate-symmetric vector -> the whole one, [..., N]."""
        half = complex_pair(pair, real)
        return torch.cat([half, half.conj()], dim=-1)

    def system(self):
        """(Λ [H, N], P [H, 1, N], B [H, N], C [H, N], Δ [H]) in the state's dtype."""
        real = state_dtype(self)
        H, N = self.channels, self.d_state
        half = torch.complex(-torch.exp(self.log_A_real.to(real)), self.A_imag.to(real))
        Lambda = torch.cat([half, half.conj()])
        P, B = self._full(self.P, real), self._full(self.B, real)
        C = self._full(self.C, real)
        return Lambda.expand(H, N), P.expand(H, 1, N), B.expand(H, N), C, torch.exp(self.log_step.to(real))

    def ssm_parameters(self) -> list[nn.Parameter]:
        return [self.log_step, self.log_A_real, self.A_imag, self.P, self.B]

    def init_state(self, batch_size: int, device=None) -> torch.Tensor:
        return torch.zeros(batch_size, self.channels, self.d_state, dtype=state_dtype(self, complex=True), device=device)

    def forward(self, u: torch.Tensor, state: torch.Tensor | None, D: torch.Tensor, impl: str):
        Lambda, P, B, C, step = self.system()
        return dplr_ssm(u, Lambda, P, B, C, step, D=D, initial_state=state, output_final_state=True, impl=impl)


@register_mixer("s4")
class S4(ConvSSMMixer):
    Config = S4Config
    family = DPLR_SSM

    def __init__(self, config: S4Config) -> None:
        super().__init__(config)
        H = config.d_model
        self.ssm = DPLRSSM(H, config.d_state, config.dt_min, config.dt_max)
        self._init_head(H)
