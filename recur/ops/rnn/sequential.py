"""Nonlinear RNNs as a loop with a hand-written backward through time: no autograd graph.

FlashRNN (Pöppel, Beck, Hochreiter; arXiv:2412.07752), head-wise form:
g_t = x_t + R h_{t-1} + b,  s_t = P(s_{t-1}, g_t). Same arguments as `naive_rnn`.

The forward runs the cell's step without autograd and keeps every state s_0..s_T and the
cell's per-step tape (e.g. its gate values): O(T · state) memory. The backward, for a
cell with `hand_backward` (every cell in `CELLS`, and AL-RNN):

    coefficients for all t at once          (elementwise, from the tape and the states)
    for t = T … 1:  ds_{t-1} = local step   (elementwise ops and one product with Rᵀ)
    dx = the stacked gate gradients,  db = their sum,  dR = Σ_t d_t u_tᵀ in one product

where u_t is what R multiplied in the forward (h_{t-1} for most cells). The autograd
loop instead records ~15 nodes per step and multiplies by R twice per step in its
backward (for dh_{t-1} and for dR). A user cell without the hand-written methods gets
a backward that rebuilds one block of 64 steps at a time through autograd from the
state at the block's start (memory T/64 states plus one block's graph).
"""

from __future__ import annotations

import torch

from .cells import Cell
from .checks import check_rnn_inputs, initial_states

# steps rebuilt at once in the autograd fallback's backward: long enough to amortise the
# per-call overhead, short enough that one block's graph is small
BLOCK = 64


class _BackpropThroughTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, x, R, b, *state):
        B, T = x.shape[:2]
        prepared = cell.prepare(R)
        # every state s_0..s_T [B, T + 1, ...] and every tape entry [B, T, ...], written
        # step by step while they are in cache (stacking them at the end costs more);
        # the per-step views are made once: indexing in the loop costs more than the copy
        states = [s.new_empty(B, T + 1, *s.shape[1:]) for s in state]
        state_steps = [buffer.unbind(1) for buffer in states]
        for steps, s in zip(state_steps, state, strict=True):
            steps[0].copy_(s)
        tapes = tape_steps = None
        for t, x_t in enumerate(x.unbind(1)):
            state, tape = cell.tape_step(x_t, prepared, b, state)
            if tapes is None:
                tapes = [v.new_empty(B, T, *v.shape[1:]) for v in tape]
                tape_steps = [buffer.unbind(1) for buffer in tapes]
            for steps, s in zip(state_steps, state, strict=True):
                steps[t + 1].copy_(s)
            for steps, v in zip(tape_steps, tape, strict=True):
                steps[t].copy_(v)
        ctx.cell = cell
        ctx.save_for_backward(x, R, b, *states, *tapes)
        ctx.num_states = len(states)
        return (states[0][:, 1:], *state)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h, *grad_final):
        x, R, b, *saved = ctx.saved_tensors
        cell, S = ctx.cell, ctx.num_states
        states, tapes = saved[:S], tuple(saved[S:])
        B, T = x.shape[:2]
        prepared = cell.prepare(R)
        grad = tuple(torch.zeros_like(s[:, -1]) if g is None else g for s, g in zip(states, grad_final, strict=True))
        outputs = (torch.zeros_like(states[0][:, 1:]) if grad_h is None else grad_h).unbind(1)
        state_steps = list(zip(*(s.unbind(1) for s in states), strict=True))
        tape_steps = list(zip(*(v.unbind(1) for v in tapes), strict=True)) if tapes else [()] * T
        records = record_steps = None
        for t in reversed(range(T)):
            record, grad = cell.local_grads(
                tape_steps[t], state_steps[t], state_steps[t + 1], prepared, b, outputs[t], grad
            )
            if records is None:
                records = record.new_empty(B, T, *record.shape[1:])
                record_steps = records.unbind(1)
            record_steps[t].copy_(record)
        prev, new = tuple(s[:, :-1] for s in states), tuple(s[:, 1:] for s in states)
        dx, dR, db = cell.param_grads(records, tapes, prev, new, R, b)
        return (None, dx, dR, db, *grad)


def _loop_without_grad(cell: Cell, x, R, b, *state):
    """The forward alone (nothing asks for a gradient): no tape, no stored states."""
    prepared = cell.prepare(R)
    h = x.new_empty(x.shape[0], x.shape[1], *state[0].shape[1:])
    for h_t, x_t in zip(h.unbind(1), x.unbind(1), strict=True):
        state, _ = cell.tape_step(x_t, prepared, b, state)
        h_t.copy_(state[0])
    return (h, *state)


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


def sequential_rnn(
    x_proj: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    *,
    cell: str | Cell,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A nonlinear RNN as a loop with a hand-written backward through time (block
    recomputation through autograd for cells without one).

    Arguments and returns as `naive_rnn`.
    """
    cell, dtype = check_rnn_inputs(x_proj, R, b, cell, initial_state)
    B, T, _, H, Dh = x_proj.shape
    state = initial_states(initial_state, cell, x_proj, dtype)
    if T == 0:
        return x_proj.new_zeros(B, 0, H, Dh), (torch.stack(state) if output_final_state else None)
    inputs = (x_proj.to(dtype), R.to(dtype), b.to(dtype), *state)
    if not cell.hand_backward:
        h, *final = _BlockRecompute.apply(cell, *inputs)
    elif torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        h, *final = _BackpropThroughTime.apply(cell, *inputs)
    else:
        h, *final = _loop_without_grad(cell, *inputs)
    return h.to(x_proj.dtype), (torch.stack(final) if output_final_state else None)
