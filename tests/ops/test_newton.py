"""ParaRNN Newton solves against the sequential loop: values, gradients, iteration counts,
the block scans, user cells, and the loud fallback when Newton does not converge."""

from __future__ import annotations

import warnings

import pytest
import torch

from recur.ops.newton import (
    NewtonFallbackWarning,
    block_linear_recurrence,
    newton_rnn,
    newton_solve,
    reverse_block_linear_recurrence,
)
from recur.ops.newton.scan import chunked_block_recurrence
from recur.ops.rnn import Cell, naive_rnn, rnn, sequential_rnn
from tests.helpers import assert_close, grads, weighted_sum
from tests.ops.test_rnn import compare, make_inputs, run

NEWTON_CELLS = ["paragru", "paralstm", "indrnn"]


def solve_and_report(cell, x, R, b, h0, **options):
    leaves = [t.detach().clone().requires_grad_() for t in (x, R, b, h0)]
    h, final, info = newton_solve(*leaves[:3], cell=cell, initial_state=leaves[3], output_final_state=True, **options)
    return [h, final, *grads(weighted_sum(h, final), leaves)], info


@pytest.mark.parametrize("name", NEWTON_CELLS)
@pytest.mark.parametrize("T", [1, 65, 300])
def test_newton_matches_naive_float64(name, T):
    inputs = make_inputs(name, T, H=2, Dh=6)
    result, info = solve_and_report(*inputs)
    print(f"{name} T={T}: {info.iterations} Newton iterations, residuals {info.residuals}")
    assert info.converged and not info.fell_back
    assert info.residual <= info.tol
    assert info.iterations <= 8, f"{name}: {info.iterations} iterations"
    compare(result, run(naive_rnn, *inputs), 1e-10, f"{name} T={T}")


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_newton_long_sequence_float64(name):
    """T = 1024 at ParaRNN's init scale: < 1e-8 against the sequential loop after convergence."""
    cell, x, R, b, h0 = make_inputs(name, 1024, H=2, Dh=8)
    R = R * (2 / (5 * 16) ** 0.5) / 0.5
    result, info = solve_and_report(cell, x, R, b, h0)
    print(f"{name} T=1024: {info.iterations} iterations, residual {info.residual:.2e}")
    assert info.converged and info.iterations <= 6
    compare(result, run(sequential_rnn, cell, x, R, b, h0), 1e-8, name)


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_compiled_newton_matches_naive_float64(name):
    """compile=True runs the step, the step with its Jacobian and the backward's
    vector-Jacobian product as compiled functions: same results, forward and gradients."""
    inputs = make_inputs(name, 65, H=2, Dh=6)
    with warnings.catch_warnings():
        # the eager fallback announces itself with a RuntimeWarning
        warnings.simplefilter("error", RuntimeWarning)
        result, info = solve_and_report(*inputs, compile=True)
    assert info.converged and not info.fell_back
    compare(result, run(naive_rnn, *inputs), 1e-10, f"{name} compiled")


def test_newton_float32_converges_close_to_float64():
    cell, x, R, b, h0 = make_inputs("paragru", 500, H=2, Dh=16)
    h64, _ = sequential_rnn(x, R, b, cell=cell, initial_state=h0)
    h32, _, info = newton_solve(x.float(), R.float(), b.float(), cell=cell, initial_state=h0.float())
    assert info.converged and not info.fell_back
    assert_close("float32 Newton", h32, h64, 1e-5)


def test_strong_recurrence_needs_more_iterations_but_converges():
    cell, x, R, b, h0 = make_inputs("paragru", 400, H=1, Dh=8)
    result, info = solve_and_report(cell, x, R * 3, b, h0)
    assert info.converged and info.iterations > 6
    compare(result, run(naive_rnn, cell, x, R * 3, b, h0), 1e-10, "strong recurrence")


def test_expanding_recurrence_does_not_converge_and_falls_back():
    """|a| ~ 3: the Jacobian products grow along time and Newton stalls; the documented
    fallback (a warning and the sequential result) applies, never a wrong answer."""
    cell, x, R, b, h0 = make_inputs("paragru", 400, H=1, Dh=8)
    with pytest.warns(NewtonFallbackWarning, match="did not converge"):
        result, info = solve_and_report(cell, x, R * 6, b, h0, max_iterations=10)
    assert info.fell_back and info.residual > 1e-3
    compare(result, run(naive_rnn, cell, x, R * 6, b, h0), 1e-10, "fallback after stalling")


