"""Linear recurrences with small blocks: δ_t = J_t δ_{t-1} + r_t, δ_0 = 0, where J_t is an
S×S block of diagonals (one S×S matrix per unit) — the Newton systems of cells with S
states. S = 1 is `ops.common.linear_recurrence`; larger S compose blocks of matrices by
the same log-depth doubling: (A2, b2) ∘ (A1, b1) = (A2 A1, A2 b1 + b2).

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
    return [x.flip(1) for x in block_linear_recurrence(shifted, [v.flip(1) for v in g])]
