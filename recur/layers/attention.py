"""Causal softmax attention with rotary positions and an optional sliding window, for
hybrids of recurrent layers and attention.

Attention Is All You Need (Vaswani et al., arXiv:1706.03762); rotary positions from
RoFormer (arXiv:2104.09864); a sliding window as in Longformer (arXiv:2004.05150):

    y_t = softmax(q_t [P_K; K_{t-w+1..t}]ᵀ / √d) [P_V; V_{t-w+1..t}]

P_K, P_V: `persistent` learned keys and values that every query sees, inside the window or
not and without positions (the persistent memory of Titans, arXiv:2501.00663, §3.3; none by
default). The state is the key-value cache: all past keys and values, or the last w - 1 of them
with a window of w. The "chunk" form runs torch's scaled_dot_product_attention (Flash
or memory-efficient kernels where available); "naive" writes the softmax out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .base import Mixer, MixerConfig, State
from .parts import positions_after, rotary
from .registry import register_mixer


@dataclass(kw_only=True)
class AttentionConfig(MixerConfig):
    num_heads: int = 4
    # attend to the last `window` positions (including the current one); 0 = unlimited
    window: int = 0
    rotary_base: float = 10000.0
    # learned key-value pairs every query attends to, whatever its position
    persistent: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        head_dim = self.heads(self.num_heads)
        if head_dim % 2:
            raise ValueError(f"d_model / num_heads = {head_dim} must be even for rotary positions")
        if self.window < 0:
            raise ValueError(f"window must be >= 0 (0 = unlimited); got {self.window}")
        if not isinstance(self.persistent, int) or isinstance(self.persistent, bool) or self.persistent < 0:
            raise ValueError(f"persistent must be an int >= 0; got {self.persistent!r}")


@register_mixer("attention")
class Attention(Mixer):
    Config = AttentionConfig
    constant_state = False
    # the cache holds any number of past keys and values
    state_token_dims = {"k": 1, "v": 1}

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__(config)
        D = config.d_model
        self.head_dim = config.heads(config.num_heads)
        self.qkv_proj = nn.Linear(D, 3 * D, bias=False)
        self.o_proj = nn.Linear(D, D, bias=False)
        if config.persistent:
            # [P, H, Dh] each, like projected keys and values
            shape = (config.persistent, config.num_heads, self.head_dim)
            self.persistent_k = nn.Parameter(torch.randn(shape) * self.head_dim**-0.5)
            self.persistent_v = nn.Parameter(torch.randn(shape) * self.head_dim**-0.5)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        H, Dh = self.config.num_heads, self.head_dim
        # the cache holds past keys and values as they are computed, in the parameters' dtype
        empty = torch.zeros(batch_size, 0, H, Dh, device=device, dtype=self.qkv_proj.weight.dtype)
        return {"k": empty, "v": empty.clone(), "position": torch.zeros(batch_size, dtype=torch.int64, device=device)}

    def state_size(self) -> int:
        """Bytes of cache per token (float32 keys and values)."""
        return 2 * self.config.d_model * 4

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._attend(x, state, "chunk" if self.config.impl == "auto" else self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self._attend(x.unsqueeze(1), state, "chunk")
        return y.squeeze(1), state

    def _attend(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        B, T, _ = x.shape
        H = self.config.num_heads
        state = state if state is not None else self.init_state(B, x.device)
        if state["k"].shape[1] != state["v"].shape[1]:
            past_k, past_v = state["k"].shape[1], state["v"].shape[1]
            raise ValueError(
                f"{self.name}: state['v'] holds {past_v} past tokens but state['k'] holds "
                f"{past_k}; expected equal"
            )
        q, k, v = rearrange(self.qkv_proj(x), "b t (n h d) -> n b t h d", n=3, h=H)
        positions = positions_after(state["position"], B, T, x.device)
        q = rotary(q, positions, self.config.rotary_base)
        k = rotary(k, positions, self.config.rotary_base)
        # [B, P + T, H, Dh]: the cached past, then this chunk
        keys = torch.cat([state["k"].to(k.dtype), k], dim=1)
        values = torch.cat([state["v"].to(v.dtype), v], dim=1)
        mask = self._mask(T, keys.shape[1], x.device)
        seen_k, seen_v = keys, values
        if self.config.persistent:
            # the persistent pairs come first, visible to every query
            P = self.config.persistent
            seen_k = torch.cat([self.persistent_k.to(k.dtype).expand(B, -1, -1, -1), keys], dim=1)
            seen_v = torch.cat([self.persistent_v.to(v.dtype).expand(B, -1, -1, -1), values], dim=1)
            mask = torch.cat([mask.new_ones(T, P), mask], dim=1)
        qh, kh, vh = (t.transpose(1, 2) for t in (q, seen_k, seen_v))
        if impl == "naive":
            scores = (qh @ kh.transpose(-1, -2)) * self.head_dim**-0.5
            y = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ vh
        else:
            y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
        y = rearrange(y, "b h t d -> b t (h d)")
        # a window of w needs the last w - 1 keys and values for the next query
        start = 0 if not self.config.window else max(0, keys.shape[1] - (self.config.window - 1))
        new_state = {
            "k": keys[:, start:],
            "v": values[:, start:],
            "position": positions[:, -1] + 1 if T else state["position"],
        }
        return self.o_proj(y), new_state

    def _mask(self, T: int, total: int, device) -> torch.Tensor:
        """[T, total] boolean: query i (at absolute slot total - T + i) sees key j <= slot."""
        query_slot = torch.arange(total - T, total, device=device)[:, None]
        key_slot = torch.arange(total, device=device)[None, :]
        mask = key_slot <= query_slot
        if self.config.window:
            mask &= key_slot > query_slot - self.config.window
        return mask