def test_non_convergence_falls_back_loudly():
    cell, x, R, b, h0 = make_inputs("paralstm", 200)
    reference = run(naive_rnn, cell, x, R, b, h0)
    with pytest.warns(NewtonFallbackWarning, match=r"did not converge.*after 1 iterations"):
        result, info = solve_and_report(cell, x, R, b, h0, max_iterations=1)
    assert info.fell_back and not info.converged and info.iterations == 1
    assert info.residual > info.tol
    # the fallback result is the sequential one, gradients included
    compare(result, reference, 1e-10, "fallback")
    with pytest.raises(RuntimeError, match="did not converge"):
        newton_solve(x, R, b, cell=cell, max_iterations=1, on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NewtonFallbackWarning)
        with pytest.raises(NewtonFallbackWarning):
            newton_solve(x, R, b, cell=cell, max_iterations=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, _, info = newton_solve(x, R, b, cell=cell, max_iterations=1, on_failure="fallback")
    assert info.fell_back


def test_dispatch_and_dense_cells():
    cell, x, R, b, h0 = make_inputs("paragru", 50)
    assert_close("impl=newton", rnn(x, R, b, cell=cell, impl="newton")[0], naive_rnn(x, R, b, cell=cell)[0], 1e-10)
    lstm_inputs = make_inputs("lstm", 10)
    with pytest.raises(ValueError, match="needs a cell whose Jacobian is diagonal.*impl='sequential'"):
        newton_rnn(*lstm_inputs[1:4], cell=lstm_inputs[0])
    with pytest.raises(ValueError, match="x_proj contains NaN"):
        newton_rnn(x * float("nan"), R, b, cell=cell)
    with pytest.raises(ValueError, match="on_failure must be"):
        newton_solve(x, R, b, cell=cell, on_failure="ignore")
    h, final, info = newton_solve(x[:, :0], R, b, cell=cell, output_final_state=True)
    assert h.shape[1] == 0 and info.converged and final.abs().sum() == 0


class LeakyTanh(Cell):
    """A user cell: h_t = (1 − λ) h + λ tanh(w ⊙ h + x); its Jacobian is left to autograd."""

    name = "leaky_tanh"
    recurrence = "diagonal"
    jacobian_structure = "diagonal"

    def step(self, x, R, b, state):
        (h,) = state
        return ((1 - b[0]) * h + b[0] * torch.tanh(R[0] * h + x[..., 0, :, :]),)


def test_user_cell():
    cell = LeakyTanh()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 150, 1, 2, 4, generator=gen, dtype=torch.float64)
    R = torch.randn(1, 2, 4, generator=gen, dtype=torch.float64)
    b = torch.rand(1, 2, 4, generator=gen, dtype=torch.float64)
    h0 = torch.randn(1, 2, 2, 4, generator=gen, dtype=torch.float64)
    result, info = solve_and_report(cell, x, R, b, h0)
    assert info.converged
    compare(result, run(naive_rnn, cell, x, R, b, h0), 1e-10, "user cell")


def loop(J, r):
    S = len(r)
    d = [torch.zeros_like(v[:, 0]) for v in r]
    out = []
    for t in range(r[0].shape[1]):
        d = [sum(J[i][j][:, t] * d[j] for j in range(S)) + r[i][:, t] for i in range(S)]
        out.append(d)
    return [torch.stack([o[i] for o in out], 1) for i in range(S)]


@pytest.mark.parametrize("S", [1, 2, 3])
@pytest.mark.parametrize("T", [1, 31, 32, 33, 100])
def test_block_scans_match_loop(S, T):
    gen = torch.Generator().manual_seed(S * 100 + T)
    J = [[torch.randn(2, T, 3, generator=gen, dtype=torch.float64) * 0.5 for _ in range(S)] for _ in range(S)]
    r = [torch.randn(2, T, 3, generator=gen, dtype=torch.float64) for _ in range(S)]
    expected = loop(J, r)
    for name, got in (("doubling", block_linear_recurrence(J, r)), ("chunked", chunked_block_recurrence(J, r, 8))):
        for i in range(S):
            assert_close(f"{name} S={S} T={T} component {i}", got[i], expected[i], 1e-12)
    # adjoint: λ_t = g_t + J_{t+1}ᵀ λ_{t+1}, checked against the loop on reversed time
    transposed = [[torch.cat([J[j][i][:, 1:], torch.zeros_like(J[j][i][:, :1])], 1).flip(1) for j in range(S)] for i in range(S)]
    expected = [v.flip(1) for v in loop(transposed, [v.flip(1) for v in r])]
    got = reverse_block_linear_recurrence(J, r)
    for i in range(S):
        assert_close(f"reverse S={S} T={T} component {i}", got[i], expected[i], 1e-12)


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_closed_form_jacobians_match_autograd(name):
    cell, x, R, b, h0 = make_inputs(name, 9)
    gen = torch.Generator().manual_seed(5)
    state = tuple(torch.randn(2, 9, 2, 5, generator=gen, dtype=torch.float64) for _ in range(cell.num_states))
    new, J = cell.step_and_jacobian(x, R, b, state)
    new_ref, J_ref = Cell.step_and_jacobian(cell, x, R, b, state)
    for i in range(cell.num_states):
        assert_close(f"{name} state {i}", new[i], new_ref[i], 1e-14)
        for j in range(cell.num_states):
            assert_close(f"{name} J[{i}][{j}]", J[i][j], J_ref[i][j], 1e-12)
