"""Gated linear attention in chunkwise-parallel form (pure PyTorch, any device, autograd).

Gated Linear Attention Transformers with Hardware-Efficient Training (arXiv:2312.06635),
§3–4: S_t = diag(exp g_t) S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t.

Time is split into chunks of C steps. Within a chunk the outputs are a masked attention
over the chunk's own keys; across chunks information flows only through the state at
chunk boundaries. Every decay factor is exp of a sum of log decays over a segment that
lies inside one chunk or spans whole chunks, so every exponent is <= 0 and nothing can
overflow; segment sums are summed directly, never as differences of prefix sums, which
keeps strong gates (-20 per step) exact and -inf (a full reset) well defined. Per-channel
gates whose in-chunk prefix sums stay small take one matrix product per chunk instead of
the pairwise decays. See README.md for the derivation and the choice of chunk sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import chunk_state_passing, packed_to_padded, padded_to_packed, segsum, state_dtype
from ..common.segsum import suffix_sum_exclusive

# A scalar gate needs a [C, C] decay matrix per chunk, so chunks can be long; a per-channel
# gate needs [C, C, K], which grows with C, so its chunks are short (README.md).
CHUNK_SIZE_SCALAR_GATE = 64
CHUNK_SIZE_VECTOR_GATE = 8
# A per-channel gate whose log decay stays within ±FACTOR_LIMIT of every chunk's start can
# take one matrix product per chunk: exp(b_t - b_s) = exp(b_t) · exp(-b_s) neither
# overflows nor loses more than about FACTOR_LIMIT · eps of relative precision (README.md).
FACTOR_LIMIT = {torch.float32: 20.0, torch.float64: 300.0}


def chunk_gla(q, k, v, *, g, scale, initial_state, cu_seqlens, decay_sign):
    """Gated linear attention, chunkwise; the arguments of `naive_gla`, already checked."""
    out_dtype = v.dtype
    if cu_seqlens is not None:
        # Padding after each sequence with k = 0 and g = 0 leaves its final state unchanged.
        q, k, v = (packed_to_padded(x, cu_seqlens) for x in (q, k, v))
        g = None if g is None else packed_to_padded(g, cu_seqlens)
        decay_sign = None if decay_sign is None else packed_to_padded(decay_sign, cu_seqlens)
    o, final_state = _chunk_gla(q, k, v, g, scale, initial_state, decay_sign)
    if cu_seqlens is not None:
        o = padded_to_packed(o, cu_seqlens)
    return o.to(out_dtype), final_state


def _chunk_gla(q, k, v, g, scale, initial_state, decay_sign):
    T = q.shape[1]
    dtype = state_dtype(q, v)
    if g is None:
        g = q.new_zeros(*q.shape[:3], dtype=dtype)
    per_key = g.dim() == 4
    C = CHUNK_SIZE_SCALAR_GATE
    g_chunks = _chunked(g.to(dtype), C)
    # log decay from the chunk start to step t (inclusive)
    to_step = g_chunks.cumsum(dim=3)
    factorized = per_key and _within_factor_limit(to_step)
    if per_key and not factorized:
        C = CHUNK_SIZE_VECTOR_GATE
        g_chunks = _chunked(g.to(dtype), C)
        to_step = g_chunks.cumsum(dim=3)
    # [B, T, H, ...] -> [B, N, H, C, ...]; g: [B, N, H, C] or [B, N, H, C, K]
    q, k, v = (_chunked(x.to(dtype), C) for x in (q, k, v))
    g = g_chunks
    signs = None if decay_sign is None else _segment_signs(_chunked(decay_sign, C))
    chunk_total = to_step[:, :, :, -1]

    if factorized:
        # Every |to_step| <= FACTOR_LIMIT, so exp(g_{s+1} + ... + g_t) = exp(to_step_t) ·
        # exp(-to_step_s) and the decay from s to the chunk end is exp(total) · exp(-to_step_s).
        q_decayed = q * to_step.exp()
        k_grown = k * (-to_step).exp()
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        # 1. Intra-chunk scores: one matrix product per chunk.
        scores = (q_decayed @ k_grown.transpose(-1, -2)).masked_fill(~causal, 0)
        # 2. What each chunk writes to the state on its own.
        k_to_end = k_grown * chunk_total.exp().unsqueeze(-2)
    else:
        # log decay from after step s to the chunk end, summed directly
        to_end = suffix_sum_exclusive(g, dim=3)
        if not per_key:
            to_step, to_end = to_step.unsqueeze(-1), to_end.unsqueeze(-1)
        # 1. Intra-chunk: o_t += scale · sum_{s<=t in chunk} (q_t ⊙ exp(g_{s+1} + ... + g_t)) · k_s v_s.
        if per_key:
            # [B, N, H, C, C, K]: exp of the log decay from s to t for every key channel
            decay = segsum(g, dim=-2).exp()
            # scores[t, s] = sum_k q_tk k_sk decay_tsk, as one batched mat-vec per query row
            scores = ((decay * k.unsqueeze(-3)) @ q.unsqueeze(-1)).squeeze(-1)
        else:
            # [B, N, H, C, C]
            decay = segsum(g).exp()
            if signs is not None:
                decay = decay * signs["pairs"]
            scores = (q @ k.transpose(-1, -2)) * decay
        # 2. What each chunk writes to the state on its own: U_n = sum_s (k_s ⊙ exp(to_end_s)) v_sᵀ.
        to_end, to_step = to_end.exp(), to_step.exp()
        if signs is not None:
            to_end, to_step = to_end * signs["to_end"], to_step * signs["to_step"]
        k_to_end, q_decayed = k * to_end, q * to_step
    o = scores @ v
    local_states = k_to_end.transpose(-1, -2) @ v

    # 3. States entering each chunk: S_n = exp(G_n) ⊙ S_{n-1} + U_n, a scan over chunks.
    init = None if initial_state is None else initial_state.to(dtype)
    chunk_sign = None if signs is None else signs["total"]
    states_in, final_state = chunk_state_passing(chunk_total, local_states, init, chunk_sign)

    # 4. Inter-chunk: o_t += scale · (q_t ⊙ exp(to_step_t))ᵀ S_{n-1}.
    o = o + q_decayed @ states_in
    o = o * scale
    # [B, N, H, C, V] -> [B, T, H, V]
    o = o.transpose(2, 3).flatten(1, 2)[:, :T]
    return o, final_state


def _within_factor_limit(to_step: torch.Tensor) -> bool:
    """Whether every in-chunk prefix of the log decay stays within ±FACTOR_LIMIT.

    Typical learned gates (GLA's logsigmoid(·)/16, a few units per 64 steps) qualify; strong
    gates and -inf resets take the exact pairwise path.
    """
    return to_step.numel() == 0 or bool(to_step.abs().amax() <= FACTOR_LIMIT[to_step.dtype])


def _chunked(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """[B, T, H, ...] -> [B, N, H, C, ...], padded with zeros at the end of time."""
    T = x.shape[1]
    N = max(1, -(-T // chunk_size))
    if N * chunk_size != T:
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, N * chunk_size - T))
    # one copy into the chunked layout here saves one inside every matrix product below
    return x.unflatten(1, (N, chunk_size)).transpose(2, 3).contiguous()


def _segment_signs(decay_sign: torch.Tensor) -> dict[str, torch.Tensor]:
    """Signs of decay products over the same segments as the log decays, [B, N, H, C].

    The sign of a product is the parity of its negative factors, and integer counts of
    negatives subtract exactly, so the signs are exact for any length.
    """
    negatives = (decay_sign < 0).to(torch.int64)
    count = negatives.cumsum(dim=-1)
    parity = lambda n: 1 - 2 * (n % 2)  # noqa: E731
    dtype = torch.float64 if decay_sign.dtype == torch.float64 else torch.float32
    return {
        # product over (s, t]: negatives counted in (s, t] = count_t - count_s
        "pairs": parity(count.unsqueeze(-1) - count.unsqueeze(-2)).to(dtype),
        "to_step": parity(count).to(dtype).unsqueeze(-1),
        "to_end": parity(count[..., -1:] - count).to(dtype).unsqueeze(-1),
        "total": parity(count[..., -1]).to(dtype),
    }
