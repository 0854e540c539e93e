"""Encoder–decoder: any mixer stack reads the source, a causal stack with cross-attention
writes the target.

Sequence to Sequence Learning with Neural Networks (Sutskever, Vinyals, Le;
arXiv:1409.3215) and Neural Machine Translation by Jointly Learning to Align and
Translate (Bahdanau, Cho, Bengio; arXiv:1409.0473):

    memory = Encoder(source);   y_t ~ Decoder(y_<t, memory)

Each decoder block is norm → causal mixer → residual, norm → cross-attention over the
memory → residual, norm → MLP → residual. With `init_from_encoder`, each decoder layer's
recurrent state starts from the final state of the encoder layer at the same depth (the
classic seq2seq hand-over; both stacks then need the same mixers). Decoding is greedy or
beam search; the decoder runs its recurrent layers one step per token with O(1) memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import State
from ..layers.parts import RMSNorm
from .block import Block
from .inputs import InputConfig, build_input
from .lm import Backbone, LMConfig


@dataclass(kw_only=True)
class Seq2SeqConfig:
    """The decoder's choices; the encoder is the run's model config."""

    # the decoder's mixer and depth ("" / 0: the encoder's)
    decoder_mixer: str = ""
    decoder_layers: int = 0
    # per-layer options of the decoder's mixer (as LMConfig.mixer_options)
    decoder_mixer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    cross_attention_heads: int = 4
    # start each decoder layer's state from the encoder's final state at that depth
    init_from_encoder: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.decoder_layers, int) or self.decoder_layers < 0:
            raise ValueError(f"seq2seq.decoder_layers must be a non-negative int; got {self.decoder_layers!r}")
        if not isinstance(self.cross_attention_heads, int) or self.cross_attention_heads <= 0:
            raise ValueError(f"seq2seq.cross_attention_heads must be a positive int; got {self.cross_attention_heads!r}")

    def decoder(self, encoder: LMConfig, vocab_size: int) -> LMConfig:
        """The decoder stack's config: the encoder's, with the decoder's choices."""
        return LMConfig(
            vocab_size=vocab_size, d_model=encoder.d_model, n_layers=self.decoder_layers or encoder.n_layers,
            mixer=self.decoder_mixer or encoder.mixer, pattern=() if self.decoder_mixer else encoder.pattern,
            mixer_options=self.decoder_mixer_options or encoder.mixer_options, mlp_ratio=encoder.mlp_ratio,
            norm_eps=encoder.norm_eps, dropout=encoder.dropout,
        )


@dataclass
class Seq2SeqOutput:
    # [B, L, V] logits of each target position
    logits: torch.Tensor
    loss: torch.Tensor | None


