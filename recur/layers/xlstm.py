"""xLSTM mLSTM block: up-projection, causal convolution, mLSTM cell, gated down-projection.

xLSTM: Extended Long Short-Term Memory (Beck et al.; arXiv:2405.04517), §2.4 and Fig. 10
(the pre-up-projection mLSTM block):

    (x_m, z) = x W_up,  c = SiLU(conv(x_m)),  q = c W_q,  k = c W_k,  v = x_m W_v,
    h = (GroupNorm(mLSTM(q, k, v)) + s ⊙ c) ⊙ SiLU(z),   y = h W_down

The input and forget gates read [q, k, v]. sLSTM blocks are the `slstm` layer; stack both
with `LMConfig(pattern=("xlstm", "slstm", ...), mlp_ratio=0)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..ops.mlstm import MLSTM, MLSTMState, mlstm
from ..ops.mlstm.checks import INPUT_GATES
from .base import Mixer, MixerConfig, State
from .mlstm import init_gates, mlstm_state
from .parts import RMSNorm, ShortConv
from .registry import register_mixer


@dataclass(kw_only=True)
class XLSTMConfig(MixerConfig):
    num_heads: int = 4
    # inner width = proj_factor · d_model
    proj_factor: float = 2.0
    conv_size: int = 4
    # "exp" (mLSTM) or "sigmoid" (mLSTMsig)
    input_gate: str = "exp"
    eps: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        inner = self.proj_factor * self.d_model
        if self.num_heads <= 0 or inner != int(inner) or inner <= 0 or int(inner) % self.num_heads:
            raise ValueError(
                f"proj_factor * d_model = {inner} must be a positive multiple of num_heads = {self.num_heads}"
            )
        if self.conv_size < 1:
            raise ValueError(f"conv_size must be >= 1; got {self.conv_size}")
        if self.input_gate not in INPUT_GATES:
            raise ValueError(f"input_gate must be one of {list(INPUT_GATES)}; got {self.input_gate!r}")


@register_mixer("xlstm")
class XLSTM(Mixer):
    Config = XLSTMConfig
    family = MLSTM

    def __init__(self, config: XLSTMConfig) -> None:
        super().__init__(config)
        D, H = config.d_model, config.num_heads
        self.inner = int(config.proj_factor * D)
        self.head_dim = self.inner // H
        self.up_proj = nn.Linear(D, 2 * self.inner, bias=False)
        self.conv = ShortConv(self.inner, config.conv_size)
        self.q_proj = nn.Linear(self.inner, self.inner, bias=False)
        self.k_proj = nn.Linear(self.inner, self.inner, bias=False)
        self.v_proj = nn.Linear(self.inner, self.inner, bias=False)
        self.igate = nn.Linear(3 * self.inner, H, bias=True)
        self.fgate = nn.Linear(3 * self.inner, H, bias=True)
        init_gates(self.igate, self.fgate)
        self.norm = RMSNorm(self.head_dim)
        # learnable skip from the convolution output around the cell
        self.skip = nn.Parameter(torch.ones(self.inner))
        self.down_proj = nn.Linear(self.inner, D, bias=False)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        dtype = self.down_proj.weight.dtype
        state = mlstm_state(batch_size, self.config.num_heads, self.head_dim, self.head_dim, device, dtype)
        state["conv"] = self.conv.init_state(batch_size, device, dtype)
        return state

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._mix(x, state, self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self._mix(x.unsqueeze(1), state, "naive")
        return y.squeeze(1), state

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        cfg = self.config
        heads = lambda t: rearrange(t, "b t (h d) -> b t h d", h=cfg.num_heads)  # noqa: E731
        x_m, z = self.up_proj(x).chunk(2, dim=-1)
        c, conv_state = self.conv(x_m, None if state is None else state["conv"])
        q, k, v = self.q_proj(c), self.k_proj(c), self.v_proj(x_m)
        qkv = torch.cat([q, k, v], dim=-1)
        h, final = mlstm(
            heads(q), heads(k), heads(v), i=self.igate(qkv), f=self.fgate(qkv),
            initial_state=None if state is None else MLSTMState(state["C"], state["n"], state["m"]),
            output_final_state=True, eps=cfg.eps, input_gate=cfg.input_gate, impl=impl,
        )
        h = rearrange(self.norm(h), "b t h d -> b t (h d)") + self.skip * c
        y = self.down_proj(h * torch.nn.functional.silu(z))
        return y, {"C": final.C, "n": final.n, "m": final.m, "conv": conv_state}
