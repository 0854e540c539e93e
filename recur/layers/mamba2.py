"""Mamba-2: the state space duality (SSD) layer, a scalar-decay gated linear attention.

Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured
State Space Duality (Dao, Gu; arXiv:2405.21060), §7:

    Δ_t = softplus(x_t W_Δ + b_Δ),   a_t = exp(Δ_t A_h),   A_h = -exp(A_log_h)
    S_t = a_t S_{t-1} + B_t (Δ_t u_t)ᵀ,   y_t = S_tᵀ C_t + D_h u_t
    out = (RMSNorm(y) ⊙ SiLU(z)) W_out

−A_h starts uniform in [a_min, a_max] and softplus(b_Δ) log-uniform in [dt_min, dt_max]
(the decay gate Gated DeltaNet shares). u, B and C pass through a short causal
convolution and SiLU first. With
allow_neg_eigval the decay becomes a_t = 2 exp(Δ_t A_h) - 1 in (-1, 1) (Unlocking
State-Tracking in Linear RNNs Through Negative Eigenvalues, Grazzi et al.,
arXiv:2411.12537), which lets one layer track parity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..ops.gla import GLA, gla
from .base import RecurrentMixer, State
from .parts import (
    DecayGateConfig,
    GatedRMSNorm,
    ShortConv,
    ShortConvConfig,
    decay_gate,
    decay_gate_parameters,
    state_dtype,
)
from .registry import register_mixer


@dataclass(kw_only=True)
class Mamba2Config(ShortConvConfig, DecayGateConfig):
    # inner width = expand · d_model, split into heads of head_dim channels
    expand: float = 2.0
    head_dim: int = 16
    d_state: int = 32
    # decays in (-1, 1) instead of (0, 1)
    allow_neg_eigval: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.width("expand", "head_dim")
        if self.d_state <= 0:
            raise ValueError(f"d_state must be positive; got {self.d_state}")


@register_mixer("mamba2")
class Mamba2(RecurrentMixer):
    Config = Mamba2Config
    family = GLA

    def __init__(self, config: Mamba2Config) -> None:
        super().__init__(config)
        D, N = config.d_model, config.d_state
        self.inner = config.width("expand", "head_dim")
        self.num_heads = self.inner // config.head_dim
        H = self.num_heads
        # one projection for z (gate), u (input), B, C and Δ
        self.in_proj = nn.Linear(D, 2 * self.inner + 2 * N + H, bias=False)
        self.conv = ShortConv(self.inner + 2 * N, config.conv_size)
        self.A_log, self.dt_bias = decay_gate_parameters(H, config)
        self.D = nn.Parameter(torch.ones(H))
        self.norm = GatedRMSNorm(self.inner)
        self.out_proj = nn.Linear(self.inner, D, bias=False)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        # the SSM's own parameters take no weight decay (Mamba's recipe)
        return {"no_decay": [self.dt_bias, self.A_log, self.D]}

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        N, P = self.config.d_state, self.config.head_dim
        S = torch.zeros(batch_size, self.num_heads, N, P, device=device, dtype=state_dtype(self))
        return {"S": S, **self.conv.init_state(batch_size, device)}

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        B_, T, _ = x.shape
        N, H = self.config.d_state, self.num_heads
        z, ubc, dt = self.in_proj(x).split([self.inner, self.inner + 2 * N, H], dim=-1)
        ubc, conv_state = self.conv(ubc, state)
        u, B, C = ubc.split([self.inner, N, N], dim=-1)
        # log a = Δ A with A = -exp(A_log), Δ = softplus(dt + b_Δ): [B, T, H]
        log_decay, dt = decay_gate(dt, self.A_log, self.dt_bias)
        decay_sign = None
        if self.config.allow_neg_eigval:
            # a = 2 exp(ΔA) - 1 = 1 - 2(1 - exp(ΔA)); stored as log|a| and sign(a)
            a = 1 + 2 * torch.expm1(log_decay)
            decay_sign = torch.where(a < 0, -1.0, 1.0).to(a.dtype)
            log_decay = torch.log(a.abs().clamp_min(torch.finfo(a.dtype).tiny))
        u = rearrange(u, "b t (h p) -> b t h p", h=H)
        # B and C are shared by all heads (one group)
        k, q = B.unsqueeze(2).expand(B_, T, H, N), C.unsqueeze(2).expand(B_, T, H, N)
        y, S = gla(
            q, k, u * dt.unsqueeze(-1).to(u.dtype), g=log_decay, scale=1.0,
            initial_state=None if state is None else state["S"], output_final_state=True,
            decay_sign=decay_sign, impl=impl,
        )
        y = y + self.D.to(u.dtype)[:, None] * u
        y = self.norm(rearrange(y, "b t h p -> b t (h p)"), z)
        return self.out_proj(y), {"S": S, **conv_state}
