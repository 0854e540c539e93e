"""Gated linear attention in chunkwise-parallel form (pure PyTorch, any device, autograd).

Gated Linear Attention Transformers with Hardware-Efficient Training (arXiv:2312.06635),
§3–4: S_t = diag(exp g_t) S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t.

Time is split into chunks of C steps. Within a chunk the outputs are a masked attention
over the chunk's own keys; across chunks information flows only through the state at
chunk boundaries. Every decay factor is exp of a sum of log decays between a boundary (of
the chunk, or of a block inside it) and a step, so every exponent is <= 0 and nothing can
overflow; those sums are summed directly, never as differences of prefix sums, which keeps
strong gates (-20 per step) exact and -inf (a full reset) well defined.

A per-head gate takes the C × C decay matrix of each chunk. A per-channel gate takes the
paper's secondary chunking (§4) to every scale: neighbouring blocks merge two at a time,
and the scores between them are one matrix product of queries decayed from their common
boundary and keys decayed to it. Merging starts from the largest blocks whose log decays
stay within ±FACTOR_LIMIT, where exp(b_t - b_s) = exp(b_t) · exp(-b_s) makes a block's
scores one matrix product too, or from single steps when no block size qualifies.
See README.md for the derivation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import chunk_state_passing, packed_to_padded, padded_to_packed, segsum, state_dtype
from ..common.segsum import suffix_sum_exclusive

CHUNK_SIZE = 64
# Inside a block whose log decays sum to at most FACTOR_LIMIT in magnitude, exp(b_t - b_s) =
# exp(b_t) · exp(-b_s) neither overflows nor loses more than about FACTOR_LIMIT · eps of
# relative precision (README.md).
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
    # [B, T, H, ...] -> [B, N, H, C, ...]; g: [B, N, H, C] or [B, N, H, C, K]
    q, k, v, g = (_chunked(x.to(dtype), CHUNK_SIZE) for x in (q, k, v, g))
    signs = None if decay_sign is None else _segment_signs(_chunked(decay_sign, CHUNK_SIZE))
    if g.dim() == 5:
        # 1. and 2. for a per-channel gate: halving blocks (README.md)
        scores, q_from_start, k_to_end, chunk_total = _per_channel_terms(q, k, g)
    else:
        scores, q_from_start, k_to_end, chunk_total = _per_head_terms(q, k, g, signs)
    # 1. Intra-chunk: o_t += scale · sum_{s<=t in chunk} scores[t, s] v_s.
    o = scores @ v
    # 2. What each chunk writes to the state on its own: U_n = sum_s (k_s ⊙ exp γ(s, end]) v_sᵀ.
    local_states = k_to_end.transpose(-1, -2) @ v

    # 3. States entering each chunk: S_n = exp(G_n) ⊙ S_{n-1} + U_n, a scan over chunks.
    init = None if initial_state is None else initial_state.to(dtype)
    chunk_sign = None if signs is None else signs["total"]
    states_in, final_state = chunk_state_passing(chunk_total, local_states, init, chunk_sign)

    # 4. Inter-chunk: o_t += scale · (q_t ⊙ exp γ(start, t])ᵀ S_{n-1}.
    o = o + q_from_start @ states_in
    o = o * scale
    # [B, N, H, C, V] -> [B, T, H, V]
    o = o.transpose(2, 3).flatten(1, 2)[:, :T]
    return o, final_state


def _per_head_terms(q, k, g, signs):
    """Scores [B, N, H, C, C], q and k decayed from the chunk start and to its end
    [B, N, H, C, K], and the chunk's log decay [B, N, H], for a per-head gate [B, N, H, C]."""
    # log decay from the chunk start to step t (inclusive), and from after step s to the end
    to_step = g.cumsum(dim=-1)
    to_end = suffix_sum_exclusive(g, dim=-1)
    # [B, N, H, C, C]: exp γ(s, t], the decay from step s to step t
    decay = segsum(g).exp()
    from_start, to_end = to_step.exp().unsqueeze(-1), to_end.exp().unsqueeze(-1)
    if signs is not None:
        decay = decay * signs["pairs"]
        from_start, to_end = from_start * signs["to_step"], to_end * signs["to_end"]
    scores = (q @ k.transpose(-1, -2)) * decay
    return scores, q * from_start, k * to_end, to_step[..., -1]


