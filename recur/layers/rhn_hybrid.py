"""RHN hybrid: a recurrent highway network with an attention read over its past states and
neural gating between the layer's input and output.

Deconstructing Recurrence, Attention, and Gating: Investigating the transferability of
Transformers and Gated Recurrent Neural Networks in forecasting of dynamical systems
(Heidenreich, Vlachas, Koumoutsakos; arXiv:2410.02654). The recurrence is `rhn`'s
(Zilly et al., arXiv:1607.03474); the paper adds two mechanisms to it, each a switch here:

    h_t = RHN(x_t, h_{t-1})                                         (L highway micro-steps)
    a_t = W_o softmax_j(q_t·k_j / √d + β_{t−j}) v_j,  j = t − W .. t  (attention, window W)
    u_t = h_t + a_t                                                 (h_t alone when W = 0)
    y_t = u_t                                         gating = "none"
          x_t + u_t                                   gating = "additive"
          (1 − σ(ρ)) ⊙ x_t + σ(ρ) ⊙ u_t               gating = "learned" (a learned rate ρ)
          (1 − z_t) ⊙ x_t + z_t ⊙ u_t,  z_t = σ(W_z [x_t; u_t] + b_z)   gating = "input"

with q, k, v linear maps of h per attention head and β a learned bias per head and offset
t − j (a relative position bias). The paper's best model on Lorenz-96 and
Kuramoto–Sivashinsky is the RHN with attention and input-dependent gating, the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .base import State
from .parts import state_dtype
from .registry import register_mixer
from .rhn import RHN, RHNConfig

GATINGS = ("none", "additive", "learned", "input")


@dataclass(kw_only=True)
class RHNHybridConfig(RHNConfig):
    # neural gating between the layer's input and output: none, additive, learned or input
    gating: str = "input"
    # past states the attention reads besides the current one (0: no attention)
    attention_window: int = 16
    attention_heads: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gating not in GATINGS:
            raise ValueError(f"gating must be one of {list(GATINGS)}; got {self.gating!r}")
        if not isinstance(self.attention_window, int) or self.attention_window < 0:
            raise ValueError(f"attention_window must be an int >= 0; got {self.attention_window!r}")
        self.heads(self.attention_heads, "attention_heads")
        if self.bidirectional:
            raise ValueError("bidirectional must be False: the attention reads past states only; got True")


@register_mixer("rhn_hybrid")
class RHNHybrid(RHN):
    Config = RHNHybridConfig

    def __init__(self, config: RHNHybridConfig) -> None:
        D, W = config.d_model, config.attention_window
        super().__init__(config)
        if W:
            self.qkv = nn.Linear(D, 3 * D, bias=False)
            self.out = nn.Linear(D, D, bias=False)
            # β[head, offset], offset t − j in 0 .. W
            self.position_bias = nn.Parameter(torch.zeros(config.attention_heads, W + 1))
        if config.gating == "learned":
            self.rate = nn.Parameter(torch.zeros(D))
        elif config.gating == "input":
            self.gate = nn.Linear(2 * D, D)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        state = super().init_state(batch_size, device)
        W = self.config.attention_window
        if W:
            dtype = state_dtype(self)
            # the last W states h and which of them exist yet (1) or are before the start (0)
            state["memory"] = torch.zeros(batch_size, W, self.config.d_model, device=device, dtype=dtype)
            state["filled"] = torch.zeros(batch_size, W, device=device, dtype=dtype)
        return state

    def attend(self, h: torch.Tensor, memory: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
        """h [B, T, D], memory [B, W, D], filled [B, W] -> a [B, T, D]."""
        T, W, heads = h.shape[1], self.config.attention_window, self.config.attention_heads
        # [B, W + T, D] every state a query may read, oldest first
        keys = torch.cat([memory.to(h.dtype), h], dim=1)
        exists = torch.cat([filled, filled.new_ones(filled.shape[0], T)], dim=1) > 0
        q, k, v = rearrange(self.qkv(keys), "b s (three n d) -> three b n s d", three=3, n=heads)
        q = q[:, :, W:]
        # offset of key j from query t (both in the W + T positions): (W + t) − j
        offset = (torch.arange(T, device=h.device)[:, None] + W) - torch.arange(W + T, device=h.device)
        in_window = (offset >= 0) & (offset <= W)
        # [B, n, T, W + T] scores with the relative position bias
        scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        scores = scores + self.position_bias.to(h.dtype)[:, offset.clamp(0, W)]
        visible = in_window & exists[:, None, None, :]
        scores = scores.masked_fill(~visible, float("-inf"))
        a = torch.softmax(scores, dim=-1) @ v
        return self.out(rearrange(a, "b n t d -> b t (n d)"))

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        W = self.config.attention_window
        cell_state = None if state is None else {name: state[name] for name in self.cell.state_names}
        h, new_state = super()._mix(x, cell_state, impl)
        u = h
        if W:
            B = x.shape[0]
            # kept in the state's dtype (float32 under a bfloat16 layer), like h
            start = self.init_state(B, x.device) if state is None else state
            memory, filled = start["memory"], start["filled"]
            u = h + self.attend(h, memory, filled)
            # the last W states for the next chunk
            new_state["memory"] = torch.cat([memory.to(h.dtype), h], dim=1)[:, -W:].to(memory.dtype)
            ones = filled.new_ones(B, h.shape[1])
            new_state["filled"] = torch.cat([filled, ones], dim=1)[:, -W:]
        gating = self.config.gating
        if gating == "additive":
            y = x + u
        elif gating == "learned":
            rate = torch.sigmoid(self.rate)
            y = (1 - rate) * x + rate * u
        elif gating == "input":
            z = torch.sigmoid(self.gate(torch.cat([x, u], dim=-1)))
            y = (1 - z) * x + z * u
        else:
            y = u
        return y, new_state
