"""Mamba-2: the state space duality (SSD) layer, a scalar-decay gated linear attention.

Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured
State Space Duality (Dao, Gu; arXiv:2405.21060), §7:

    Δ_t = softplus(x_t W_Δ + b_Δ),   a_t = exp(Δ_t A_h),   A_h = -exp(A_log_h)
    S_t = a_t S_{t-1} + B_t (Δ_t u_t)ᵀ,   y_t = S_tᵀ C_t + D_h u_t
    out = (RMSNorm(y) ⊙ SiLU(z)) W_out

u, B and C pass through a short causal convolution and SiLU first. With
allow_neg_eigval the decay becomes a_t = 2 exp(Δ_t A_h) - 1 in (-1, 1) (Unlocking
State-Tracking in Linear RNNs Through Negative Eigenvalues, Grazzi et al.,
arXiv:2411.12537), which lets one layer track parity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..ops.gla import GLA, gla
from .base import Mixer, MixerConfig, State
from .parts import GatedRMSNorm, ShortConv
from .registry import register_mixer


@dataclass(kw_only=True)
class Mamba2Config(MixerConfig):
    # inner width = expand · d_model, split into heads of head_dim channels
    expand: int = 2
    head_dim: int = 16
    d_state: int = 32
    conv_kernel: int = 4
    # Δ is initialised log-uniformly in [dt_min, dt_max]
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    # decays in (-1, 1) instead of (0, 1)
    allow_neg_eigval: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        inner = self.expand * self.d_model
        if self.expand <= 0 or self.head_dim <= 0 or inner % self.head_dim:
            raise ValueError(f"expand * d_model = {inner} must be a positive multiple of head_dim = {self.head_dim}")
        if self.d_state <= 0 or self.conv_kernel <= 0:
            raise ValueError(f"d_state and conv_kernel must be positive; got {self.d_state}, {self.conv_kernel}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max; got {self.dt_min}, {self.dt_max}")


@register_mixer("mamba2")
class Mamba2(Mixer):
    Config = Mamba2Config
    family = GLA

    def __init__(self, config: Mamba2Config) -> None:
        super().__init__(config)
        D, N = config.d_model, config.d_state
        self.inner = config.expand * D
        self.num_heads = self.inner // config.head_dim
        H = self.num_heads
        # one projection for z (gate), u (input), B, C and Δ
        self.in_proj = nn.Linear(D, 2 * self.inner + 2 * N + H, bias=False)
        self.conv = ShortConv(self.inner + 2 * N, config.conv_kernel)
        dt = torch.exp(torch.empty(H).uniform_(math.log(config.dt_min), math.log(config.dt_max)))
        # b_Δ = softplus⁻¹(dt), so that Δ starts at dt
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(H))
        self.norm = GatedRMSNorm(self.inner)
        self.out_proj = nn.Linear(self.inner, D, bias=False)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        # the SSM's own parameters take no weight decay (Mamba's recipe)
        return {"no_decay": [self.dt_bias, self.A_log, self.D]}

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        N, P = self.config.d_state, self.config.head_dim
        return {
            "S": torch.zeros(batch_size, self.num_heads, N, P, device=device),
            "conv": self.conv.init_state(batch_size, device),
        }

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._mix(x, state, self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self._mix(x.unsqueeze(1), state, "naive")
        return y.squeeze(1), state

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        B_, T, _ = x.shape
        N, H = self.config.d_state, self.num_heads
        z, ubc, dt = self.in_proj(x).split([self.inner, self.inner + 2 * N, H], dim=-1)
        ubc, conv_state = self.conv(ubc, None if state is None else state["conv"])
        u, B, C = ubc.split([self.inner, N, N], dim=-1)
        # Δ: [B, T, H]; A: [H]
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log.float() if x.dtype != torch.float64 else self.A_log)
        log_decay = dt * A
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
        return self.out_proj(y), {"S": S, "conv": conv_state}
