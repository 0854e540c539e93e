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

from ..ops.ssm import dense_ssm, discretize_dplr, dplr_kernel, fft_conv, krylov, nplr
from ..ops.ssm.conv import dense_final_state, dense_state_response
from .registry import register_mixer
from .s4d import ConvSSMMixer, MixerConfig, compute_dtype, log_uniform


@dataclass(kw_only=True)
class S4Config(MixerConfig):
    # state size N (real-equivalent; N/2 conjugate pairs are parameters)
    d_state: int = 64
    dt_min: float = 1e-3
    dt_max: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_state <= 0 or self.d_state % 2:
            raise ValueError(f"d_state must be a positive even int; got {self.d_state}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={self.dt_min}, dt_max={self.dt_max}")


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
        self.log_dt = nn.Parameter(log_uniform(channels, dt_min, dt_max))
        self.log_A_real = nn.Parameter(torch.log(-Lambda.real).float())
        self.A_imag = nn.Parameter(Lambda.imag.float())
        self.P = nn.Parameter(torch.view_as_real(P).float())
        self.B = nn.Parameter(torch.view_as_real(B).float())
        self.C = nn.Parameter(torch.randn(channels, d_state // 2, 2) * 0.5**0.5)
        self.channels, self.d_state = channels, d_state

    def _full(self, pair: torch.Tensor, real: torch.dtype) -> torch.Tensor:
        """Half of a conjugate-symmetric vector -> the whole one, [..., N]."""
        half = torch.complex(pair[..., 0].to(real), pair[..., 1].to(real))
        return torch.cat([half, half.conj()], dim=-1)

    def system(self):
        """(Λ [H, N], P [H, 1, N], B [H, N], C [H, N], Δ [H]) in the compute dtype."""
        real, cplx = compute_dtype(self.log_dt)
        H = self.channels
        half = torch.complex(-torch.exp(self.log_A_real.to(real)), self.A_imag.to(real))
        Lambda = torch.cat([half, half.conj()])
        P, B = self._full(self.P, real), self._full(self.B, real)
        C = self._full(self.C, real)
        N = self.d_state
        return Lambda.expand(H, N), P.expand(H, 1, N), B.expand(H, N), C, torch.exp(self.log_dt.to(real))

    def discrete(self):
        Lambda, P, B, C, dt = self.system()
        A_bar, B_bar = discretize_dplr(Lambda, P, P, B, dt)
        return A_bar, B_bar, C

    def ssm_parameters(self) -> list[nn.Parameter]:
        return [self.log_dt, self.log_A_real, self.A_imag, self.P, self.B]

    def init_state(self, batch_size: int, device=None) -> torch.Tensor:
        return torch.zeros(batch_size, self.channels, self.d_state, dtype=compute_dtype(self.log_dt)[1], device=device)

    def forward(self, u: torch.Tensor, state: torch.Tensor | None, D: torch.Tensor, impl: str):
        if impl == "naive":
            A_bar, B_bar, C = self.discrete()
            return dense_ssm(u, A_bar=A_bar, B_bar=B_bar, C=C, D=D, initial_state=state, output_final_state=True, impl="naive")
        if impl not in ("auto", "chunk"):
            raise ValueError(f"impl must be one of ['auto', 'chunk', 'naive'] for s4; got {impl!r}")
        Lambda, P, B, C, dt = self.system()
        real, _ = compute_dtype(self.log_dt)
        x = u.to(real)
        T = x.shape[1]
        # the zero-state response by S4's Cauchy/Woodbury kernel
        y = fft_conv(x, dplr_kernel(Lambda, P, P, B, C, dt, T)) if T else torch.zeros_like(x)
        A_bar, B_bar = discretize_dplr(Lambda, P, P, B, dt)
        if state is not None:
            state = state.to(A_bar.dtype)
            # the initial state's free response Re(C Ā^{t+1} x_0) from Krylov rows C Ā^l
            y = dense_state_response(y, krylov(A_bar.transpose(-1, -2), C, T + 1), state)
        else:
            state = torch.zeros(x.shape[0], self.channels, self.d_state, dtype=A_bar.dtype, device=x.device)
        final = dense_final_state(x, A_bar, B_bar, state)
        return (y + x * D.to(real)).to(u.dtype), final


@register_mixer("s4")
class S4(ConvSSMMixer):
    Config = S4Config

    def __init__(self, config: S4Config) -> None:
        super().__init__(config)
        H = config.d_model
        self.ssm = DPLRSSM(H, config.d_state, config.dt_min, config.dt_max)
        self._init_head(H)
