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
from .base import RecurrentMixer, State
from .parts import RMSNorm, ShortConvConfig, ShortConvs, merge_heads, state_dtype
from .registry import register_mixer


@dataclass(kw_only=True)
class DeltaNetConfig(ShortConvConfig):
    num_heads: int = 4
    # key and value widths as multiples of d_model
    expand_k: float = 1.0
    expand_v: float = 1.0
    # β = 2σ(·) instead of σ(·): eigenvalues of the transition in [−1, 1] instead of [0, 1]
    allow_neg_eigval: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.width("expand_k", "num_heads")
        self.width("expand_v", "num_heads")


@register_mixer("deltanet")
class DeltaNet(RecurrentMixer):
    """DeltaNet; Gated DeltaNet, DeltaProduct and MoM extend it with a decay gate, an
    output gate, several keys per token (Householder steps or memories)."""

    Config = DeltaNetConfig
    family = DELTA_RULE

    def __init__(self, config: DeltaNetConfig) -> None:
        super().__init__(config)
        D, H = config.d_model, config.num_heads
        n = self.keys_per_token = self._keys_per_token()
        self.key_dim, self.value_dim = config.width("expand_k", "num_heads"), config.width("expand_v", "num_heads")
        self.head_k, self.head_v = self.key_dim // H, self.value_dim // H
        # the recurrent state per sequence, [H, K, V]
        self.state_shape: tuple[int, ...] = (H, self.head_k, self.head_v)
        self.q_proj = nn.Linear(D, self.key_dim, bias=False)
        self.k_proj = nn.Linear(D, self.key_dim * n, bias=False)
        self.v_proj = nn.Linear(D, self.value_dim * n, bias=False)
        self.b_proj = nn.Linear(D, H * n, bias=True)
        self.convs = ShortConvs({"q": self.key_dim, "k": self.key_dim * n, "v": self.value_dim * n}, config.conv_size)
        self.o_proj = nn.Linear(self.value_dim, D, bias=False)
        self._init_output()

    def _keys_per_token(self) -> int:
        """Keys, values and β per token: one for the delta rule."""
        return 1

    def _init_output(self) -> None:
        self.norm = RMSNorm(self.head_v)

    def _log_decay(self, x: torch.Tensor) -> torch.Tensor | None:
        """log α_t, [B, T, H]; DeltaNet has none."""
        return None

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o [B, T, H, V] -> [B, T, H, V] before the output projection."""
        return self.norm(o)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        S = torch.zeros(batch_size, *self.state_shape, device=device, dtype=state_dtype(self))
        return {"S": S, **self.convs.init_state(batch_size, device)}

    def _project(self, x: torch.Tensor, state: State | None):
        """The delta rule's inputs: q [B, T, H, K] and, for each of the n keys of a token,
        k [B, T, n, H, K], v [B, T, n, H, V], β [B, T, n, H]; and the new conv states."""
        H, n = self.config.num_heads, self.keys_per_token
        projected, conv_state = self.convs({"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}, state)
        q = F.normalize(rearrange(projected["q"], "b t (h d) -> b t h d", h=H), dim=-1)
        k = F.normalize(rearrange(projected["k"], "b t (n h d) -> b t n h d", n=n, h=H), dim=-1)
        v = rearrange(projected["v"], "b t (n h d) -> b t n h d", n=n, h=H)
        beta = rearrange(self.b_proj(x).sigmoid(), "b t (n h) -> b t n h", n=n)
        if self.config.allow_neg_eigval:
            beta = 2 * beta
        return q, k, v, beta, conv_state

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        q, k, v, beta, conv_state = self._project(x, state)
        g = self._log_decay(x)
        initial = None if state is None else state["S"]
        if self.keys_per_token == 1:
            o, S = delta_rule(
                q, k[:, :, 0], v[:, :, 0], beta=beta[:, :, 0], g=g, initial_state=initial,
                output_final_state=True, impl=impl,
            )
        else:
            o, S = delta_product(q, k, v, beta=beta, g=g, initial_state=initial, output_final_state=True, impl=impl)
        return self.o_proj(merge_heads(self._output(o, x))), {"S": S, **conv_state}
