"""Test-time memory layers (TTT, Titans, Miras, ATLAS): an MLP or linear map trained as it reads.

One implementation with a config per paper (TTT-Linear, TTT-MLP, Titans, Moneta, Yaad,
Memora, ATLAS, OmegaNet).

Learning to (Learn at Test Time): RNNs with Expressive Hidden States (Sun et al.,
arXiv:2407.04620); Titans: Learning to Memorize at Test Time (Behrouz, Zhong, Mirrokni,
arXiv:2501.00663); It's All Connected: A Journey Through Test-Time Memorization,
Attentional Bias, Retention, and Online Optimization (Behrouz et al., arXiv:2504.13173);
ATLAS: Learning to Optimally Memorize the Context at Test Time (Behrouz et al.,
arXiv:2505.23735):

    q, k, v = L2norm(SiLU(conv(x W_{q,k,v}))),  η_t = η_max σ(x_t W_η),  α_t = Mamba-2 gate,
    θ_t = σ(x_t W_θ),  γ_t = σ(x_t W_γ),  δ_t = softplus(x_t W_δ)   (as the options need them)
    y_t = (RMSNorm(M_{W_t}(φ(q_t))) ⊙ SiLU(x_t W_g)) W_o

with W_t from the `memory` op family (see recur.ops.memory and docs/memory.md). Values are
unit vectors like the keys, so the inner objective's scale does not follow the activations'.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.memory import MEMORY, memory
from ..ops.memory.checks import OBJECTIVES, OPTIMIZERS, RETENTIONS
from ..ops.memory.model import layer_widths, memory_state_type
from ..ops.memory.naive import zero_state
from .base import RecurrentMixer, State
from .parts import (
    DecayGateConfig,
    GatedRMSNorm,
    ShortConvConfig,
    ShortConvs,
    decay_gate,
    decay_gate_parameters,
    merge_heads,
    split_heads,
    state_dtype,
)
from .registry import register_mixer


@dataclass(kw_only=True)
class MemoryConfig(ShortConvConfig, DecayGateConfig):
    """The memory's options (the `memory` op's arguments of the same names) and the layer's."""

    num_heads: int = 4
    # weight matrices of the memory (1: linear) and the MLP's hidden width per feature
    depth: int = 1
    mlp_expand: int = 4
    residual: bool = False
    layer_norm: bool = False
    feature_degree: int = 1
    objective: str = "l2"
    p: float = 2.0
    retention: str = "l2"
    q_norm: float = 2.0
    simplex_scale: float = 1.0
    optimizer: str = "gd"
    ns_steps: int = 5
    window: int = 1
    minibatch: int = 1
    # an input-dependent retention α_t (False: α = 1)
    forget: bool = True
    # the largest inner learning rate: η_t = lr_max · σ(x_t W_η)
    lr_max: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.heads(self.num_heads)
        for name, choices in (("objective", OBJECTIVES), ("retention", RETENTIONS), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}; got {getattr(self, name)!r}")
        for name in ("depth", "mlp_expand", "feature_degree", "window", "minibatch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        if not self.lr_max > 0:
            raise ValueError(f"lr_max must be > 0; got {self.lr_max!r}")
        if self.objective == "huber" and self.window != 1:
            raise ValueError(f"objective 'huber' needs window = 1; got {self.window}")


class MemoryMixer(RecurrentMixer):
    """The memory layer; the registered names below differ only in their config's defaults."""

    Config = MemoryConfig
    family = MEMORY

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__(config)
        D, H = config.d_model, config.num_heads
        self.head_k = config.heads(H)
        # the memory maps φ(k) to v: values as wide as the features, so a residual memory fits
        self.head_v = config.feature_degree * self.head_k
        self.hidden = config.mlp_expand * self.head_v if config.depth > 1 else None
        key_width, value_width = H * self.head_k, H * self.head_v
        self.q_proj = nn.Linear(D, key_width, bias=False)
        self.k_proj = nn.Linear(D, key_width, bias=False)
        self.v_proj = nn.Linear(D, value_width, bias=False)
        self.convs = ShortConvs({"q": key_width, "k": key_width, "v": value_width}, config.conv_size)
        # the per-token rates, one per head each: η, and θ, γ, δ where the options use them
        self.rates = nn.ModuleDict({"eta": nn.Linear(D, H)})
        if config.optimizer != "gd":
            self.rates["theta"] = nn.Linear(D, H)
        if config.window > 1:
            self.rates["gamma"] = nn.Linear(D, H)
        if config.objective == "huber":
            self.rates["huber_threshold"] = nn.Linear(D, H)
        if config.forget:
            self.a_proj = nn.Linear(D, H, bias=False)
            self.A_log, self.dt_bias = decay_gate_parameters(H, config)
        self.g_proj = nn.Linear(D, value_width, bias=False)
        self.norm = GatedRMSNorm(self.head_v)
        self.o_proj = nn.Linear(value_width, D, bias=False)
        # A deep memory learns its starting weights, as TTT and Titans do: from all-zero
        # weights every layer's gradient is zero (each is a product with the others), and from
        # Memora's uniform rows every hidden unit gets the same update, so the memory would never
        # leave its start. Memora's start stays on its simplex: c · softmax of learned logits per
        # row. A linear memory starts at zero (the delta rule's S_0 = 0).
        self.initial_weights = None
        if config.depth > 1:
            widths = layer_widths(config.feature_degree * self.head_k, self.head_v, config.depth, self.hidden)
            self.initial_weights = nn.ParameterList(
                nn.Parameter(torch.randn(H, n_in, n_out) * n_in**-0.5) for n_in, n_out in widths
            )

    def _options(self) -> dict:
        c = self.config
        names = ("depth", "residual", "layer_norm", "feature_degree", "objective", "p", "retention", "q_norm",
                 "simplex_scale", "optimizer", "ns_steps", "window", "minibatch")
        return {"hidden": self.hidden, **{name: getattr(c, name) for name in names}}

    def _memory_start(self, batch_size: int, device: torch.device | None):
        """The memory's state before any token: its starting weights (learned for a deep
        memory) as W and as the first mini-batch's anchors, zero momenta and window."""
        c, H = self.config, self.config.num_heads
        like = torch.empty(0, device=device, dtype=state_dtype(self))
        start = zero_state(
            batch_size, H, self.head_k, self.head_v, c.depth, self.hidden, c.feature_degree, c.window, c.retention,
            c.simplex_scale, like,
        )
        if self.initial_weights is None:
            return start
        starts = [w.to(like.dtype) for w in self.initial_weights]
        if c.retention == "kl":
            starts = [c.simplex_scale * w.softmax(dim=-1) for w in starts]
        weights = {
            f"{kind}{layer}": w.expand(batch_size, *w.shape)
            for layer, w in enumerate(starts, start=1) for kind in "WA"
        }
        return start._replace(**weights)

    def start_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """`init_state` with its path back to the learned starting weights, for a forward that
        starts from no state and trains them."""
        return {**self._memory_start(batch_size, device)._asdict(), **self.convs.init_state(batch_size, device)}

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        # a state is data the caller keeps: the weights' values, not a path back to them
        return {key: value.detach().clone() for key, value in self.start_state(batch_size, device).items()}

    def _rates(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """η, log α, θ, γ, δ per token and head, [B, T, H] (None where unused)."""
        wide = torch.promote_types(x.dtype, torch.float32)
        rate = {name: proj(x).to(wide) for name, proj in self.rates.items()}
        rates = {"eta": self.config.lr_max * rate["eta"].sigmoid()}
        rates["g"] = decay_gate(self.a_proj(x), self.A_log, self.dt_bias)[0] if self.config.forget else None
        rates["theta"] = rate["theta"].sigmoid() if "theta" in rate else None
        rates["gamma"] = rate["gamma"].sigmoid() if "gamma" in rate else None
        rates["huber_threshold"] = F.softplus(rate["huber_threshold"]) if "huber_threshold" in rate else None
        return rates

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        H = self.config.num_heads
        projected, conv_state = self.convs({"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}, state)
        q, k, v = (F.normalize(split_heads(projected[name], H), dim=-1) for name in ("q", "k", "v"))
        kind = memory_state_type(self.config.depth)
        if state is None:
            initial = None if self.initial_weights is None else self._memory_start(x.shape[0], x.device)
        else:
            initial = kind(*(state[name] for name in kind._fields))
        o, final = memory(q, k, v, **self._rates(x), **self._options(), initial_state=initial, output_final_state=True, impl=impl)
        y = self.o_proj(merge_heads(self.norm(o, split_heads(self.g_proj(x), H))))
        return y, {**final._asdict(), **conv_state}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"no_decay": [self.A_log, self.dt_bias]} if self.config.forget else {}


def _paper(name: str, doc: str, **defaults):
    """Registers `name`: MemoryMixer with a config whose defaults are the paper's."""
    fields = [(key, type(value), dataclasses.field(default=value)) for key, value in defaults.items()]
    title = "".join(part.capitalize() for part in name.split("_"))
    config = dataclasses.make_dataclass(f"{title}Config", fields, bases=(MemoryConfig,), kw_only=True)
    config.__doc__ = doc
    config.__module__ = __name__
    attributes = {"Config": config, "__doc__": doc, "__module__": __name__}
    return register_mixer(name)(type(title, (MemoryMixer,), attributes))


MINIBATCH = 16

TTTLinear = _paper(
    "ttt_linear", "TTT-Linear: M(x) = x + LN(x W), gradient descent on ℓ2 per mini-batch, no forgetting.",
    residual=True, layer_norm=True, minibatch=MINIBATCH, forget=False,
)
TTTMLP = _paper(
    "ttt_mlp", "TTT-MLP: M(x) = x + LN(MLP(x)) with two matrices, gradient descent on ℓ2 per mini-batch.",
    depth=2, residual=True, layer_norm=True, minibatch=MINIBATCH, forget=False,
)
Titans = _paper(
    "titans", "Titans (memory as a layer): a 2-layer MLP memory, ℓ2, momentum (surprise) and weight decay.",
    # η ≤ 1/4: with momentum θ, one inner step is stable while η · λ_max < 2 (1 + θ), λ_max
    # the curvature of the memory's loss; the MLP memory's reaches ≈ 4 at its start, and at
    # η = 1 its weights overflow within the first hundred tokens of a training batch
    depth=2, residual=True, optimizer="momentum", minibatch=MINIBATCH, lr_max=0.25,
)
Moneta = _paper(
    "moneta", "Moneta (Miras): ℓ3 attentional bias, ℓ4 retention of the normalised accumulator.",
    depth=2, residual=True, layer_norm=True, objective="lp", p=3.0, retention="lq", q_norm=4.0,
    minibatch=MINIBATCH,
)
Yaad = _paper(
    "yaad", "Yaad (Miras): Huber attentional bias with an input-dependent threshold δ_t, ℓ2 retention.",
    depth=2, residual=True, layer_norm=True, objective="huber", minibatch=MINIBATCH,
)
Memora = _paper(
    "memora", "Memora (Miras): ℓ2 attentional bias, KL retention keeping each row on a scaled simplex.",
    depth=2, residual=True, layer_norm=True, retention="kl", minibatch=MINIBATCH,
)
Atlas = _paper(
    "atlas", "ATLAS: the Omega rule over c = 4 tokens, polynomial features of degree 2, Muon (Newton–Schulz) steps.",
    depth=2, residual=True, feature_degree=2, window=4, optimizer="newton_schulz", minibatch=MINIBATCH,
)
OmegaNet = _paper(
    "omeganet", "OmegaNet: the Omega rule over c = 4 tokens, polynomial features of degree 2, gradient descent.",
    # η ≤ 1 / c: the rule sums c tokens' gradients into one step, and at η = 1 that step
    # overshoots (the memory diverges within a hundred tokens)
    depth=2, residual=True, feature_degree=2, window=4, minibatch=MINIBATCH, lr_max=0.25,
)
