"""RetNet: multi-scale retention with a fixed decay per head.

Retentive Network: A Successor to Transformer for Large Language Models
(Sun, Dong, Huang, Ma, Xia, Xue, Wang, Wei; arXiv:2307.08621), §2:

    S_t = γ_h S_{t-1} + k_t v_tᵀ,   γ_h = 1 - 2^(-5-h),
    y_t = (SiLU(x_t W_G) ⊙ GroupNorm(S_tᵀ q_t)) W_O

with q and k rotated by their absolute position (the paper's e^{inθ}), so the state
carries the number of tokens seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..ops.gla import GLA, gla
from .base import MixerConfig, RecurrentMixer, State
from .parts import GatedRMSNorm, merge_heads, positions_after, rotary, split_heads, state_dtype
from .registry import register_mixer


@dataclass(kw_only=True)
class RetNetConfig(MixerConfig):
    num_heads: int = 4
    # value width as a multiple of d_model (the paper uses 2); the key width is d_model
    expand_v: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        head_k = self.heads(self.num_heads)
        if head_k % 2:
            raise ValueError(f"d_model / num_heads = {head_k} must be even for the rotation")
        self.width("expand_v", "num_heads")


@register_mixer("retnet")
class RetNet(RecurrentMixer):
    Config = RetNetConfig
    family = GLA

    def __init__(self, config: RetNetConfig) -> None:
        super().__init__(config)
        D, H = config.d_model, config.num_heads
        self.head_k = D // H
        self.value_dim = config.width("expand_v", "num_heads")
        self.q_proj = nn.Linear(D, D, bias=False)
        self.k_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, self.value_dim, bias=False)
        self.g_proj = nn.Linear(D, self.value_dim, bias=False)
        self.norm = GatedRMSNorm(self.value_dim // H)
        self.o_proj = nn.Linear(self.value_dim, D, bias=False)
        # log γ_h with γ_h = 1 - 2^(-5-h): one fixed time scale per head
        log_decay = torch.tensor([math.log1p(-(2.0 ** (-5 - h))) for h in range(H)])
        self.register_buffer("log_decay", log_decay, persistent=False)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        H = self.config.num_heads
        return {
            "S": torch.zeros(batch_size, H, self.head_k, self.value_dim // H, device=device, dtype=state_dtype(self)),
            "position": torch.zeros(batch_size, dtype=torch.int64, device=device),
        }

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        B, T, _ = x.shape
        H = self.config.num_heads
        positions = positions_after(None if state is None else state["position"], B, T, x.device)
        q, k = rotary(split_heads(self.q_proj(x), H), positions), rotary(split_heads(self.k_proj(x), H), positions)
        g = self.log_decay.to(x.dtype).expand(B, T, H)
        o, S = gla(
            q, k, split_heads(self.v_proj(x), H), g=g, initial_state=None if state is None else state["S"],
            output_final_state=True, impl=impl,
        )
        o = self.norm(o, split_heads(self.g_proj(x), H))
        return self.o_proj(merge_heads(o)), {"S": S, "position": positions[:, -1] + 1}
