"""S5: one MIMO diagonal state space shared by all channels, run by a parallel scan.

Simplified State Space Layers for Sequence Modeling (Smith, Warrington, Linderman;
arXiv:2208.04933):

    x_t = Λ̄ x_{t-1} + B̄ u_t,  y_t = 2 Re(C̃ x_t) + D ⊙ u_t,  Λ̄ = exp(ΛΔ),  B̄ = (Λ̄ − 1)/Λ · B̃

x holds P/2 complex states (one per conjugate pair), u and y all H channels. Λ comes from
block-diagonal HiPPO-N (J blocks), B̃ = V⁻¹ B and C̃ = C V in its eigenbasis, one Δ per
state. `impl` picks the form of `linear_scan` on (Λ̄, B̄ u_t): "scan" (a loop inside chunks,
a log-depth scan across them), "parallel" or "naive".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..ops.ssm import LINEAR_SCAN, discretize, linear_scan, nplr
from .base import RecurrentMixer, State
from .parts import StepSizeConfig, log_uniform, state_dtype
from .registry import register_mixer
from .s4d import complex_pair


@dataclass(kw_only=True)
class S5Config(StepSizeConfig):
    # latent size P (P/2 complex states are kept, one per conjugate pair)
    d_state: int = 64
    # J: HiPPO-N blocks on the diagonal of the initial Λ
    blocks: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.blocks <= 0 or self.d_state <= 0 or self.d_state % (2 * self.blocks):
            raise ValueError(f"d_state must be a positive multiple of 2 * blocks = {2 * self.blocks}; got {self.d_state}")


@register_mixer("s5")
class S5(RecurrentMixer):
    Config = S5Config
    family = LINEAR_SCAN

    def __init__(self, config: S5Config) -> None:
        super().__init__(config)
        H, P, J = config.d_model, config.d_state, config.blocks
        size = P // J
        # HiPPO-N of one block: the normal part of LegS, eigenvectors V; one of each pair
        Lambda, _, _, V = nplr("legs", size)
        keep = Lambda.imag > 0
        Lambda, V = Lambda[keep], V[:, keep]
        B = torch.randn(P, H, dtype=torch.float64) / math.sqrt(H)  # lecun normal
        C = torch.randn(H, P, dtype=torch.float64) / math.sqrt(P)
        B_tilde = torch.cat([V.conj().T @ B[j * size : (j + 1) * size].to(V.dtype) for j in range(J)])
        C_tilde = torch.cat([C[:, j * size : (j + 1) * size].to(V.dtype) @ V for j in range(J)], dim=1)
        # Re Λ = −exp(·) < 0 keeps every state stable (S5 clips Re Λ instead)
        self.log_Lambda_real = nn.Parameter(torch.log(-Lambda.real).repeat(J).float())
        self.Lambda_imag = nn.Parameter(Lambda.imag.repeat(J).float())
        self.B = nn.Parameter(torch.view_as_real(B_tilde).float())
        self.C = nn.Parameter(torch.view_as_real(C_tilde).float())
        self.D = nn.Parameter(torch.randn(H))
        self.log_step = nn.Parameter(log_uniform(P // 2, config.dt_min, config.dt_max))

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        dtype = state_dtype(self, complex=True)
        return {"x": torch.zeros(batch_size, self.config.d_state // 2, dtype=dtype, device=device)}

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        real, cplx = state_dtype(self), state_dtype(self, complex=True)
        batch, T, _ = x.shape
        u = x.to(real)
        Lambda = torch.complex(-torch.exp(self.log_Lambda_real.to(real)), self.Lambda_imag.to(real))
        B, C = complex_pair(self.B, real), complex_pair(self.C, real)
        # ZOH with one step per state: Λ̄ [P/2], B̄ [P/2, H]
        Lambda_bar, scale = discretize(Lambda[None], torch.exp(self.log_step.to(real))[None, :])
        B_bar = scale[0, :, None] * B
        drive = torch.einsum("bth,ph->btp", u.to(cplx), B_bar)
        h0 = None if state is None else state["x"].to(cplx)
        states, final = linear_scan(
            Lambda_bar[0].expand(batch, T, -1), drive, initial_state=h0, output_final_state=True, impl=impl
        )
        y = 2 * torch.einsum("btp,hp->bth", states, C).real + u * self.D.to(real)
        return y.to(x.dtype), {"x": final}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"ssm": [self.log_Lambda_real, self.Lambda_imag, self.log_step, self.B]}
