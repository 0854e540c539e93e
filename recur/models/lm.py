"""A language model over any mixer or mix of mixers.

Embedding → blocks (one mixer name per layer, from `mixer` or a repeating `pattern`) →
final norm → head tied to the embedding. `generate` prefills the prompt with the
chunkwise forms and then decodes token by token with `step`, so recurrent layers use
O(1) memory per new token.

Padded batches (`attention_mask`, 1 for a token and 0 for padding, on either side) run
each row at its true length: the padding is removed, rows of equal length run together,
and a padded position never reaches a layer, so every row ends in the state its unpadded
prompt gives. Rows whose states differ in size (key-value caches of prompts of different
lengths) decode in groups of equal size, held in a `GroupedState`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Mixer, State, layer_class, layer_config
from ..layers.grid import GRID_MIXERS
from ..layers.parts import RMSNorm
from .block import Block


@dataclass(kw_only=True)
class LMConfig:
    """The backbone (and, for token inputs, the vocabulary) of every model."""

    # token ids the model embeds; 0 when the inputs are not tokens (vectors, images)
    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    # the mixer of every layer; with a `pattern` it is ignored and stored as "" (a saved
    # config then names the layers' mixers once, in `pattern`). A grid mixer (`recur list`)
    # makes the backbone read image patches on their 2-D layout [B, H, W, D]
    mixer: str = "gla"
    # mixer names repeated over the layers, e.g. ("gla", "gla", "gla", "attention") for 3:1
    pattern: tuple[str, ...] = ()
    # per mixer name, options for its typed config: {"gla": {"num_heads": 4}}. A value may
    # depend on depth: {"per_layer": [v_0, v_1, ...]} (one per layer of that mixer, in order)
    # or {"linspace": [first, last]} (evenly spaced from its first layer to its last)
    mixer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # SwiGLU size relative to d_model; 0 drops the MLP (mixer-only blocks)
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    dropout: float = 0.0
    tie_embeddings: bool = True
    # a whole forecasting model in place of the backbone and head (recur.models.tpgn's
    # FORECASTERS, e.g. "tpgn"; it reads d_model and ignores the layer fields); "" = the backbone
    forecaster: str = ""
    # the forecaster's own options, e.g. {"period": 12}
    forecaster_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "vocab_size" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'vocab_size' else 'positive'} int; got {value!r}")
        self.pattern = tuple(self.pattern)
        if self.pattern:
            self.mixer = ""
        elif not self.mixer:
            raise ValueError("mixer is empty; name the mixer of every layer or give a pattern")
        # an unknown mixer name fails here, with close matches, before any layer is built
        for name in (*self.layer_mixers(), *self.mixer_options):
            layer_class(name)
        for name, options in self.layer_options():
            try:
                layer_config(name, self.d_model, **options)
            except ValueError as error:
                raise ValueError(_naming_keys(name, str(error))) from None
        if self.mlp_ratio < 0:
            raise ValueError(f"mlp_ratio must be >= 0; got {self.mlp_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")

    @property
    def grid(self) -> bool:
        """Whether a layer is a grid mixer: then the backbone runs on [B, H, W, D], and its
        sequence mixers read the cells in row-major order."""
        return any(name in GRID_MIXERS for name in self.layer_mixers())

    def describe(self) -> str:
        """One line naming the model: "gla+attention, 4 layers, d_model 128" (or the forecaster)."""
        if self.forecaster:
            return f"{self.forecaster}, d_model {self.d_model}"
        return f"{'+'.join(dict.fromkeys(self.layer_mixers()))}, {self.n_layers} layers, d_model {self.d_model}"

    def layer_mixers(self) -> list[str]:
        if not self.pattern:
            return [self.mixer] * self.n_layers
        return [self.pattern[i % len(self.pattern)] for i in range(self.n_layers)]

    def layer_options(self) -> list[tuple[str, dict[str, Any]]]:
        """(mixer, options) of every layer, with depth-dependent values resolved: the k-th
        layer of a mixer gets entry k of a "per_layer" list, or point k of a "linspace"."""
        mixers = self.layer_mixers()
        counts = {name: mixers.count(name) for name in mixers}
        seen: dict[str, int] = {}
        layers = []
        for name in mixers:
            k = seen[name] = seen.get(name, -1) + 1
            options = {
                key: depth_value(value, k, counts[name], f"mixer_options.{name}.{key}")
                for key, value in self.mixer_options.get(name, {}).items()
            }
            layers.append((name, options))
        return layers


def _naming_keys(mixer: str, message: str) -> str:
    """A mixer config's error, followed by the run-config keys of the fields it mentions
    (a layer's config knows its fields, not where in a run they are set)."""
    fields = [f.name for f in dataclasses.fields(layer_class(mixer).Config)]
    named = [f for f in fields if re.search(rf"\b{f}\b", message)]
    if not named:
        return message
    keys = [f"model.{f}" if f == "d_model" else f"model.mixer_options.{mixer}.{f}" for f in named]
    listed = keys[0] if len(keys) == 1 else f"{', '.join(keys[:-1])} or {keys[-1]}"
    return f"{mixer} layers: {message}; change {listed}"


def depth_value(value: Any, k: int, count: int, where: str) -> Any:
    """The value of an option at the k-th of `count` layers (see LMConfig.mixer_options)."""
    if not (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("per_layer", "linspace")):
        return value
    (rule, spec), = value.items()
    if rule == "per_layer":
        if not isinstance(spec, (list, tuple)) or len(spec) != count:
            raise ValueError(f"{where}: per_layer needs one value for each of the {count} layers of that mixer; got {spec!r}")
        return spec[k]
    if not (isinstance(spec, (list, tuple)) and len(spec) == 2 and all(isinstance(x, (int, float)) for x in spec)):
        raise ValueError(f"{where}: linspace needs [first, last] numbers; got {spec!r}")
    first, last = spec
    return first if count == 1 else first + (last - first) * k / (count - 1)


@dataclass
class GroupedState:
    """The state of a batch whose rows cannot share one batched state: after prompts of
    different lengths, key-value caches differ in length. `states[i]` (one state per
    layer) holds the batch rows `rows[i]`; the groups cover every row once."""

    rows: list[torch.Tensor]
    states: list[list[State]]


@dataclass
class LMOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None
    # one state per layer, batch first; a GroupedState when rows differ in state size
    state: list[State] | GroupedState


class Backbone(nn.Module):
    """The blocks and the final norm: [B, T, D] -> [B, T, D], with per-layer states; with a
    grid mixer among the layers, [B, H, W, D] -> [B, H, W, D] (see `Block`)."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(config.d_model, name, options, config.mlp_ratio, config.norm_eps, config.dropout)
            for name, options in config.layer_options()
        )
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        # parameters one mixer type shares across its layers (HGRN's depth-increasing lower
        # bounds): kept here, once, and handed to each of those layers with its depth
        self.shared = nn.ModuleDict()
        for name in dict.fromkeys(config.layer_mixers()):
            layers = [block.mixer for block in self.blocks if block.mixer.name == name]
            if not isinstance(layers[0], Mixer):
                continue
            module = type(layers[0]).shared_across_depth(layers)
            if module is not None:
                self.shared[name] = module
                for depth, layer in enumerate(layers):
                    layer.attach_shared(module, depth)

    def _states(self, state: list[State] | None) -> list[State | None]:
        if state is None:
            return [None] * len(self.blocks)
        if len(state) != len(self.blocks):
            raise ValueError(f"state has {len(state)} layer states; expected {len(self.blocks)} (one per block)")
        return state

    def forward(self, x: torch.Tensor, state: list[State] | None = None) -> tuple[torch.Tensor, list[State]]:
        new_state = []
        for block, layer_state in zip(self.blocks, self._states(state), strict=True):
            x, layer_state = block(x, layer_state)
            new_state.append(layer_state)
        return self.norm(x), new_state

    def step(self, x: torch.Tensor, state: list[State] | None) -> tuple[torch.Tensor, list[State]]:
        new_state = []
        for block, layer_state in zip(self.blocks, self._states(state), strict=True):
            x, layer_state = block.step(x, layer_state)
            new_state.append(layer_state)
        return self.norm(x), new_state


class LM(nn.Module):
    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError(f"a language model needs a vocabulary: vocab_size must be positive; got {config.vocab_size}")
        if config.grid:
            raise ValueError(f"grid mixers read images, not token sequences; a language model cannot use {config.layer_mixers()}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.backbone = Backbone(config)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embedding.weight
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(
        self,
        ids: torch.Tensor,
        state: list[State] | GroupedState | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> LMOutput:
        """ids [B, T] -> logits [B, T, vocab]; with labels [B, T] (the targets at each
        position, -100 to ignore), also the mean cross-entropy loss.

        attention_mask [B, T] (1 = token, 0 = padding, on either side) leaves padded
        positions out: each row runs at its true length, its state is the one its tokens
        alone give, and its logits at padded positions are 0 (their labels are ignored).
        """
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape [B, T]; got {list(ids.shape)}")
        mask = _check_mask(attention_mask, ids)
        if mask is None and not isinstance(state, GroupedState):
            hidden, state = self.backbone(self.embedding(ids), state)
            logits = self.head(hidden)
        else:
            logits, state = self._forward_rows(ids, state, mask)
        loss = None
        if labels is not None:
            if labels.shape != ids.shape:
                raise ValueError(f"labels has shape {list(labels.shape)}; expected {list(ids.shape)} (as ids)")
            if mask is not None:
                labels = labels.masked_fill(~mask, -100)
            # the loss is taken in at least float32 whatever the compute dtype
            wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
            loss = F.cross_entropy(wide.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return LMOutput(logits, loss, state)

    def _forward_rows(
        self, ids: torch.Tensor, state: list[State] | GroupedState | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[State] | GroupedState]:
        """`forward` row group by row group: the rows of one state group with the same
        number of tokens run as one batch, on their tokens only."""
        B, T = ids.shape
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask
        logits = None
        groups = []
        for rows, group_state in _groups(state, B, ids.device):
            lengths = mask[rows].sum(1)
            for length in lengths.unique().tolist():
                members = (lengths == length).nonzero().squeeze(1)
                sub_rows = rows[members]
                sub_state = None if group_state is None else _select_rows(group_state, members)
                if length == 0:
                    if sub_state is None:
                        raise ValueError(
                            f"attention_mask row {int(sub_rows[0])} has no token; every row needs at least one"
                        )
                    groups.append((sub_rows, sub_state))
                    continue
                sub_mask = mask[sub_rows]
                tokens = ids[sub_rows][sub_mask].view(len(sub_rows), length)
                hidden, sub_state = self.backbone(self.embedding(tokens), sub_state)
                sub_logits = self.head(hidden)
                if logits is None:
                    logits = sub_logits.new_zeros(B, T, sub_logits.shape[-1])
                # back to the padded layout: each token's logits at its own position
                row_logits = logits[sub_rows]
                row_logits[sub_mask] = sub_logits.flatten(0, 1)
                logits[sub_rows] = row_logits
                groups.append((sub_rows, sub_state))
        if logits is None:
            logits = self.head.weight.new_zeros(B, T, self.config.vocab_size)
        return logits, _merge(groups, B)

    def step(
        self, token: torch.Tensor, state: list[State] | GroupedState | None
    ) -> tuple[torch.Tensor, list[State] | GroupedState]:
        """token [B] -> (logits [B, vocab], state)."""
        if not isinstance(state, GroupedState):
            hidden, state = self.backbone.step(self.embedding(token), state)
            return self.head(hidden), state
        logits = None
        groups = []
        for rows, group_state in zip(state.rows, state.states, strict=True):
            hidden, group_state = self.backbone.step(self.embedding(token[rows]), group_state)
            group_logits = self.head(hidden)
            if logits is None:
                logits = group_logits.new_empty(token.shape[0], group_logits.shape[-1])
            logits[rows] = group_logits
            groups.append((rows, group_state))
        # rows whose caches have reached the same size (a sliding window) join one batch
        return logits, _merge(groups, token.shape[0])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_size(self) -> int:
        """Bytes of recurrent state per sequence (growing caches count per token)."""
        return sum(block.mixer.state_size() for block in self.backbone.blocks)

    @torch.no_grad()
    def generate(
        self,
        ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Continue ids [B, T] by max_new_tokens tokens; temperature 0 is greedy.

        Prompts of different lengths go in one batch padded (on the left, so that each row
        reads as prompt then continuation) with attention_mask [B, T] (1 = token, 0 =
        padding): each row continues exactly as its prompt alone would.

        Returns [B, T + max_new_tokens].
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {temperature}")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be positive or None; got {top_k}")
        mask = _check_mask(attention_mask, ids)
        if max_new_tokens == 0:
            return ids
        out = self(ids, attention_mask=mask)
        if mask is None:
            logits = out.logits[:, -1]
        else:
            # each row's last token, wherever its padding is
            last = (mask * torch.arange(1, ids.shape[1] + 1, device=ids.device)).argmax(1)
            logits = out.logits[torch.arange(ids.shape[0], device=ids.device), last]
        state = out.state
        tokens = [ids]
        for i in range(max_new_tokens):
            token = _sample(logits.float(), temperature, top_k, generator)
            tokens.append(token[:, None])
            if i + 1 < max_new_tokens:
                logits, state = self.step(token, state)
        return torch.cat(tokens, dim=1)


def _check_mask(attention_mask: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor | None:
    """attention_mask as booleans, or None when it is absent or has no padding."""
    if attention_mask is None:
        return None
    if attention_mask.shape != ids.shape:
        raise ValueError(
            f"attention_mask has shape {list(attention_mask.shape)}; expected {list(ids.shape)} (as ids)"
        )
    if attention_mask.dtype.is_floating_point or attention_mask.dtype.is_complex:
        raise ValueError(
            f"attention_mask must hold 0 (padding) and 1 (token) as ints or bools; got dtype {attention_mask.dtype}"
        )
    other = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
    if other.numel():
        raise ValueError(
            f"attention_mask must hold 0 (padding) and 1 (token) as ints or bools; got {other.unique()[:4].tolist()}"
        )
    mask = attention_mask.bool()
    return None if bool(mask.all()) else mask


def _groups(
    state: list[State] | GroupedState | None, B: int, device: torch.device
) -> list[tuple[torch.Tensor, list[State] | None]]:
    """(rows, their state) pairs: one for a batched state, one per group of a GroupedState."""
    if isinstance(state, GroupedState):
        return list(zip(state.rows, state.states, strict=True))
    return [(torch.arange(B, device=device), state)]


def _select_rows(state: list[State], index: torch.Tensor) -> list[State]:
    return [{key: value[index] for key, value in layer.items()} for layer in state]


def _merge(groups: list[tuple[torch.Tensor, list[State]]], B: int) -> list[State] | GroupedState:
    """Joins the groups whose states have the same sizes: one batched state in row order
    when all do, else a GroupedState."""
    joined: dict[tuple, list[tuple[torch.Tensor, list[State]]]] = {}
    for rows, state in groups:
        sizes = tuple(tuple((key, value.shape[1:], value.dtype) for key, value in layer.items())
                      for layer in state)
        joined.setdefault(sizes, []).append((rows, state))
    merged = []
    for parts in joined.values():
        rows = torch.cat([r for r, _ in parts])
        if len(parts) == 1:
            merged.append(parts[0])
            continue
        layers = zip(*(s for _, s in parts), strict=True)
        merged.append((rows, [{key: torch.cat([layer[key] for layer in same]) for key in same[0]}
                              for same in layers]))
    if len(merged) == 1:
        rows, state = merged[0]
        in_order = torch.equal(rows, torch.arange(B, device=rows.device))
        return state if in_order else _select_rows(state, rows.argsort())
    return GroupedState([r for r, _ in merged], [s for _, s in merged])


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, generator) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
