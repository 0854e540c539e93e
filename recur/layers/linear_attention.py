"""Linear attention: softmax replaced by a feature-map kernel, run as an RNN.

Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention
(Katharopoulos, Vyas, Pappas, Fleuret; arXiv:2006.16236):

    S_t = S_{t-1} + φ(k_t) v_tᵀ,   y_t = RMSNorm(S_tᵀ φ(q_t)) W_o

The paper's normaliser φ(q)ᵀ Σ φ(k) is replaced by a per-head RMSNorm of the output,
which is scale-free in the same way and stays finite when the normaliser nears zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..ops.gla import GLA, gla
from .base import MixerConfig, RecurrentMixer, State
from .parts import FEATURE_MAPS, RMSNorm, feature_map, state_dtype
from .registry import register_mixer


@dataclass(kw_only=True)
class LinearAttentionConfig(MixerConfig):
    num_heads: int = 4
    # "identity", "elu+1" or "relu"
    feature_map: str = "elu+1"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.heads(self.num_heads)
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {sorted(FEATURE_MAPS)}; got {self.feature_map!r}")


@register_mixer("linear_attention")
class LinearAttention(RecurrentMixer):
    Config = LinearAttentionConfig
    family = GLA

    def __init__(self, config: LinearAttentionConfig) -> None:
        super().__init__(config)
        D = config.d_model
        self.head_dim = config.heads(config.num_heads)
        self.phi = feature_map(config.feature_map)
        self.qkv_proj = nn.Linear(D, 3 * D, bias=False)
        self.norm = RMSNorm(self.head_dim)
        self.o_proj = nn.Linear(D, D, bias=False)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        H, Dh = self.config.num_heads, self.head_dim
        return {"S": torch.zeros(batch_size, H, Dh, Dh, device=device, dtype=state_dtype(self))}

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        q, k, v = rearrange(self.qkv_proj(x), "b t (n h d) -> n b t h d", n=3, h=self.config.num_heads)
        o, S = gla(
            self.phi(q), self.phi(k), v, g=None, initial_state=None if state is None else state["S"],
            output_final_state=True, impl=impl,
        )
        return self.o_proj(rearrange(self.norm(o), "b t h d -> b t (h d)")), {"S": S}
