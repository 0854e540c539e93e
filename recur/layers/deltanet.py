"""DeltaNet: linear attention whose state is updated by the delta rule.

Parallelizing Linear Transformers with the Delta Rule over Sequence Length (Yang, Wang,
Zhang, Shen, Kim; arXiv:2406.06484); negative eigenvalues from Unlocking State-Tracking in
Linear RNNs Through Negative Eigenvalues (Grazzi et al.; arXiv:2411.12537):

    S_t = (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t,
    q, k = L2norm(SiLU(conv(x W))),  β_t = σ(x_t W_β) (× 2 with allow_neg_eigval)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..ops.delta import DELTA_RULE, delta_product, delta_rule
from .base import Mixer, MixerConfig, State
from .parts import RMSNorm, ShortConv, short_conv_projections
from .registry import register_mixer


@dataclass(kw_only=True)
class DeltaNetConfig(MixerConfig):
    num_heads: int = 4
    # key and value widths as fractions of d_model
    expand_k: float = 1.0
    expand_v: float = 1.0
    # kernel of the short causal convolution on q, k and v; 0 drops it (SiLU only)
    conv_size: int = 4
    # β = 2σ(·) instead of σ(·): eigenvalues of the transition in [−1, 1] instead of [0, 1]
    allow_neg_eigval: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_heads <= 0:
            raise ValueError(f"num_heads must be positive; got {self.num_heads}")
        for name in ("expand_k", "expand_v"):
            width = getattr(self, name) * self.d_model
            if width != int(width) or width <= 0 or int(width) % self.num_heads:
                raise ValueError(
                    f"{name} * d_model = {width} must be a positive multiple of num_heads = {self.num_heads}"
                )
        if self.conv_size < 0:
            raise ValueError(f"conv_size must be >= 0; got {self.conv_size}")


@register_mixer("deltanet")
class DeltaNet(Mixer):
    """DeltaNet; Gated DeltaNet and DeltaProduct extend it with a decay gate, an output
    gate and several Householder steps per token."""

    Config = DeltaNetConfig
    family = DELTA_RULE

    def __init__(self, config: DeltaNetConfig) -> None:
        super().__init__(config)
        D, H = config.d_model, config.num_heads
        # Householder steps per token: 1 is the delta rule
        self.num_householder = getattr(config, "num_householder", 1)
        n_h = self.num_householder
        self.key_dim, self.value_dim = int(D * config.expand_k), int(D * config.expand_v)
        self.head_k, self.head_v = self.key_dim // H, self.value_dim // H
        self.q_proj = nn.Linear(D, self.key_dim, bias=False)
        self.k_proj = nn.Linear(D, self.key_dim * n_h, bias=False)
        self.v_proj = nn.Linear(D, self.value_dim * n_h, bias=False)
        self.b_proj = nn.Linear(D, H * n_h, bias=True)
        self.convs = nn.ModuleDict()
        if config.conv_size > 0:
            for name, width in (("q", self.key_dim), ("k", self.key_dim * n_h), ("v", self.value_dim * n_h)):
                self.convs[name] = ShortConv(width, config.conv_size)
        self.o_proj = nn.Linear(self.value_dim, D, bias=False)
        self._init_output()

    def _init_output(self) -> None:
        self.norm = RMSNorm(self.head_v)

    def _log_decay(self, x: torch.Tensor) -> torch.Tensor | None:
        """log α_t, [B, T, H]; DeltaNet has none."""
        return None

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o [B, T, H, V] -> [B, T, H, V] before the output projection."""
        return self.norm(o)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        H = self.config.num_heads
        dtype = self.o_proj.weight.dtype
        state = {"S": torch.zeros(batch_size, H, self.head_k, self.head_v, device=device, dtype=torch.promote_types(dtype, torch.float32))}
        for name, conv in self.convs.items():
            state[f"conv_{name}"] = conv.init_state(batch_size, device, dtype)
        return state

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._mix(x, state, self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        # one token is one step of the recurrence: the naive form is exact and O(1)
        y, state = self._mix(x.unsqueeze(1), state, "naive")
        return y.squeeze(1), state

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        H, n_h = self.config.num_heads, self.num_householder
        projected, new_state = short_conv_projections(
            {"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}, self.convs, state
        )
        q = F.normalize(rearrange(projected["q"], "b t (h d) -> b t h d", h=H), dim=-1)
        k = F.normalize(rearrange(projected["k"], "b t (n h d) -> b t n h d", n=n_h, h=H), dim=-1)
        v = rearrange(projected["v"], "b t (n h d) -> b t n h d", n=n_h, h=H)
        beta = rearrange(self.b_proj(x).sigmoid(), "b t (n h) -> b t n h", n=n_h)
        if self.config.allow_neg_eigval:
            beta = 2 * beta
        g = self._log_decay(x)
        initial = None if state is None else state["S"]
        if n_h == 1:
            o, S = delta_rule(
                q, k[:, :, 0], v[:, :, 0], beta=beta[:, :, 0], g=g, initial_state=initial,
                output_final_state=True, impl=impl,
            )
        else:
            o, S = delta_product(q, k, v, beta=beta, g=g, initial_state=initial, output_final_state=True, impl=impl)
        o = self._output(o, x)
        new_state["S"] = S
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)")), new_state
