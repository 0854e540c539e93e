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
from .base import Mixer, MixerConfig, State
from .gated_deltanet import mamba2_gate_parameters, mamba2_log_decay
from .parts import GatedRMSNorm, ShortConv, short_conv_projections
from .registry import register_mixer


@dataclass(kw_only=True)
class MoMConfig(MixerConfig):
    num_heads: int = 4
    expand_k: float = 1.0
    expand_v: float = 1.0
    num_memories: int = 4
    # memories each token is routed to
    top_k: int = 2
    # one more memory that every token writes to and reads from
    shared_memory: bool = True
    conv_size: int = 4
    allow_neg_eigval: bool = False
    # weight of the load-balancing loss left in `aux_loss`
    aux_loss_scale: float = 0.01
    a_min: float = 1.0
    a_max: float = 16.0
    dt_min: float = 1e-3
    dt_max: float = 0.1

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
        if self.num_memories < 1:
            raise ValueError(f"num_memories must be >= 1; got {self.num_memories}")
        if not 1 <= self.top_k <= self.num_memories:
            raise ValueError(f"top_k must be in [1, num_memories = {self.num_memories}]; got {self.top_k}")
        if self.conv_size < 0:
            raise ValueError(f"conv_size must be >= 0; got {self.conv_size}")
        if self.aux_loss_scale < 0:
            raise ValueError(f"aux_loss_scale must be >= 0; got {self.aux_loss_scale}")
        if not 0 < self.a_min <= self.a_max:
            raise ValueError(f"need 0 < a_min <= a_max; got a_min={self.a_min}, a_max={self.a_max}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={self.dt_min}, dt_max={self.dt_max}")


@register_mixer("mom")
class MoM(Mixer):
    Config = MoMConfig
    # every memory runs the delta rule, once over all of them as one packed batch
    family = DELTA_RULE

    def __init__(self, config: MoMConfig) -> None:
        super().__init__(config)
        D, H, E = config.d_model, config.num_heads, config.num_memories
        # memories with their own state: the routed ones, then the shared one
        self.num_states = E + int(config.shared_memory)
        M = self.num_states
        self.key_dim, self.value_dim = int(D * config.expand_k), int(D * config.expand_v)
        self.head_k, self.head_v = self.key_dim // H, self.value_dim // H
        self.router = nn.Linear(D, E, bias=False)
        # the query is shared; keys, values, β and the decay belong to each memory
        self.q_proj = nn.Linear(D, self.key_dim, bias=False)
        self.k_proj = nn.Linear(D, M * self.key_dim, bias=False)
        self.v_proj = nn.Linear(D, M * self.value_dim, bias=False)
        self.b_proj = nn.Linear(D, M * H, bias=True)
        self.a_proj = nn.Linear(D, M * H, bias=False)
        self.A_log, self.dt_bias = mamba2_gate_parameters(M * H, config)
        self.convs = nn.ModuleDict()
        if config.conv_size > 0:
            for name, width in (("q", self.key_dim), ("k", M * self.key_dim), ("v", M * self.value_dim)):
                self.convs[name] = ShortConv(width, config.conv_size)
        self.g_proj = nn.Linear(D, self.value_dim, bias=False)
        self.norm = GatedRMSNorm(self.head_v)
        self.o_proj = nn.Linear(self.value_dim, D, bias=False)
        self.aux_loss: torch.Tensor | None = None

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        H, M = self.config.num_heads, self.num_states
        dtype = self.o_proj.weight.dtype
        wide = torch.promote_types(dtype, torch.float32)
        state = {"S": torch.zeros(batch_size, M, H, self.head_k, self.head_v, device=device, dtype=wide)}
        for name, conv in self.convs.items():
            state[f"conv_{name}"] = conv.init_state(batch_size, device, dtype)
        return state

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._mix(x, state, self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self._mix(x.unsqueeze(1), state, "naive")
        return y.squeeze(1), state

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"no_decay": [self.A_log, self.dt_bias]}

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
        H, M = self.config.num_heads, self.num_states
        weights, self.aux_loss = self.route(x)
        projected, new_state = short_conv_projections(
            {"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}, self.convs, state
        )
        q = F.normalize(rearrange(projected["q"], "b t (h d) -> b t h d", h=H), dim=-1)
        k = F.normalize(rearrange(projected["k"], "b t (m h d) -> b t m h d", m=M, h=H), dim=-1)
        v = rearrange(projected["v"], "b t (m h d) -> b t m h d", m=M, h=H)
        beta = rearrange(self.b_proj(x).sigmoid(), "b t (m h) -> b t m h", m=M)
        if self.config.allow_neg_eigval:
            beta = 2 * beta
        g = rearrange(mamba2_log_decay(self.a_proj(x), self.A_log, self.dt_bias), "b t (m h) -> b t m h", m=M)

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
        o = self.norm(o, rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=H))
        new_state["S"] = S.unflatten(0, (B, M))
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)")), new_state
