"""MoM: a mixture of memories, each a gated delta rule over the tokens routed to it.

MoM: Linear Sequence Modeling with Mixture-of-Memories (Du, Sun, et al.; arXiv:2502.13685):

    (w_t, e_t) = top-k(softmax(x_t W_r)),   S^e_t = α^e_t (I − β^e_t k^e_t k^e_tᵀ) S^e_{t-1} + β^e_t k^e_t v^e_tᵀ
    only for the memories e ∈ e_t,   o_t = Σ_{e ∈ e_t} w_{t,e} S^{eᵀ}_t q_t (+ a shared memory over all tokens)

Each memory's state moves only on its own tokens: the tokens of every (sequence, memory)
pair are packed into one variable-length sequence (time order kept) and the gated delta
rule runs once over all of them. A Switch-style load-balancing loss is left in `aux_loss`
after every forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..ops.delta import DELTA_RULE, delta_rule
from .base import State
from .gated_deltanet import GatedDeltaNet, GatedDeltaNetConfig
from .parts import merge_heads
from .registry import register_mixer


@dataclass(kw_only=True)
class MoMConfig(GatedDeltaNetConfig):
    num_memories: int = 4
    # memories each token is routed to
    top_k: int = 2
    # one more memory that every token writes to and reads from
    shared_memory: bool = True
    # weight of the load-balancing loss left in `aux_loss`
    aux_loss_scale: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_memories < 1:
            raise ValueError(f"num_memories must be >= 1; got {self.num_memories}")
        if not 1 <= self.top_k <= self.num_memories:
            raise ValueError(f"top_k must be in [1, num_memories = {self.num_memories}]; got {self.top_k}")
        if self.aux_loss_scale < 0:
            raise ValueError(f"aux_loss_scale must be >= 0; got {self.aux_loss_scale}")


@register_mixer("mom")
class MoM(GatedDeltaNet):
    """Gated DeltaNet with one key, value, β and decay per memory and token (the query is
    shared), a router, and a state per memory."""

    Config = MoMConfig
    # every memory runs the delta rule, once over all of them as one packed batch
    family = DELTA_RULE

    def __init__(self, config: MoMConfig) -> None:
        super().__init__(config)
        self.router = nn.Linear(config.d_model, config.num_memories, bias=False)
        self.state_shape = (self.keys_per_token, *self.state_shape)
        self.aux_loss: torch.Tensor | None = None

    def _keys_per_token(self) -> int:
        # memories with their own state: the routed ones, then the shared one
        return self.config.num_memories + int(self.config.shared_memory)

    def _decays_per_token(self) -> int:
        return self.keys_per_token

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Routing weights [B, T, M] (zero for memories a token skips; 1 for the shared
        memory) and the load-balancing loss."""
        E, top_k = self.config.num_memories, self.config.top_k
        logits = self.router(x)
        probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(-1)
        top_p, top_e = probs.topk(top_k, dim=-1)
        top_p = top_p / top_p.sum(-1, keepdim=True)
        weights = torch.zeros_like(probs).scatter(-1, top_e, top_p)
        # Switch Transformer: E · Σ_e (share of routing slots to e) · (mean probability of e)
        routed_share = F.one_hot(top_e, E).to(probs.dtype).flatten(0, -2).mean(0) * E / top_k
        aux_loss = self.config.aux_loss_scale * (routed_share.detach() * probs.flatten(0, -2).mean(0)).sum()
        if self.config.shared_memory:
            weights = torch.cat([weights, torch.ones_like(weights[..., :1])], dim=-1)
        return weights.to(x.dtype), aux_loss

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        B, T, _ = x.shape
        H, M = self.config.num_heads, self.keys_per_token
        weights, self.aux_loss = self.route(x)
        q, k, v, beta, conv_state = self._project(x, state)
        g = rearrange(self._log_decay(x), "b t (m h) -> b t m h", m=M)

        # Pack the tokens of every (sequence b, memory m) pair, in time order, as one
        # sequence each: row b·M + m of the [B·M, T] routing mask.
        routed = rearrange(weights != 0, "b t m -> (b m) t")
        rows, t = routed.nonzero(as_tuple=True)
        b, m = rows // M, rows % M
        lengths = routed.sum(-1)
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0))
        initial = None if state is None else state["S"].flatten(0, 1)
        o_packed, S = delta_rule(
            q[b, t][None], k[b, t, m][None], v[b, t, m][None], beta=beta[b, t, m][None], g=g[b, t, m][None],
            initial_state=initial, output_final_state=True, cu_seqlens=cu_seqlens, impl=impl,
        )
        # o_t = Σ_m w_{t,m} o^m_t over the memories token t was routed to: [B, T, H, V]
        weighted = o_packed[0] * weights[b, t, m][:, None, None]
        o = weighted.new_zeros(B, T, H, self.head_v).index_put((b, t), weighted, accumulate=True)
        return self.o_proj(merge_heads(self._output(o, x))), {"S": S.unflatten(0, (B, M)), **conv_state}
