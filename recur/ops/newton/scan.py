"""Linear recurrences with small blocks: δ_t = J_t δ_{t-1} + r_t, δ_0 = 0, where J_t is an
S×S block of diagonals (one S×S matrix per unit) — the Newton systems of cells with S
states. Steps compose associatively, (A2, b2) ∘ (A1, b1) = (A2 A1, A2 b1 + b2), so all
prefixes come out of a log-depth doubling scan (`block_linear_recurrence`; S = 1 is
`ops.common.linear_recurrence`).

`chunked_block_recurrence` is the two-level form that the Newton solver uses: a loop
over the L positions of every chunk at once (all T/L chunks in parallel), a doubling
scan over the T/L chunk carries, then one fix-up. Its work is O(T) instead of the
doubling scan's O(T log T), which is what counts where memory bandwidth is the limit
(CPUs); its depth is L + log(T/L).

Blocks are lists (rows) of lists (columns) of tensors [B, T, ...]; vectors are lists of
tensors [B, T, ...], so that a 2×2 product is four multiply-adds over whole tensors.
"""

from __future__ import annotations

import torch

from ..common import linear_recurrence

Block = list[list[torch.Tensor]]


def _matvec(A: Block, v: list[torch.Tensor]) -> list[torch.Tensor]:
    return [sum(A[i][j] * v[j] for j in range(len(v))) for i in range(len(A))]


def _matmul(A: Block, B: Block) -> Block:
    n = len(A)
    return [[sum(A[i][k] * B[k][j] for k in range(n)) for j in range(n)] for i in range(n)]


def block_linear_recurrence(J: Block, r: list[torch.Tensor]) -> list[torch.Tensor]:
    """Solve δ_t = J_t δ_{t-1} + r_t for all t (δ_0 = 0), J [S][S] and r [S] of [B, T, ...]."""
    if len(r) == 1:
        return [linear_recurrence(J[0][0], r[0])]
    A, b = J, list(r)
    T = r[0].shape[1]
    offset = 1
    while offset < T:
        # position t absorbs the segment ending `offset` steps earlier: b_t += A_t b_{t-offset}
        A_late = [[a[:, offset:] for a in row] for row in A]
        b_early = [v[:, :-offset] for v in b]
        A_early = [[a[:, :-offset] for a in row] for row in A]
        b = [torch.cat([v[:, :offset], v[:, offset:] + w], dim=1) for v, w in zip(b, _matvec(A_late, b_early), strict=True)]
        if 2 * offset < T:
            product = _matmul(A_late, A_early)
            A = [[torch.cat([a[:, :offset], p], dim=1) for a, p in zip(row, prow, strict=True)] for row, prow in zip(A, product, strict=True)]
        offset *= 2
    return b


def reverse_block_linear_recurrence(J: Block, g: list[torch.Tensor]) -> list[torch.Tensor]:
    """The adjoint: λ_t = g_t + J_{t+1}ᵀ λ_{t+1} (λ_{T+1} = 0), by the forward solver on
    reversed time with the transposed blocks."""
    S = len(g)
    # time t of the reversed recurrence uses J_{t+1}ᵀ; the last step has no successor
    shifted = [[torch.cat([J[j][i][:, 1:], torch.zeros_like(J[j][i][:, :1])], dim=1).flip(1) for j in range(S)] for i in range(S)]
    return [x.flip(1) for x in chunked_block_recurrence(shifted, [v.flip(1) for v in g])]


def chunked_block_recurrence(J: Block, r: list[torch.Tensor], chunk_size: int = 32) -> list[torch.Tensor]:
    """Same solution as `block_linear_recurrence`, by chunks of `chunk_size` steps."""
    T = r[0].shape[1]
    S = len(r)
    if T <= chunk_size:
        return block_linear_recurrence(J, r)
    pad = -T % chunk_size
    if pad:
        # identity steps at the end change nothing before them
        pad_with = lambda x, value: torch.cat([x, x.new_full((x.shape[0], pad, *x.shape[2:]), value)], dim=1)  # noqa: E731
        J = [[pad_with(J[i][j], float(i == j)) for j in range(S)] for i in range(S)]
        r = [pad_with(v, 0.0) for v in r]
    n = (T + pad) // chunk_size
    # [B, n, L, ...]: chunk index, then position inside the chunk
    split = lambda x: x.reshape(x.shape[0], n, chunk_size, *x.shape[2:])  # noqa: E731
    J = [[split(a) for a in row] for row in J]
    r = [split(v) for v in r]
    # inside each chunk from a zero start: local solution u and running product P of the J
    u_prev = [v[:, :, 0] for v in r]
    P_prev = [[a[:, :, 0] for a in row] for row in J]
    local, products = [u_prev], [P_prev]
    for j in range(1, chunk_size):
        A = [[a[:, :, j] for a in row] for row in J]
        u_prev = [w + v[:, :, j] for w, v in zip(_matvec(A, u_prev), r, strict=True)]
        P_prev = _matmul(A, P_prev)
        local.append(u_prev)
        products.append(P_prev)
    # carries: the true state at each chunk's end, a recurrence over chunks
    ends = block_linear_recurrence(P_prev, u_prev)
    # state entering chunk k: the end of chunk k-1 (zero for the first)
    entering = [torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], dim=1) for e in ends]
    out = []
    for s in range(S):
        u = torch.stack([step[s] for step in local], dim=2)
        correction = sum(
            torch.stack([step[s][k] for step in products], dim=2) * entering[k].unsqueeze(2) for k in range(S)
        )
        out.append((u + correction).reshape(u.shape[0], n * chunk_size, *u.shape[3:])[:, :T])
    return out