class CrossAttention(nn.Module):
    """Multi-head attention from the decoder's positions to the encoder's memory."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"seq2seq.cross_attention_heads = {num_heads} must divide d_model = {d_model}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B, S, D] -> keys and values [B, heads, S, D / heads], computed once per source."""
        k, v = self.kv_proj(memory).chunk(2, dim=-1)
        return tuple(x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for x in (k, v))

    def forward(self, x: torch.Tensor, keys_values, memory_mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, L, D] -> [B, L, D]; memory_mask [B, S] is True where the source is real."""
        k, v = keys_values
        q = self.q_proj(x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        mask = None if memory_mask is None else memory_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).flatten(2))


class DecoderBlock(nn.Module):
    def __init__(self, config: LMConfig, mixer: str, cross_heads: int) -> None:
        super().__init__()
        self.block = Block(config.d_model, mixer, config.mixer_options.get(mixer), config.mlp_ratio, config.norm_eps, config.dropout)
        self.cross_norm = RMSNorm(config.d_model, config.norm_eps)
        self.cross = CrossAttention(config.d_model, cross_heads)

    def forward(self, x, state, keys_values, memory_mask):
        """x [B, L, D] -> (x, mixer state); the cross-attention sits between mixer and MLP."""
        block = self.block
        mixed, state = block.mixer(block.mixer_norm(x), state)
        x = x + block.dropout(mixed)
        x = x + block.dropout(self.cross(self.cross_norm(x), keys_values, memory_mask))
        if block.mlp is not None:
            x = x + block.dropout(block.mlp(block.mlp_norm(x)))
        return x, state

    def step(self, x, state, keys_values, memory_mask):
        """x [B, D], one target token."""
        y, state = self.forward(x.unsqueeze(1), state, keys_values, memory_mask)
        return y.squeeze(1), state


class EncoderDecoder(nn.Module):
    """source (ids [B, S], or vectors [B, S, C]) and target ids [B, L] -> target logits.

    `forward(source, target_inputs, labels=...)` trains with teacher forcing (target_inputs
    is the target shifted right behind `bos_id`); `generate` decodes greedily or by beam
    search.
    """

    def __init__(self, encoder: LMConfig, seq2seq: Seq2SeqConfig, input: InputConfig, target_vocab: int) -> None:
        super().__init__()
        self.encoder_config, self.seq2seq_config, self.input_config = encoder, seq2seq, input
        decoder = seq2seq.decoder(encoder, target_vocab)
        self.decoder_config = decoder
        if seq2seq.init_from_encoder and encoder.layer_mixers() != decoder.layer_mixers():
            raise ValueError(
                "seq2seq.init_from_encoder needs the same mixer at every depth of encoder and decoder; got "
                f"{encoder.layer_mixers()} and {decoder.layer_mixers()}"
            )
        self.input = build_input(input, encoder.d_model, encoder.vocab_size)
        self.encoder = Backbone(encoder)
        self.embedding = nn.Embedding(target_vocab, decoder.d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.blocks = nn.ModuleList(DecoderBlock(decoder, name, seq2seq.cross_attention_heads) for name in decoder.layer_mixers())
        self.norm = RMSNorm(decoder.d_model, decoder.norm_eps)
        self.head = nn.Linear(decoder.d_model, target_vocab, bias=False)
        self.head.weight = self.embedding.weight

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, list[State]]:
        """source -> (memory [B, S, D], the encoder's final states)."""
        return self.encoder(self.input(source))

    def start(self, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> dict:
        """What decoding needs from the source: the cross-attention keys and values of every
        block, the mask, and the decoder's first states."""
        memory, encoder_states = self.encode(source)
        states = encoder_states if self.seq2seq_config.init_from_encoder else [None] * len(self.blocks)
        return {
            "keys_values": [block.cross.keys_values(memory) for block in self.blocks],
            "mask": source_mask,
            "states": states,
        }

    def forward(
        self, source: torch.Tensor, target_inputs: torch.Tensor, labels: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
    ) -> Seq2SeqOutput:
        """Teacher forcing: target_inputs [B, L] ids -> logits [B, L, V]; labels [B, L]
        (-100 ignored) give the mean cross-entropy."""
        if target_inputs.dim() != 2:
            raise ValueError(f"target_inputs must be ids [B, L]; got {list(target_inputs.shape)}")
        context = self.start(source, source_mask)
        x = self.embedding(target_inputs)
        for block, state, kv in zip(self.blocks, context["states"], context["keys_values"], strict=True):
            x, _ = block(x, state, kv, context["mask"])
        logits = self.head(self.norm(x))
        loss = None
        if labels is not None:
            if labels.shape != target_inputs.shape:
                raise ValueError(f"labels has shape {list(labels.shape)}; expected {list(target_inputs.shape)}")
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return Seq2SeqOutput(logits, loss)

    def step(self, token: torch.Tensor, context: dict) -> tuple[torch.Tensor, dict]:
        """token [B] -> (logits [B, V], context with the next states)."""
        x = self.embedding(token)
        states = []
        for block, state, kv in zip(self.blocks, context["states"], context["keys_values"], strict=True):
            x, state = block.step(x, state, kv, context["mask"])
            states.append(state)
        return self.head(self.norm(x)), {**context, "states": states}

    @torch.no_grad()
    def generate(
        self, source: torch.Tensor, max_new_tokens: int, bos_id: int, eos_id: int | None = None,
        beam_size: int = 1, length_penalty: float = 1.0, source_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Target ids [B, ≤ max_new_tokens] decoded after `bos_id`: greedy for beam_size 1,
        else the highest-scoring of `beam_size` beams, scores divided by length^length_penalty.
        Positions after a sequence's `eos_id` hold `eos_id`."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
        if not isinstance(beam_size, int) or beam_size <= 0:
            raise ValueError(f"beam_size must be a positive int; got {beam_size!r}")
        context = self.start(source, source_mask)
        B = context["keys_values"][0][0].shape[0]
        if beam_size == 1:
            return self._greedy(context, B, max_new_tokens, bos_id, eos_id)
        return self._beam(context, B, max_new_tokens, bos_id, eos_id, beam_size, length_penalty)

    def _greedy(self, context, B, max_new_tokens, bos_id, eos_id):
        device = self.embedding.weight.device
        token = torch.full((B,), bos_id, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        out = []
        for _ in range(max_new_tokens):
            logits, context = self.step(token, context)
            token = logits.argmax(-1)
            if eos_id is not None:
                token = token.masked_fill(done, eos_id)
                done |= token == eos_id
            out.append(token)
            if eos_id is not None and bool(done.all()):
                break
        return torch.stack(out, 1) if out else torch.zeros(B, 0, dtype=torch.long, device=device)

    def _beam(self, context, B, max_new_tokens, bos_id, eos_id, k, alpha):
        device = self.embedding.weight.device
        # every beam is a row of a batch of B·k; the source's context repeats per beam
        context = _reorder(context, torch.arange(B, device=device).repeat_interleave(k))
        token = torch.full((B * k,), bos_id, dtype=torch.long, device=device)
        # only the first beam of each source is live at the start, so the k beams differ
        scores = torch.full((B, k), float("-inf"), device=device)
        scores[:, 0] = 0.0
        done = torch.zeros(B * k, dtype=torch.bool, device=device)
        lengths = torch.zeros(B * k, device=device)
        history = torch.zeros(B * k, 0, dtype=torch.long, device=device)
        for _ in range(max_new_tokens):
            logits, context = self.step(token, context)
            log_probs = logits.float().log_softmax(-1)
            V = log_probs.shape[-1]
            if eos_id is not None:
                # a finished beam extends only by eos, at no cost
                frozen = torch.full_like(log_probs, float("-inf"))
                frozen[:, eos_id] = 0.0
                log_probs = torch.where(done[:, None], frozen, log_probs)
            candidates = (scores.reshape(-1, 1) + log_probs).view(B, k * V)
            scores, best = candidates.topk(k, dim=-1)
            beam = best // V + torch.arange(B, device=device)[:, None] * k
            beam = beam.flatten()
            token = (best % V).flatten()
            context = _reorder(context, beam)
            history = torch.cat([history[beam], token[:, None]], dim=1)
            lengths = lengths[beam] + (~done[beam]).float()
            done = done[beam] | (token == eos_id if eos_id is not None else torch.zeros_like(done))
            if bool(done.all()):
                break
        normalised = scores.flatten() / lengths.clamp_min(1) ** alpha
        pick = normalised.view(B, k).argmax(-1) + torch.arange(B, device=device) * k
        return history[pick]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_size(self) -> int:
        """Bytes of the decoder's recurrent state per sequence (growing caches per token)."""
        return sum(block.block.mixer.state_size() for block in self.blocks)


def _reorder(context: dict, index: torch.Tensor) -> dict:
    """The decoding context with its batch rows taken at `index` (beams moving)."""

    def take(x):
        if x is None:
            return None
        if isinstance(x, torch.Tensor):
            return x.index_select(0, index)
        if isinstance(x, dict):
            return {key: take(value) for key, value in x.items()}
        return type(x)(take(value) for value in x)

    return {key: take(value) for key, value in context.items()}

