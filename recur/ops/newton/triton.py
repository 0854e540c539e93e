"""ParaRNN's Newton solve with its linear recurrences in a Triton kernel: the launch
settings, the scans (with an autograd Function for the forward scan on its own) and the
family's "triton" form (the kernel and why it walks as it does are in kernels.py).

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450):

    δ_t = J_t δ_{t-1} + r_t  (each Newton step),   λ_t = g_t + J_{t+1}ᵀ λ_{t+1}  (the adjoint)

Blocks and vectors come as in `scan.py`: J a list (rows) of lists (columns) of tensors
[B, T, ...], r a list of tensors [B, T, ...], for S = 1 or 2 states per unit.

Legend: B batch, T time, N units (all trailing dims of a block), S states per unit.
"""

from __future__ import annotations

import torch
import triton

from . import kernels
from .solve import newton_with_scans

# Steps per chunk (the tiles' rows) and units per program (a power of two of at least 32:
# one unit per thread, one warp per 32 units); fixed, so the first call only compiles.
TILES = {"steps": 16, "units": 64}
STAGES = 2
# Programs that fill the chip (two per SM of a 132-SM card): below that, first 32 units
# per program, then the walk cut into segments of at least MIN_SEGMENT steps (two passes).
TARGET_PROGRAMS = 264
MIN_SEGMENT = 256


def _plan(B: int, T: int, N: int) -> tuple[int, int, int]:
    """(units per program, segments G, steps per segment L) for a walk of T steps."""
    units = TILES["units"]
    while units > 32 and B * triton.cdiv(N, units) < TARGET_PROGRAMS:
        units //= 2
    programs = B * triton.cdiv(N, units)
    segments = max(1, min(triton.cdiv(TARGET_PROGRAMS, programs), T // MIN_SEGMENT))
    L = triton.cdiv(triton.cdiv(T, segments), TILES["steps"]) * TILES["steps"]
    return units, triton.cdiv(T, L), L


def _walk(a, rhs, x, carries, products, T, N, L, G, units, reverse, summary):
    """One launch of block_scan: programs (unit block, batch row, segment)."""
    S, B = len(rhs), rhs[0].shape[0]
    # S = 1 reads the first pointer of each group alone; the others only fill arguments
    fill = lambda group, count: [*group, *[group[0]] * (count - len(group))]  # noqa: E731
    kernels.block_scan[(triton.cdiv(N, units), B, G)](
        *fill(a, 4), *fill(rhs, 2), *fill(x, 2), *fill(carries or x, 2), *fill(products or x, 4), T, N, L, G,
        S=S, C=TILES["steps"], BN=units, REVERSE=reverse, HAS_CARRY=carries is not None, SUMMARY=summary,
        num_warps=units // 32, num_stages=STAGES,
    )


def _scan(J, r, reverse: bool):
    """The forward walk (reverse=False) or the adjoint walk with the blocks transposed;
    the solutions in r's dtype."""
    S = len(r)
    if S not in (1, 2) or len(J) != S or any(len(row) != S for row in J):
        raise ValueError(f"the Triton scan takes 1×1 or 2×2 blocks per unit; got {len(J)} rows for {S} states")
    B, T = r[0].shape[:2]
    N = r[0][0, 0].numel()
    flat = lambda x: x.reshape(B, T, N).contiguous()  # noqa: E731
    # the adjoint reads J_{t+1}ᵀ: its off-diagonal blocks swapped
    a = [flat(J[j][i] if reverse else J[i][j]) for i in range(S) for j in range(S)]
    rhs = [flat(v) for v in r]
    out = [torch.empty_like(v) for v in rhs]
    units, G, L = _plan(B, T, N)
    if G == 1:
        _walk(a, rhs, out, None, None, T, N, T, 1, units, reverse, summary=False)
    else:
        per_segment = lambda: torch.empty(B, G, N, device=rhs[0].device, dtype=torch.float32)  # noqa: E731
        ends, products = [per_segment() for _ in range(S)], [per_segment() for _ in range(S * S)]
        _walk(a, rhs, ends, None, products, T, N, L, G, units, reverse, summary=True)
        # the state after each segment: c_g = P_g c_{g-1} + e_g, a walk of G steps
        after = [torch.empty_like(e) for e in ends]
        _walk(products, ends, after, None, None, G, N, G, 1, units, reverse=False, summary=False)
        # the state entering segment g: the one after segment g - 1, zero for the first
        carries = [torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], dim=1) for c in after]
        _walk(a, rhs, out, carries, None, T, N, L, G, units, reverse, summary=False)
    return [x.view(v.shape) for x, v in zip(out, r, strict=True)]


def triton_block_recurrence_solve(J, r):
    """δ_t = J_t δ_{t-1} + r_t for all t (δ_0 = 0), without autograd."""
    return _scan(J, r, reverse=False)


def triton_reverse_block_recurrence(J, g):
    """λ_t = g_t + J_{t+1}ᵀ λ_{t+1} for all t (λ_{T+1} = 0), without autograd."""
    return _scan(J, g, reverse=True)


class _BlockRecurrence(torch.autograd.Function):
    """δ = scan(J, r); backward: λ = the adjoint walk of ∂L/∂δ, ∂L/∂r_t = λ_t and
    ∂L/∂J_t[i][j] = λ_t[i] δ_{t-1}[j] (δ_0 = 0)."""

    @staticmethod
    def forward(ctx, S, *tensors):
        J = [list(tensors[i * S : (i + 1) * S]) for i in range(S)]
        r = list(tensors[S * S :])
        delta = _scan(J, r, reverse=False)
        ctx.S = S
        ctx.save_for_backward(*tensors[: S * S], *delta)
        return tuple(delta)

    @staticmethod
    def backward(ctx, *grad_delta):
        S = ctx.S
        saved = ctx.saved_tensors
        J = [list(saved[i * S : (i + 1) * S]) for i in range(S)]
        delta = saved[S * S :]
        grad = [torch.zeros_like(d) if g is None else g for g, d in zip(grad_delta, delta, strict=True)]
        adjoint = _scan(J, grad, reverse=True)
        before = [torch.cat([torch.zeros_like(d[:, :1]), d[:, :-1]], dim=1) for d in delta]
        grad_J = [adjoint[i] * before[j] for i in range(S) for j in range(S)]
        return (None, *grad_J, *adjoint)


def triton_block_recurrence(J, r):
    """Solve δ_t = J_t δ_{t-1} + r_t for all t (δ_0 = 0) in the Triton kernel, J [S][S]
    and r [S] of [B, T, ...] (S = 1 or 2), differentiable in J and r; float32 arithmetic,
    results in r's dtype. The same solution as `block_linear_recurrence`."""
    S = len(r)
    return list(_BlockRecurrence.apply(S, *(a for row in J for a in row), *r))


# the scans of a Newton solve: no autograd (the solve has its own backward)
SCANS = {"scan": triton_block_recurrence_solve, "reverse_scan": triton_reverse_block_recurrence}


def triton_newton(x_proj, R, b, *, cell, initial_state, cu_seqlens, max_iterations, tol, on_failure, compile, info):
    """ParaRNN's Newton solve with its scans in the Triton kernel; the arguments of
    `naive_newton`, already checked."""
    return newton_with_scans(
        x_proj, R, b, cell=cell, initial_state=initial_state, cu_seqlens=cu_seqlens, max_iterations=max_iterations,
        tol=tol, on_failure=on_failure, compile=compile, info=info, scans=SCANS,
    )
