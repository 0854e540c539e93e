"""The linear recurrence of a Newton step as a Triton kernel, forward and adjoint.

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450). Each Newton step solves

    δ_t = J_t δ_{t-1} + r_t    (δ_0 = 0)

and the backward its adjoint λ_t = g_t + J_{t+1}ᵀ λ_{t+1} (λ_{T+1} = 0), where J_t is an
S×S block of diagonals: per unit, a scalar (S = 1: ParaGRU, IndRNN) or a 2×2 matrix (S = 2:
ParaLSTM's (h, c)). Units never mix, so every unit is a recurrence of its own.

One program per batch row and block of BN units walks along time in chunks of C steps,
carrying x_{t-1} [S, BN] in registers from chunk to chunk: it loads the chunk's blocks and
right-hand sides as [C, BN] tiles (C·(S² + S) loads in flight per unit), runs the C steps
one after the other on them, and stores the chunk's C solutions at once. So J and r are
read once and δ written once, the least memory traffic a scan can have; the step is a few
multiply-adds per unit, so that traffic is the cost. (A two-pass chunk scan, chunk
summaries in parallel and then a fix-up, would read J and r twice; its only gain is more
programs when B times the number of units is small, and ParaRNN's layers have thousands
of units.) A step picks row i of a tile by a masked sum over the tile's C rows.

The adjoint is the same walk from the last step to the first (REVERSE), with the block of
the step after (J_{t+1}, zero past the end) transposed by the launcher, which hands the
off-diagonal pointers over swapped. Rows past either end load zeros and store nothing.

Legend: B batch, T time, N units (heads × head width), S states per unit, C steps per
chunk, BN units per program.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..common.kernels import add


@triton.jit
def block_scan(
    a00_ptr, a01_ptr, a10_ptr, a11_ptr, r0_ptr, r1_ptr, x0_ptr, x1_ptr, T, N,
    S: tl.constexpr, C: tl.constexpr, BN: tl.constexpr, REVERSE: tl.constexpr,
):
    """x_t = A x_{prev} + r_t for every unit of program (unit block, batch row), walking
    forward (prev = t − 1, A = A_t) or, with REVERSE, backward (prev = t + 1, A = A_{t+1},
    zero at the last step). A is [[a00, a01], [a10, a11]] per unit (a00 alone for S = 1);
    every input is [B, T, N], contiguous, and x is stored in x0_ptr's (x1_ptr's) dtype."""
    block, b = tl.program_id(0), tl.program_id(1)
    units = block * BN + tl.arange(0, BN)
    steps = tl.arange(0, C)
    base = b.to(tl.int64) * T * N
    # x_{t-1} (x_{t+1} in reverse), the carry from one chunk to the next
    x0 = tl.full([BN], 0.0, tl.float32)
    x1 = tl.full([BN], 0.0, tl.float32)
    # (T + C − 1) // C rather than tl.cdiv, a kernel of Triton's that the interpreter cannot call
    for chunk in range((T + C - 1) // C):
        if REVERSE:
            t = T - 1 - (chunk * C + steps)
            # the adjoint at t reads the block of step t + 1, none after the last step
            t_block = t + 1
        else:
            t = chunk * C + steps
            t_block = t
        in_time = (t[:, None] >= 0) & (units[None, :] < N)
        mask = in_time & (t[:, None] < T)
        block_mask = in_time & (t_block[:, None] < T)
        offsets = base + t[:, None].to(tl.int64) * N + units[None, :]
        block_offsets = base + t_block[:, None].to(tl.int64) * N + units[None, :]
        # [C, BN] tiles of the chunk: blocks and right-hand sides
        a00 = tl.load(a00_ptr + block_offsets, mask=block_mask, other=0.0).to(tl.float32)
        r0 = tl.load(r0_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        out0 = tl.full([C, BN], 0.0, tl.float32)
        if S == 2:
            a01 = tl.load(a01_ptr + block_offsets, mask=block_mask, other=0.0).to(tl.float32)
            a10 = tl.load(a10_ptr + block_offsets, mask=block_mask, other=0.0).to(tl.float32)
            a11 = tl.load(a11_ptr + block_offsets, mask=block_mask, other=0.0).to(tl.float32)
            r1 = tl.load(r1_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            out1 = tl.full([C, BN], 0.0, tl.float32)
        # the chunk's steps in order, each from the one before; row i of a tile is step i
        for i in tl.static_range(C):
            pick = steps[:, None] == i
            a = tl.reduce(tl.where(pick, a00, 0.0), 0, add)
            r = tl.reduce(tl.where(pick, r0, 0.0), 0, add)
            if S == 1:
                x0 = a * x0 + r
            else:
                a_01 = tl.reduce(tl.where(pick, a01, 0.0), 0, add)
                a_10 = tl.reduce(tl.where(pick, a10, 0.0), 0, add)
                a_11 = tl.reduce(tl.where(pick, a11, 0.0), 0, add)
                r_1 = tl.reduce(tl.where(pick, r1, 0.0), 0, add)
                x0, x1 = a * x0 + a_01 * x1 + r, a_10 * x0 + a_11 * x1 + r_1
                out1 = tl.where(pick, x1[None, :], out1)
            out0 = tl.where(pick, x0[None, :], out0)
        tl.store(x0_ptr + offsets, out0.to(x0_ptr.dtype.element_ty), mask=mask)
        if S == 2:
            tl.store(x1_ptr + offsets, out1.to(x1_ptr.dtype.element_ty), mask=mask)
