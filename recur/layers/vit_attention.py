"""Softmax attention over every cell of a grid: the token mixer of the Vision Transformer.

An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale
(Dosovitskiy et al., arXiv:2010.11929):

    y = softmax(Q Kᵀ / √d) V        over all cells, no mask, no positions

The layer knows no positions: a ViT adds a learned position embedding to the patches
(`input.position_embedding true`). It is the quadratic baseline of the grid mixers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .grid import GridMixer, GridMixerConfig, register_grid_mixer


@dataclass(kw_only=True)
class ViTAttentionConfig(GridMixerConfig):
    num_heads: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.impl != "auto":
            raise ValueError(f"impl must be 'auto' (the layer has one form); got {self.impl!r}")
        self.heads(self.num_heads)


@register_grid_mixer("vit_attention")
class ViTAttention(GridMixer):
    Config = ViTAttentionConfig

    def __init__(self, config: ViTAttentionConfig) -> None:
        super().__init__(config)
        D = config.d_model
        self.qkv_proj = nn.Linear(D, 3 * D, bias=False)
        self.o_proj = nn.Linear(D, D, bias=False)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        B, rows, cols, D = x.shape
        # cells in row-major order, per head: [B, heads, N, head_dim]
        q, k, v = rearrange(
            self.qkv_proj(x), "b r c (three h d) -> three b h (r c) d", three=3, h=self.config.num_heads
        )
        o = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(rearrange(o, "b h (r c) d -> b r c (h d)", r=rows))
