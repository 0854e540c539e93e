"""GLA: gated linear attention with a data-dependent, low-rank forget gate.

Gated Linear Attention Transformers with Hardware-Efficient Training
(Yang, Wang, Shen, Panda, Kim; arXiv:2312.06635), §4.4:

    S_t = diag(α_t) S_{t-1} + k_t v_tᵀ,   α_t = σ(x_t W_α1 W_α2 + b_α)^(1/τ),
    y_t = (RMSNorm(S_tᵀ q_t) ⊙ SiLU(x_t W_r)) W_o
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.gla import GLA as GLA_FAMILY
from ..ops.gla import gla
from .base import MixerConfig, RecurrentMixer, State
from .parts import GatedRMSNorm, merge_heads, split_heads, state_dtype
from .registry import register_mixer


@dataclass(kw_only=True)
class GLAConfig(MixerConfig):
    num_heads: int = 4
    # key and value widths as multiples of d_model (the paper halves the key width)
    expand_k: float = 0.5
    expand_v: float = 1.0
    # rank of the gate projection W_α1 W_α2
    gate_rank: int = 16
    # temperature τ: α = σ(·)^(1/τ) keeps gates near 1 at initialisation
    gate_temperature: float = 16.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.width("expand_k", "num_heads")
        self.width("expand_v", "num_heads")
        if self.gate_rank <= 0:
            raise ValueError(f"gate_rank must be positive; got {self.gate_rank}")
        if self.gate_temperature <= 0:
            raise ValueError(f"gate_temperature must be positive; got {self.gate_temperature}")


@register_mixer("gla")
class GLA(RecurrentMixer):
    Config = GLAConfig
    family = GLA_FAMILY

    def __init__(self, config: GLAConfig) -> None:
        super().__init__(config)
        D, H = config.d_model, config.num_heads
        self.key_dim, self.value_dim = config.width("expand_k", "num_heads"), config.width("expand_v", "num_heads")
        self.head_k, self.head_v = self.key_dim // H, self.value_dim // H
        self.q_proj = nn.Linear(D, self.key_dim, bias=False)
        self.k_proj = nn.Linear(D, self.key_dim, bias=False)
        self.v_proj = nn.Linear(D, self.value_dim, bias=False)
        self.gate_down = nn.Linear(D, config.gate_rank, bias=False)
        self.gate_up = nn.Linear(config.gate_rank, self.key_dim, bias=True)
        self.r_proj = nn.Linear(D, self.value_dim, bias=True)
        self.norm = GatedRMSNorm(self.head_v)
        self.o_proj = nn.Linear(self.value_dim, D, bias=False)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        H = self.config.num_heads
        return {"S": torch.zeros(batch_size, H, self.head_k, self.head_v, device=device, dtype=state_dtype(self))}

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        H = self.config.num_heads
        q, k, v = (split_heads(proj(x), H) for proj in (self.q_proj, self.k_proj, self.v_proj))
        # log α = logsigmoid(·) / τ, [B, T, H, K]
        g = split_heads(F.logsigmoid(self.gate_up(self.gate_down(x))) / self.config.gate_temperature, H)
        o, S = gla(
            q, k, v, g=g, initial_state=None if state is None else state["S"],
            output_final_state=True, impl=impl,
        )
        o = self.norm(o, split_heads(self.r_proj(x), H))
        return self.o_proj(merge_heads(o)), {"S": S}
