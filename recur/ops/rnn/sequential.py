"""Nonlinear RNNs as a loop with a hand-written backward through time: no autograd graph.

FlashRNN (Pöppel, Beck, Hochreiter; arXiv:2412.07752), head-wise form:
g_t = x_t + R h_{t-1} + b,  s_t = P(s_{t-1}, g_t). Same arguments as `naive_rnn`.

The forward runs the cell's step without autograd and keeps every state s_0..s_T and the
cell's per-step tape (e.g. its gate values): O(T · state) memory. The backward, for a
cell with `hand_backward` (every cell in `CELLS`, and AL-RNN):

    for t = T … 1:  (d_t, ds_{t-1}) = the cell's local step from (dh_t, ds_t)
                    (elementwise ops and one product with Rᵀ; d_t the gate gradients)
    dx = the stacked d,  db = Σ_{b,t} d,  dR = Σ_{b,t} d_t u_tᵀ as one matrix product

where u_t is what R multiplied in the forward (h_{t-1} for most cells). The autograd
loop instead records ~15 nodes per step and multiplies by R twice per step in its
backward (for dh_{t-1} and for dR). A user cell without the hand-written methods gets
a backward that rebuilds one block of 64 steps at a time through autograd from the
state at the block's start (memory T/64 states plus one block's graph).
"""

from __future__ import annotations

import torch

from ..common import state_dtype
from .cells import Cell, Steps

# steps rebuilt at once in the autograd fallback's backward: long enough to amortise the
# per-call overhead, short enough that one block's graph is small
BLOCK = 64


class _BackpropThroughTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, x, R, b, *state):
        prepared = cell.prepare(R)
        # the step's own tensors are kept as they are (no copies into [B, T, ...] buffers:
        # small tensors come back from the allocator's free lists, large fresh buffers
        # cost a page fault per 4 KiB on every call)
        states, tapes = [state], []
        for x_t in x.unbind(1):
            state, tape = cell.tape_step(x_t, prepared, b, state)
            states.append(state)
            tapes.append(tape)
        # saved through autograd (not kept on ctx) so that in-place changes are caught and
        # memory accounting sees them: R, b, then T + 1 states of S tensors, T tapes of K
        ctx.cell, ctx.sizes = cell, (len(state), len(tapes[0]), len(tapes))
        ctx.save_for_backward(R, b, *(s for step in states for s in step), *(v for tape in tapes for v in tape))
        # the final state is returned as a copy: the backward reads the kept one
        return (torch.stack([s[0] for s in states[1:]], dim=1), *(s.clone() for s in state))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h, *grad_final):
        R, b, *saved = ctx.saved_tensors
        cell, (S, K, T) = ctx.cell, ctx.sizes
        states = [tuple(saved[t * S : (t + 1) * S]) for t in range(T + 1)]
        tapes = [tuple(saved[(T + 1) * S + t * K : (T + 1) * S + (t + 1) * K]) for t in range(T)]
        steps = Steps(states, tapes)
        prepared = cell.prepare(R)
        grad = tuple(torch.zeros_like(s) if g is None else g for s, g in zip(states[-1], grad_final, strict=True))
        outputs = (torch.zeros_like(steps.new(0)) if grad_h is None else grad_h).unbind(1)
        records = [None] * T
        for t in reversed(range(T)):
            records[t], grad = cell.local_grads(tapes[t], states[t], states[t + 1], prepared, b, outputs[t], grad)
        dx, dR, db = cell.param_grads(torch.stack(records, dim=1), steps, R, b)
        return (None, dx, dR, db, *grad)


def _loop_without_grad(cell: Cell, x, R, b, *state):
    """The forward alone (nothing asks for a gradient): no tape, no stored states."""
    prepared = cell.prepare(R)
    outputs = []
    for x_t in x.unbind(1):
        state, _ = cell.tape_step(x_t, prepared, b, state)
        outputs.append(state[0])
    return (torch.stack(outputs, dim=1), *state)


class _BlockRecompute(torch.autograd.Function):
    """The fallback for cells without a hand-written backward: autograd on one block at a time."""

    @staticmethod
    def forward(ctx, cell, x, R, b, *state):
        T = x.shape[1]
        starts = []
        outputs = []
        for t in range(T):
            if t % BLOCK == 0:
                starts.append(torch.stack(state))
            state = cell.step(x[:, t], R, b, state)
            outputs.append(state[0])
        h = torch.stack(outputs, dim=1)
        ctx.cell = cell
        ctx.save_for_backward(x, R, b, *starts)
        return (h, *state)

    @staticmethod
    def backward(ctx, grad_h, *grad_final):
        x, R, b, *starts = ctx.saved_tensors
        cell, T = ctx.cell, x.shape[1]
        grad_state = tuple(torch.zeros_like(s) if g is None else g for s, g in zip(starts[0], grad_final, strict=True))
        grad_x = torch.empty_like(x)
        grad_R, grad_b = torch.zeros_like(R), torch.zeros_like(b)
        if grad_h is None:
            grad_h = x.new_zeros(x.shape[0], T, *x.shape[3:])
        for block in reversed(range(len(starts))):
            lo, hi = block * BLOCK, min(T, (block + 1) * BLOCK)
            with torch.enable_grad():
                x_block = x[:, lo:hi].detach().requires_grad_()
                R_leaf, b_leaf = R.detach().requires_grad_(), b.detach().requires_grad_()
                start = tuple(s.detach().requires_grad_() for s in starts[block])
                state, outputs = start, []
                for x_t in x_block.unbind(1):
                    state = cell.step(x_t, R_leaf, b_leaf, state)
                    outputs.append(state[0])
                leaves = (x_block, R_leaf, b_leaf, *start)
                got = torch.autograd.grad(
                    (torch.stack(outputs, dim=1), *state), leaves,
                    (grad_h[:, lo:hi], *grad_state), allow_unused=True,
                )
            got = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, got, strict=True)]
            grad_x[:, lo:hi] = got[0]
            grad_R += got[1]
            grad_b += got[2]
            grad_state = tuple(got[3:])
        return (None, grad_x, grad_R, grad_b, *grad_state)


def sequential_rnn(x_proj, R, b, *, cell, initial_state):
    """The loop with a backward through time by hand; the arguments of `naive_rnn`, checked."""
    B, T, _, H, Dh = x_proj.shape
    dtype = state_dtype(x_proj, R, b, initial_state)
    if initial_state is None:
        state = tuple(x_proj.new_zeros(B, H, Dh, dtype=dtype) for _ in cell.state_names)
    else:
        state = initial_state.to(dtype).unbind(1)
    inputs = (x_proj.to(dtype), R.to(dtype), b.to(dtype), *state)
    if not cell.hand_backward:
        h, *final = _BlockRecompute.apply(cell, *inputs)
    elif torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        h, *final = _BackpropThroughTime.apply(cell, *inputs)
    else:
        h, *final = _loop_without_grad(cell, *inputs)
    return h.to(x_proj.dtype), torch.stack(final, dim=1)