def _per_channel_terms(q, k, g):
    """Scores [B, N, H, C, C], q and k decayed from the chunk start and to its end
    [B, N, H, C, K], and the chunk's log decay [B, N, H, K], for a per-channel gate
    [B, N, H, C, K].

    Blocks whose log decays stay within FACTOR_LIMIT take one factorized matrix product
    each; then neighbouring blocks merge, two at a time, up to the whole chunk.
    """
    C = g.shape[-2]
    block = _factor_block_size(g)
    # [B, N, H, C, K] -> [B, N, H, C / block, block, K]
    q, k, g = (x.unflatten(-2, (C // block, block)) for x in (q, k, g))
    # log decay from the block start to step t (inclusive)
    to_step = g.cumsum(dim=-2)
    # q_t ⊙ exp γ(block start, t]: every exponent <= 0
    q_decayed = q * to_step.exp()
    totals = to_step[..., -1, :]
    if block == 1:
        # a block of one step: the score of a step with itself, decay exp γ(t, t] = 1
        scores = (q * k).sum(-1, keepdim=True)
        k_decayed = k
    else:
        # k_s ⊙ exp γ(s, block end], and with |to_step| <= FACTOR_LIMIT, exp γ(s, t] =
        # exp γ(t, block end]^-1 · exp γ(s, block end] for s < t: one matrix product
        k_decayed = k * _BoundedSuffixSum.apply(g, to_step).exp()
        q_grown = q_decayed * (-totals).exp().unsqueeze(-2)
        earlier = torch.ones(block, block, dtype=torch.bool, device=q.device).tril(-1)
        scores = (q_grown @ k_decayed.transpose(-1, -2)).masked_fill(~earlier, 0)
        # The diagonal apart, unfactorized: exp(x) · exp(-x) would pass the gradient of g
        # through two large terms that cancel.
        scores.diagonal(dim1=-2, dim2=-1).copy_((q * k).sum(-1))
    while scores.shape[-3] > 1:
        scores, q_decayed, k_decayed, totals = _merge_blocks(scores, q_decayed, k_decayed, totals)
    return scores.squeeze(-3), q_decayed.squeeze(-3), k_decayed.squeeze(-3), totals.squeeze(-2)


def _merge_blocks(scores, q_decayed, k_decayed, totals):
    """Blocks of h steps, pairwise, into blocks of 2h (the paper's secondary chunking).

    For each block: scores [..., h, h], q_t ⊙ exp γ(block start, t] and k_s ⊙ exp γ(s, block
    end] [..., h, K], and the block's log decay [..., K]. Across the middle of a merged block
    exp γ(s, t] = exp γ(s, middle] · exp γ(middle, t], both measured from the boundary, so
    the scores between its halves are one matrix product with every exponent <= 0.
    """
    h = scores.shape[-1]
    # [..., blocks, ...] -> the first and the second half of each merged block
    scores_first, scores_second = scores.unflatten(-3, (-1, 2)).unbind(-3)
    q_first, q_second = q_decayed.unflatten(-3, (-1, 2)).unbind(-3)
    k_first, k_second = k_decayed.unflatten(-3, (-1, 2)).unbind(-3)
    total_first, total_second = totals.unflatten(-2, (-1, 2)).unbind(-2)
    cross = q_second @ k_first.transpose(-1, -2)
    upper = F.pad(scores_first, (0, h))
    lower = torch.cat([cross, scores_second], dim=-1)
    # queries of the second half decay through the first; keys of the first through the second
    q_second = q_second * total_first.exp().unsqueeze(-2)
    k_first = k_first * total_second.exp().unsqueeze(-2)
    return (
        torch.cat([upper, lower], dim=-2),
        torch.cat([q_first, q_second], dim=-2),
        torch.cat([k_first, k_second], dim=-2),
        total_first + total_second,
    )


class _BoundedSuffixSum(torch.autograd.Function):
    """γ(s, block end] = g_{s+1} + ... + g_end along dim -2, given g and its in-block
    prefix sums b with |b| <= FACTOR_LIMIT.

    The value b_end - b_s is as precise as the factorized scores (about FACTOR_LIMIT · eps).
    The gradient is summed directly, dg_r = sum_{s<r} grad_s: autograd's route through b_end
    and b_s would cancel the gradient of the block's last key (decay 1) against every g_r.
    """

    @staticmethod
    def forward(ctx, g, to_step):
        return to_step[..., -1:, :] - to_step

    @staticmethod
    def backward(ctx, grad):
        before = grad.cumsum(dim=-2)
        return torch.cat([torch.zeros_like(before[..., :1, :]), before[..., :-1, :]], dim=-2), None


def _factor_block_size(g: torch.Tensor) -> int:
    """The largest power-of-two block size (up to the chunk) at which every block's log
    decays, g [B, N, H, C, K], sum to at most FACTOR_LIMIT in magnitude; 1 when none.

    Typical learned gates (GLA's logsigmoid(·)/16, a few units per 64 steps) take whole
    chunks; strong gates take smaller blocks, and -inf resets blocks of one step.
    """
    C, limit = g.shape[-2], FACTOR_LIMIT[g.dtype]
    if g.numel() == 0:
        return C
    with torch.no_grad():
        # every in-block prefix (or suffix) sum is at most the block's sum of |g| in magnitude
        sums = [g.abs()]
        while sums[-1].shape[-2] > 1:
            sums.append(sums[-1].unflatten(-2, (-1, 2)).sum(dim=-2))
        # one transfer to the host for every size: [block 2, 4, ..., C]
        largest = torch.stack([s.amax() for s in sums[1:]]).tolist()
    sizes = [2**i for i in range(1, len(sums))]
    return max([size for size, m in zip(sizes, largest, strict=True) if m <= limit], default=1)


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
