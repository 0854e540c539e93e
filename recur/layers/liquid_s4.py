"""Liquid-S4: a diagonal SSM whose kernel also reads products of consecutive inputs.

Liquid Structural State-Space Models (Hasani, Lechner, Wang, Chahine, Amini, Rus;
arXiv:2209.12951): the linearised liquid time-constant recurrence
x_t = (Ā + B̄ u_t) x_{t-1} + B̄ u_t, unrolled and truncated with the "PB" kernel, adds to the
S4 convolution one convolution per correlation order p = 2 … P:

    y_t = Σ_{p=1}^{P} Σ_{s ≤ t} Re(C Ā^{t−s} B̄^p) Π_{j<p} u_{s−j} + D u_t

Each order is an LTI system on the product of p consecutive inputs with input vector B̄^p;
they share Ā, so one state x_t = Ā x_{t-1} + Σ_p B̄^p Π_{j<p} u_{t−j} carries them all,
next to the last P − 1 inputs. The state matrix is diagonal (S4D-style), ZOH-discretised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops.ssm import DIAG_SSM, diag_ssm
from .base import State
from .registry import register_mixer
from .s4d import ConvSSMMixer, DiagonalSSM, DiagonalSSMConfig


@dataclass(kw_only=True)
class LiquidS4Config(DiagonalSSMConfig):
    # highest correlation order P (1 is plain S4D)
    liquid_degree: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.liquid_degree < 1:
            raise ValueError(f"liquid_degree must be >= 1; got {self.liquid_degree}")


@register_mixer("liquid_s4")
class LiquidS4(ConvSSMMixer):
    Config = LiquidS4Config
    family = DIAG_SSM

    def __init__(self, config: LiquidS4Config) -> None:
        super().__init__(config)
        H = config.d_model
        self.ssm = DiagonalSSM(H, config.d_state, config.init, "zoh", config.dt_min, config.dt_max)
        self._init_head(H)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        P, H = self.config.liquid_degree, self.config.d_model
        # past inputs, kept in the parameters' dtype like any cache of inputs
        inputs = torch.zeros(batch_size, P - 1, H, dtype=self.D.dtype, device=device)
        return {**super().init_state(batch_size, device), "inputs": inputs}

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        P = self.config.liquid_degree
        batch, T, H = x.shape
        if state is None:
            state = self.init_state(batch, x.device)
        A_bar, B_bar, C = self.ssm.system()
        # the previous P − 1 inputs, then this chunk: [B, P − 1 + T, H]
        history = torch.cat([state["inputs"].to(x.dtype), x], dim=1)
        orders, product = [], torch.ones_like(x)
        for j in range(P):
            # Π_{i ≤ j} u_{t−i}: order j + 1 at every t of the chunk
            product = product * history[:, P - 1 - j : P - 1 - j + T]
            orders.append(product)
        # the orders run as P·H channels sharing Ā: channel (p, h) has input vector B̄_h^p
        U = torch.cat(orders, dim=2)
        B_stack = torch.cat([B_bar**p for p in range(1, P + 1)], dim=0)
        zeros = torch.zeros_like(state["x"]).repeat(1, P - 1, 1)
        h0 = torch.cat([state["x"].to(zeros.dtype), zeros], dim=1)
        D = torch.cat([self.D, self.D.new_zeros((P - 1) * H)])
        y, h = diag_ssm(
            U, A_bar.repeat(P, 1), B_stack, C.repeat(P, 1), D=D, initial_state=h0, output_final_state=True, impl=impl
        )
        y = y.view(batch, T, P, H).sum(2)
        h = h.view(batch, P, H, -1).sum(1)
        inputs = history[:, history.shape[1] - (P - 1) :]
        return self.output(y), {"x": h, "inputs": inputs}
