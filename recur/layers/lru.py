"""LRU: the linear recurrent unit, a complex diagonal recurrence with a stable exponential
parametrisation.

Resurrecting Recurrent Neural Networks for Long Sequences (Orvieto, Smith, Gu, Fernando,
Gulcehre, Pascanu, De; arXiv:2303.06349):

    x_t = Λ x_{t-1} + γ ⊙ (B u_t),  y_t = Re(C x_t) + D ⊙ u_t,  Λ = exp(−exp(ν) + i exp(θ)),  γ = exp(γ_log)

|Λ| is drawn uniformly on the ring [r_min, r_max], its phase on [0, max_phase], and the
normaliser starts at γ = √(1 − |Λ|²). `impl` picks the form of `linear_scan`: "scan" (a loop
inside chunks, a log-depth scan across them), "parallel" or "naive".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..ops.ssm import LINEAR_SCAN, linear_scan
from .base import MixerConfig, RecurrentMixer, State
from .parts import state_dtype
from .registry import register_mixer
from .s4d import complex_pair


@dataclass(kw_only=True)
class LRUConfig(MixerConfig):
    # number of complex states N
    d_state: int = 64
    # |λ| uniform on the ring [r_min, r_max] (the paper's code defaults are 0 and 1; r_max < 1
    # keeps γ = √(1 − |λ|²) away from zero)
    r_min: float = 0.0
    r_max: float = 0.99
    max_phase: float = 2 * math.pi

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_state <= 0:
            raise ValueError(f"d_state must be positive; got {self.d_state}")
        if not 0 <= self.r_min < self.r_max < 1:
            raise ValueError(f"need 0 <= r_min < r_max < 1; got r_min={self.r_min}, r_max={self.r_max}")
        if self.max_phase <= 0:
            raise ValueError(f"max_phase must be positive; got {self.max_phase}")


@register_mixer("lru")
class LRU(RecurrentMixer):
    Config = LRUConfig
    family = LINEAR_SCAN

    def __init__(self, config: LRUConfig) -> None:
        super().__init__(config)
        H, N = config.d_model, config.d_state
        u1, u2 = torch.rand(N), torch.rand(N)
        radius_sq = u1 * (config.r_max**2 - config.r_min**2) + config.r_min**2
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(radius_sq)))
        self.theta_log = nn.Parameter(torch.log(config.max_phase * u2))
        modulus = torch.exp(-torch.exp(self.nu_log.detach()))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - modulus**2)))
        self.B = nn.Parameter(torch.randn(N, H, 2) / math.sqrt(2 * H))
        self.C = nn.Parameter(torch.randn(H, N, 2) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H))

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        dtype = state_dtype(self, complex=True)
        return {"x": torch.zeros(batch_size, self.config.d_state, dtype=dtype, device=device)}

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        real, cplx = state_dtype(self), state_dtype(self, complex=True)
        batch, T, _ = x.shape
        u = x.to(real)
        # Λ = exp(−exp(ν) + i exp(θ)), [N]
        Lambda = torch.exp(torch.complex(-torch.exp(self.nu_log.to(real)), torch.exp(self.theta_log.to(real))))
        B = complex_pair(self.B, real) * torch.exp(self.gamma_log.to(real))[:, None]
        C = complex_pair(self.C, real)
        # γ ⊙ B u_t, [B, T, N]
        drive = torch.einsum("bth,nh->btn", u.to(cplx), B)
        h0 = None if state is None else state["x"].to(cplx)
        states, final = linear_scan(
            Lambda.expand(batch, T, -1), drive, initial_state=h0, output_final_state=True, impl=impl
        )
        y = torch.einsum("btn,hn->bth", states, C).real + u * self.D.to(real)
        return y.to(x.dtype), {"x": final}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"ssm": [self.nu_log, self.theta_log, self.gamma_log]}
