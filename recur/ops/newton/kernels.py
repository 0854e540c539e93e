"""The linear recurrence of a Newton step as a Triton kernel, forward and adjoint.

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450). Each Newton step solves

    δ_t = J_t δ_{t-1} + r_t    (δ_0 = 0)

and the backward its adjoint λ_t = g_t + J_{t+1}ᵀ λ_{t+1} (λ_{T+1} = 0), where J_t is an
S×S block of diagonals: per unit, a scalar (S = 1: ParaGRU, IndRNN) or a 2×2 matrix (S = 2:
ParaLSTM's (h, c)). Units never mix, so every unit is a recurrence of its own.

Both are one walk, x_u = A_u x_{u-1} + r_u over the walk's steps u: forward, u = t and
A_u = J_t; for the adjoint (REVERSE), u = T − 1 − t and A_u = J_{t+1}ᵀ (zero at the last
step), whose off-diagonal pointers the launcher hands over swapped.

A program walks the steps of one segment of the walk for one batch row and BN units, in
chunks of C steps, the state x [S, BN] in registers from chunk to chunk: it loads the
chunk's blocks and right-hand sides as [C, BN] tiles (C · (S² + S) loads in flight per
unit), runs the C steps one after the other on them, and stores the chunk's solutions.
A step picks row i of a tile by a masked sum over its rows; each thread holds one unit's
C rows (T and N are not specialised, so no wider vector loads spread the rows over the
threads), so that sum is a choice among its own registers.

- One segment (the launcher's choice when B · N / BN programs fill the chip): J and r are
  read once and δ written once, the least memory traffic a scan can have.
- G segments of L steps (few long sequences: B · N / BN programs would leave the chip
  idle, since a walk is sequential): a first pass (SUMMARY) walks each segment from zero
  and stores, per unit, its end state e_g and the product P_g of its blocks; the launcher
  runs the G-step walk c_g = P_g c_{g-1} + e_g over those with this same kernel; a second
  pass (HAS_CARRY) walks each segment again from c_{g-1} and stores x. J and r are read
  twice, for G times the programs.

Rows past either end of a segment load zeros and store nothing (the summary of the last
segment, which nothing reads, sees those zeros).

Legend: B batch, T time, N units (heads × head width), S states per unit, C steps per
chunk, BN units per program, G segments of L steps.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..common.kernels import add


@triton.jit(do_not_specialize=["T", "N", "L", "G"])
def block_scan(
    a00_ptr, a01_ptr, a10_ptr, a11_ptr, r0_ptr, r1_ptr, x0_ptr, x1_ptr, c0_ptr, c1_ptr,
    p00_ptr, p01_ptr, p10_ptr, p11_ptr, T, N, L, G,
    S: tl.constexpr, C: tl.constexpr, BN: tl.constexpr, REVERSE: tl.constexpr,
    HAS_CARRY: tl.constexpr, SUMMARY: tl.constexpr,
):
    """x_u = A_u x_{u-1} + r_u over segment g of the walk for program (unit block, batch
    row, g). A is [[a00, a01], [a10, a11]] per unit (a00 alone for S = 1); blocks, right-
    hand sides and x are [B, T, N]; the carries c, the end states (x0_ptr, x1_ptr with
    SUMMARY) and the products p are [B, G, N]. x is stored in x0_ptr's dtype."""
    block, b, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    units = block * BN + tl.arange(0, BN)
    unit_mask = units < N
    steps = tl.arange(0, C)
    base = b.to(tl.int64) * T * N
    summary = (b.to(tl.int64) * G + g) * N + units
    first, end = g * L, tl.minimum(g * L + L, T)
    # the state before the segment's first step, carried from chunk to chunk
    if HAS_CARRY:
        x0 = tl.load(c0_ptr + summary, mask=unit_mask, other=0.0).to(tl.float32)
        x1 = tl.load(c1_ptr + summary, mask=unit_mask, other=0.0).to(tl.float32)
    else:
        x0 = tl.full([BN], 0.0, tl.float32)
        x1 = tl.full([BN], 0.0, tl.float32)
    # with SUMMARY, the product of the segment's blocks so far, from the identity
    p00 = tl.full([BN], 1.0, tl.float32)
    p01 = tl.full([BN], 0.0, tl.float32)
    p10 = tl.full([BN], 0.0, tl.float32)
    p11 = tl.full([BN], 1.0, tl.float32)
    # (L + C − 1) // C rather than tl.cdiv, a kernel of Triton's that the interpreter cannot call
    for chunk in range((L + C - 1) // C):
        u = first + chunk * C + steps
        if REVERSE:
            t = T - 1 - u
            # the adjoint at t reads the block of step t + 1, none after the last step
            t_block = t + 1
        else:
            t = u
            t_block = t
        mask = (u[:, None] < end) & unit_mask[None, :]
        block_mask = mask & (t_block[:, None] < T)
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
                if SUMMARY:
                    p00 = a * p00
            else:
                a_01 = tl.reduce(tl.where(pick, a01, 0.0), 0, add)
                a_10 = tl.reduce(tl.where(pick, a10, 0.0), 0, add)
                a_11 = tl.reduce(tl.where(pick, a11, 0.0), 0, add)
                r_1 = tl.reduce(tl.where(pick, r1, 0.0), 0, add)
                x0, x1 = a * x0 + a_01 * x1 + r, a_10 * x0 + a_11 * x1 + r_1
                if SUMMARY:
                    p00, p01, p10, p11 = (
                        a * p00 + a_01 * p10, a * p01 + a_01 * p11, a_10 * p00 + a_11 * p10, a_10 * p01 + a_11 * p11
                    )
                out1 = tl.where(pick, x1[None, :], out1)
            out0 = tl.where(pick, x0[None, :], out0)
        if not SUMMARY:
            tl.store(x0_ptr + offsets, out0.to(x0_ptr.dtype.element_ty), mask=mask)
            if S == 2:
                tl.store(x1_ptr + offsets, out1.to(x1_ptr.dtype.element_ty), mask=mask)
    if SUMMARY:
        tl.store(x0_ptr + summary, x0, mask=unit_mask)
        tl.store(p00_ptr + summary, p00, mask=unit_mask)
        if S == 2:
            tl.store(x1_ptr + summary, x1, mask=unit_mask)
            tl.store(p01_ptr + summary, p01, mask=unit_mask)
            tl.store(p10_ptr + summary, p10, mask=unit_mask)
            tl.store(p11_ptr + summary, p11, mask=unit_mask)
