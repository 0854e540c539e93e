"""Titans' memory with attention: memory as a gate (MAG) and memory as context (MAC).

Titans: Learning to Memorize at Test Time (Behrouz, Zhong, Mirrokni, arXiv:2501.00663), §4.
Both combine the `titans` memory layer (recur.layers.memory, the memory as a layer) with
softmax attention (recur.layers.attention) that also sees P persistent learned key-value
pairs (§3.3):

    MAG (§4.2):  y = SWA_w(x),  m = M(x),  o = RMSNorm(y) ⊙ σ(RMSNorm(m))

    MAC (§4.1), over segments S of C tokens, M_R the memory's weights when S began:
        h_i = M_R(q_i) W_h,                      q_i = L2norm(x_i W_q)   (retrieval, no update)
        y_i = Attn([P, h_1, x_1, ..., h_i, x_i])_i                        (causal in the segment)
        m_i = M(y_i)                                    (the memory reads the attention output)
        o_i = RMSNorm(y_i) ⊙ σ(RMSNorm(m_i))

The paper's MAC lets every token of a segment see the whole retrieval h of the segment and
gates with the memory after the whole segment; here token i sees h_1..h_i and m_i, the
memory after token i, so that the layer is causal and decodes token by token. The retrieval
query has its own projection W_q, since the memory layer takes its queries from y.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.memory.model import features, memory_forward
from .attention import Attention, AttentionConfig
from .base import Mixer, State
from .memory import Titans
from .parts import merge_heads, split_heads
from .registry import register_mixer


@dataclass(kw_only=True)
class TitansAttentionConfig(Titans.Config):
    """The `titans` memory's options, and the attention's."""

    # learned key-value pairs every attention query sees (the paper's persistent memory)
    persistent: int = 4
    rotary_base: float = 10000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.attention_config()

    def attention_config(self, window: int = 0) -> AttentionConfig:
        return AttentionConfig(
            d_model=self.d_model, impl=self.impl, num_heads=self.num_heads, window=window,
            rotary_base=self.rotary_base, persistent=self.persistent,
        )

    def memory_config(self):
        names = {field.name for field in dataclasses.fields(Titans.Config)}
        return Titans.Config(**{name: getattr(self, name) for name in names})


class TitansAttention(Mixer):
    """The parts MAG and MAC share: the memory, the attention, the output gate, and the
    state, which is the memory's and the attention's under the prefixes "memory." and
    "attention."."""

    Config = TitansAttentionConfig
    impls = ("naive", "chunk")
    # the attention's key-value cache grows (up to the window, or to the segment)
    constant_state = False
    state_token_dims = {"attention.k": 1, "attention.v": 1}

    def __init__(self, config: TitansAttentionConfig, attention_window: int = 0) -> None:
        super().__init__(config)
        self.memory = Titans(config.memory_config())
        self.attention = Attention(config.attention_config(attention_window))
        # the gate's "learnable vector-valued weights" (§4.2) are the two norms' scales
        self.attention_norm = nn.RMSNorm(config.d_model)
        self.memory_norm = nn.RMSNorm(config.d_model)

    def start_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """The state before any token, with the path back to the memory's learned start."""
        return {**_prefixed("memory", self.memory.start_state(batch_size, device)),
                **_prefixed("attention", self.attention.init_state(batch_size, device))}

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        return {key: value.detach().clone() for key, value in self.start_state(batch_size, device).items()}

    def _gate(self, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """o = RMSNorm(y) ⊙ σ(RMSNorm(m))."""
        return self.attention_norm(y) * torch.sigmoid(self.memory_norm(m))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return self.memory.param_groups()

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._run(x, state, step=False)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self._run(x.unsqueeze(1), state, step=True)
        return y.squeeze(1), state

    @abc.abstractmethod
    def _run(self, x: torch.Tensor, state: State | None, step: bool) -> tuple[torch.Tensor, State]:
        """x [B, T, D] -> (o [B, T, D], state); `step`: T = 1, the memory's step (its naive form)."""

    def _remember(self, x: torch.Tensor, state: dict | None, step: bool) -> tuple[torch.Tensor, State]:
        """The memory layer over x [B, T, D]: by its step for one token, else its forward."""
        if step:
            m, state = self.memory.step(x[:, 0], state)
            return m.unsqueeze(1), state
        return self.memory(x, state)


@register_mixer("titans_mag")
class TitansMAG(TitansAttention):
    """Titans, memory as a gate: the memory layer and sliding-window attention read the same
    tokens, and the normalised attention output is gated by the normalised memory output."""

    @dataclass(kw_only=True)
    class Config(TitansAttentionConfig):
        # the attention's sliding window (including the current token)
        attention_window: int = 64

        def __post_init__(self) -> None:
            super().__post_init__()
            if not isinstance(self.attention_window, int) or isinstance(self.attention_window, bool) or self.attention_window < 1:
                raise ValueError(f"attention_window must be an int >= 1; got {self.attention_window!r}")

    def __init__(self, config: Config) -> None:
        super().__init__(config, attention_window=config.attention_window)

    def _run(self, x: torch.Tensor, state: State | None, step: bool) -> tuple[torch.Tensor, State]:
        memory_state, attention_state = _split(state, ("memory", "attention"))
        m, memory_state = self._remember(x, memory_state, step)
        y, attention_state = self.attention(x, attention_state)
        state = {**_prefixed("memory", memory_state), **_prefixed("attention", attention_state)}
        return self._gate(y, m), state


@register_mixer("titans_mac")
class TitansMAC(TitansAttention):
    """Titans, memory as context: in each segment, attention reads the persistent pairs, what
    the memory retrieves for the segment's tokens and the tokens; the memory then reads the
    attention's output, and gates it. The state adds the memory's weights at the segment's
    start ("retrieve.W1".., which the retrieval reads) to the memory's and the attention's,
    whose cache holds the current segment only."""

    @dataclass(kw_only=True)
    class Config(TitansAttentionConfig):
        # tokens per segment: the attention's span, and how often the retrieval's weights move
        segment: int = 16

        def __post_init__(self) -> None:
            super().__post_init__()
            if not isinstance(self.segment, int) or isinstance(self.segment, bool) or self.segment < 1:
                raise ValueError(f"segment must be an int >= 1; got {self.segment!r}")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        H, K = config.num_heads, self.memory.head_k
        self.retrieval_q = nn.Linear(config.d_model, H * K, bias=False)
        self.retrieval_out = nn.Linear(H * self.memory.head_v, config.d_model, bias=False)
        self.weight_names = [f"W{layer}" for layer in range(1, config.depth + 1)]

    def start_state(self, batch_size: int, device: torch.device | None = None) -> State:
        state = super().start_state(batch_size, device)
        # the retrieval starts from the memory's initial weights
        return {**state, **{f"retrieve.{name}": state[f"memory.{name}"].clone() for name in self.weight_names}}

    def _run(self, x: torch.Tensor, state: State | None, step: bool) -> tuple[torch.Tensor, State]:
        B, T, _ = x.shape
        C = self.config.segment
        state = self.start_state(B, x.device) if state is None else state
        memory_state, attention_state, retrieval = _split(state, ("memory", "attention", "retrieve"))
        # the cache holds a retrieval and a token per token of the segment so far
        cached = attention_state["k"].shape[1]
        if cached % 2 or cached >= 2 * C:
            raise ValueError(
                f"{self.name}: state['attention.k'] holds {cached} entries; expected an even number "
                f"below 2 · segment = {2 * C} (a retrieval and a token per token of the segment)"
            )
        phase, start, outputs = cached // 2, 0, []
        while start < T:
            end = min(T, start + C - phase)
            piece = x[:, start:end]
            # [B, 2n, D]: h_1, x_1, h_2, x_2, ..., so that the causal mask lets x_i see h_≤i
            context = torch.stack([self._retrieve(piece, retrieval), piece], dim=2).flatten(1, 2)
            y, attention_state = self.attention(context, attention_state)
            y = y[:, 1::2]
            m, memory_state = self._remember(y, memory_state, step)
            outputs.append(self._gate(y, m))
            phase += end - start
            if phase == C:
                # a new segment: the retrieval reads the memory as it is now, attention starts afresh
                phase = 0
                retrieval = {name: memory_state[name] for name in self.weight_names}
                attention_state = self.attention.init_state(B, x.device)
            start = end
        state = {
            **_prefixed("memory", memory_state), **_prefixed("attention", attention_state),
            **_prefixed("retrieve", retrieval),
        }
        return torch.cat(outputs, dim=1), state

    def _retrieve(self, x: torch.Tensor, retrieval: dict[str, torch.Tensor]) -> torch.Tensor:
        """h = M_R(φ(q)) W_h for x [B, n, D], with the weights R of the segment's start: [B, n, D]."""
        c = self.config
        weights = [retrieval[name] for name in self.weight_names]
        # [B, H, n, K]
        q = F.normalize(split_heads(self.retrieval_q(x), c.num_heads), dim=-1).transpose(1, 2)
        h, _ = memory_forward(weights, features(q, c.feature_degree).to(weights[0].dtype), c.residual, c.layer_norm)
        return self.retrieval_out(merge_heads(h.transpose(1, 2)).to(x.dtype))


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": value for key, value in state.items()}


def _split(state: State | None, prefixes: tuple[str, ...]) -> list[dict[str, torch.Tensor] | None]:
    """The sub-states under each prefix (None for a None state)."""
    if state is None:
        return [None] * len(prefixes)
    parts = {prefix: {} for prefix in prefixes}
    for key, value in state.items():
        prefix, name = key.split(".", 1)
        parts[prefix][name] = value
    return [parts[prefix] for prefix in prefixes]
