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
from .checks import check_gla_inputs

# A scalar gate needs a [C, C] decay matrix per chunk, so chunks can be long; a per-channel
# gate needs [C, C, K], which grows with C, so its chunks are short (README.md).
CHUNK_SIZE_SCALAR_GATE = 64
CHUNK_SIZE_VECTOR_GATE = 8
# A per-channel gate whose log decay stays within ±FACTOR_LIMIT of every chunk's start can
# take one matrix product per chunk: exp(b_t - b_s) = exp(b_t) · exp(-b_s) neither
# overflows nor loses more than about FACTOR_LIMIT · eps of relative precision (README.md).
FACTOR_LIMIT = {torch.float32: 20.0, torch.float64: 300.0}


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    g: torch.Tensor | None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    decay_sign: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated linear attention, chunkwise. Same arguments and results as `naive_gla`.

    Args:
        q, k: queries and keys [B, T, H, K].
        v: values [B, T, H, V].
        g: log decay (<= 0), [B, T, H] or [B, T, H, K]; -inf resets; None means no decay.
        scale: output scale; K ** -0.5 when None.
        initial_state: S_0, [B, H, K, V] ([N, H, K, V] with cu_seqlens), or None.
        output_final_state: also return S_T.
        cu_seqlens: [N + 1] offsets of N sequences packed in a batch of one.
        decay_sign: ±1, [B, T, H], for signed per-head decays a_t = decay_sign_t · exp(g_t).

    Returns:
        (o [B, T, H, V] in v's dtype, final state [B, H, K, V] in float32/float64, or None).
    """
    scale = check_gla_inputs(q, k, v, g, scale, initial_state, cu_seqlens, decay_sign)
    out_dtype = v.dtype
    if cu_seqlens is not None:
        # Padding after each sequence with k = 0 and g = 0 leaves its final state unchanged.
        q, k, v = (packed_to_padded(x, cu_seqlens) for x in (q, k, v))
        g = None if g is None else packed_to_padded(g, cu_seqlens)
        decay_sign = None if decay_sign is None else packed_to_padded(decay_sign, cu_seqlens)
    o, final_state = _chunk_gla(q, k, v, g, scale, initial_state, decay_sign)
    if cu_seqlens is not None:
        o = padded_to_packed(o, cu_seqlens)
    return o.to(out_dtype), (final_state if output_final_state else None)


def _chunk_gla(q, k, v, g, scale, initial_state, decay_sign):
    B, T, H, K = q.shape
    dtype = state_dtype(q, v)
    if g is None:
        g = q.new_zeros(B, T, H, dtype=dtype)
    per_key = g.dim() == 4
    factorized = per_key and _factorizable(g.to(dtype), CHUNK_SIZE_SCALAR_GATE)
    C = CHUNK_SIZE_VECTOR_GATE if per_key and not factorized else CHUNK_SIZE_SCALAR_GATE
    N = max(1, -(-T // C))
    pad = N * C - T

    def chunked(x):
        # [B, T, H, ...] -> [B, N, H, C, ...], padded with zeros at the end of time
        x = x.to(dtype)
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
        return x.unflatten(1, (N, C)).transpose(2, 3)

    q, k, v, g = chunked(q), chunked(k), chunked(v), chunked(g)
    # g: [B, N, H, C] or [B, N, H, C, K]
    signs = None if decay_sign is None else _segment_signs(chunked(decay_sign))

    # Log decay from the chunk start to step t (inclusive) and from after step s to the chunk end.
    to_step = g.cumsum(dim=3)
    to_end = suffix_sum_exclusive(g, dim=3)
    chunk_total = to_step[:, :, :, -1]
    if not per_key:
        to_step, to_end = to_step.unsqueeze(-1), to_end.unsqueeze(-1)

    # 1. Intra-chunk: o_t += scale · sum_{s<=t in chunk} (q_t ⊙ exp(g_{s+1} + ... + g_t)) · k_s v_s.
    if factorized:
        # every |to_step| <= FACTOR_LIMIT: exp(to_step_t - to_step_s) as a product of two factors
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        scores = (q * to_step.exp()) @ (k * (-to_step).exp()).transpose(-1, -2)
        scores = scores.masked_fill(~causal, 0)
    elif per_key:
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
    o = scores @ v

    # 2. What each chunk writes to the state on its own: U_n = sum_s (k_s ⊙ exp(to_end_s)) v_sᵀ.
    to_end, to_step = to_end.exp(), to_step.exp()
    if signs is not None:
        to_end, to_step = to_end * signs["to_end"], to_step * signs["to_step"]
    local_states = (k * to_end).transpose(-1, -2) @ v

    # 3. States entering each chunk: S_n = exp(G_n) ⊙ S_{n-1} + U_n, a scan over chunks.
    init = None if initial_state is None else initial_state.to(dtype)
    chunk_sign = None if signs is None else signs["total"]
    states_in, final_state = chunk_state_passing(chunk_total, local_states, init, chunk_sign)

    # 4. Inter-chunk: o_t += scale · (q_t ⊙ exp(to_step_t))ᵀ S_{n-1}.
    o = o + (q * to_step) @ states_in
    o = o * scale
    # [B, N, H, C, V] -> [B, T, H, V]
    o = o.transpose(2, 3).flatten(1, 2)[:, :T]
    return o, final_state


def _factorizable(g: torch.Tensor, chunk_size: int) -> bool:
    """Whether every in-chunk prefix of the log decay g [B, T, H, K] stays within ±FACTOR_LIMIT.

    Typical learned gates (GLA's logsigmoid(·)/16, a few units per 64 steps) qualify; strong
    gates and -inf resets take the exact pairwise path.
    """
    T = g.shape[1]
    N = max(1, -(-T // chunk_size))
    prefix = F.pad(g, (0, 0, 0, 0, 0, N * chunk_size - T)).unflatten(1, (N, chunk_size)).cumsum(dim=2)
    return bool(prefix.abs().amax() <= FACTOR_LIMIT[g.dtype]) if prefix.numel() else True


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
