"""Nonlinear RNNs as a loop with their own backward: memory O(T/L) states, not T graphs.

The forward runs the cell's step without autograd and keeps the state at the start of
every block of L steps. The backward walks the blocks from last to first: it rebuilds
one block's steps from its stored starting state, back-propagates the incoming gradients
(of the block's outputs and of its end state) through them, and hands the gradient of
the block's starting state to the block before. Only one block's graph lives at a time.
Same recurrence and arguments as `naive_rnn`.
"""

from __future__ import annotations

import torch

from .cells import Cell
from .checks import check_rnn_inputs, initial_states

# steps rebuilt at once in the backward: long enough to amortise the per-call overhead,
# short enough that one block's graph is small
BLOCK = 64


class _SequentialRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, x, R, b, *state):
        T = x.shape[1]
        starts = []
        with torch.no_grad():
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
    """A nonlinear RNN as a loop whose backward recomputes one block of steps at a time.

    Arguments and returns as `naive_rnn`.
    """
    cell, dtype = check_rnn_inputs(x_proj, R, b, cell, initial_state)
    B, T, _, H, Dh = x_proj.shape
    state = initial_states(initial_state, cell, x_proj, dtype)
    if T == 0:
        return x_proj.new_zeros(B, 0, H, Dh), (torch.stack(state) if output_final_state else None)
    h, *final = _SequentialRNN.apply(cell, x_proj.to(dtype), R.to(dtype), b.to(dtype), *state)
    return h.to(x_proj.dtype), (torch.stack(final) if output_final_state else None)
