"""newton family: what is specific to it. Every form against the spec, packed batches, state
carry, single steps and argument names are tested for every family in test_families.py.

Here: Newton's convergence (iterations, residuals, `NewtonInfo`), long sequences, the
compiled solve, float32, strong and expanding recurrences, the loud fallback, a packed
batch as one solve, a user cell, the block scans and the closed-form Jacobians.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from recur.ops.newton import (
    NEWTON,
    NewtonFallbackWarning,
    NewtonInfo,
    block_linear_recurrence,
    newton,
    newton_solve,
    reverse_block_linear_recurrence,
)
from recur.ops.newton.scan import chunked_block_recurrence
from recur.ops.rnn import Cell
from tests.helpers import assert_close, compare_results, family_results


def inputs(T, case="paragru", recurrent_scale=1.0, **sizes):
    """The family's example inputs with the recurrent weights times `recurrent_scale`."""
    example = NEWTON.example_inputs(T, case=case, **sizes)
    x, R, b = example.args
    example.args = (x, (R.detach() * recurrent_scale).requires_grad_(), b)
    return example


def solve(example, tol=1e-10, label="", reference="naive", **options):
    """The Newton form's results against the `reference` form's; returns the info."""
    info = NewtonInfo()
    compare_results(
        family_results(NEWTON, "newton", example, info=info, **options),
        family_results(NEWTON, reference, example), tol, label,
    )
    return info


@pytest.mark.parametrize("case", NEWTON.cases)
@pytest.mark.parametrize("T", [1, 65, 300])
def test_newton_converges_in_few_iterations(case, T):
    info = solve(inputs(T, case, heads=2, head_dim=6), label=f"{case} T={T}")
    print(f"{case} T={T}: {info.iterations} Newton iterations, residuals {info.residuals}")
    assert info.converged and not info.fell_back
    assert info.residual <= info.tol == 1e-12
    assert info.iterations <= 8, f"{case}: {info.iterations} iterations"
    assert len(info.residuals) == info.iterations + 1


@pytest.mark.parametrize("case", ["paragru", "paralstm"])
def test_newton_long_sequence_float64(case):
    """T = 1024 at ParaRNN's init scale: < 1e-8 against the sequential loop."""
    info = solve(inputs(1024, case, 2 / (5 * 16) ** 0.5 / 0.5, head_dim=8), 1e-8, case, reference="sequential")
    print(f"{case} T=1024: {info.iterations} iterations, residual {info.residual:.2e}")
    assert info.converged and info.iterations <= 6


@pytest.mark.parametrize("case", ["paragru", "paralstm"])
def test_compiled_newton_matches_naive_float64(case):
    """compile=True runs the step, the Newton step, the scans and the backward's
    vector-Jacobian product as compiled functions: same results, forward and gradients."""
    with warnings.catch_warnings():
        # the eager fallback announces itself with a RuntimeWarning
        warnings.simplefilter("error", RuntimeWarning)
        info = solve(inputs(65, case, heads=2, head_dim=6), label=f"{case} compiled", compile=True)
    assert info.converged and not info.fell_back


def test_float32_converges_close_to_float64():
    example = inputs(500, heads=2, head_dim=16)
    expected, _ = NEWTON.call("sequential", example.args, example.kwargs)
    info = NewtonInfo()
    args = tuple(t.detach().float() for t in example.args)
    h32, _ = newton_solve(*args, cell="paragru", initial_state=example.kwargs["initial_state"].float(), info=info)
    assert info.converged and not info.fell_back and info.tol == 1e-5
    assert_close("float32 Newton", h32, expected, 1e-5)


def test_strong_recurrence_needs_more_iterations_but_converges():
    info = solve(inputs(400, recurrent_scale=3.0, heads=1, head_dim=8), label="strong recurrence")
    assert info.converged and info.iterations > 6


def test_expanding_recurrence_does_not_converge_and_falls_back():
    """|a| ~ 3: the Jacobian products grow along time and Newton stalls; the documented
    fallback (a warning and the sequential result) applies, never a wrong answer."""
    with pytest.warns(NewtonFallbackWarning, match="did not converge"):
        info = solve(inputs(400, recurrent_scale=6.0, heads=1, head_dim=8), label="stalled", max_iterations=10)
    assert info.fell_back and info.residual > 1e-3


def test_non_convergence_falls_back_loudly():
    example = inputs(200, "paralstm")
    with pytest.warns(NewtonFallbackWarning, match=r"did not converge.*after 1 iterations"):
        # the fallback result is the sequential one, gradients included
        info = solve(example, label="fallback", max_iterations=1)
    assert info.fell_back and not info.converged and info.iterations == 1
    assert info.residual > info.tol
    args, kwargs = example.args, {**example.kwargs, "max_iterations": 1}
    with pytest.raises(RuntimeError, match="did not converge"):
        newton(*args, **kwargs, on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NewtonFallbackWarning)
        with pytest.raises(NewtonFallbackWarning):
            newton(*args, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = NewtonInfo()
        newton(*args, **kwargs, on_failure="fallback", info=info)
    assert info.fell_back


def test_packed_batch_is_one_solve():
    """cu_seqlens: one Newton solve for the whole batch (one info), empty sequences pass
    their state through; results equal separate solves."""
    lengths = [40, 0, 90, 1, 33]
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    example = NEWTON.example_inputs(sum(lengths), batch=1, case="paralstm")
    example.kwargs["initial_state"] = NEWTON.example_inputs(1, batch=len(lengths), case="paralstm", seed=1).kwargs["initial_state"]
    info = NewtonInfo()
    compare_results(
        family_results(NEWTON, "newton", example, cu_seqlens=bounds, info=info),
        family_results(NEWTON, "sequential", example, cu_seqlens=bounds), 1e-10, "packed",
    )
    assert info.converged and 0 < info.iterations <= 8


def test_dense_cells_and_bad_options_are_refused():
    example = NEWTON.example_inputs(10)
    args, kwargs = example.args, example.kwargs
    with pytest.raises(ValueError, match=r"needs a cell whose Jacobian is diagonal.*impl='sequential'"):
        newton(torch.zeros(2, 10, 4, 2, 4), torch.zeros(4, 2, 4, 4), torch.zeros(4, 2, 4), cell="lstm")
    with pytest.raises(ValueError, match="x_proj contains NaN"):
        newton(args[0] * float("nan"), *args[1:], cell="paragru")
    with pytest.raises(ValueError, match="on_failure must be one of"):
        newton(*args, **kwargs, on_failure="ignore")
    with pytest.raises(ValueError, match="tol must be a positive float or None; got -1"):
        newton(*args, **kwargs, tol=-1)
    with pytest.raises(ValueError, match="max_iterations must be a non-negative int; got 2.5"):
        newton(*args, **kwargs, max_iterations=2.5)
    with pytest.raises(TypeError, match="info must be a NewtonInfo or None; got dict"):
        newton(*args, **kwargs, info={})
    with pytest.raises(TypeError, match="compile must be True or False"):
        newton(*args, **kwargs, compile="yes")


class LeakyTanh(Cell):
    """A user cell: h_t = (1 − λ) h + λ tanh(w ⊙ h + x); its Jacobian is left to autograd."""

    name = "leaky_tanh"
    recurrence = "diagonal"
    jacobian_structure = "diagonal"

    def tape_step(self, x, P, b, state):
        (h,) = state
        return ((1 - b[0]) * h + b[0] * torch.tanh(P[0] * h + x[..., 0, :, :]),), ()


def test_user_cell():
    example = NEWTON.example_inputs(150, case="indrnn")
    x, R, b = example.args
    # λ in (0, 1)
    example.args = (x, R, b.detach().sigmoid().requires_grad_())
    example.kwargs["cell"] = LeakyTanh()
    info = solve(example, label="user cell")
    assert info.converged


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


@pytest.mark.parametrize("case", ["paragru", "paralstm"])
def test_closed_form_jacobians_match_autograd(case):
    example = NEWTON.example_inputs(9, case=case)
    x, R, b = (t.detach() for t in example.args)
    cell = example.kwargs["cell"]
    gen = torch.Generator().manual_seed(5)
    state = tuple(torch.randn(2, 9, 2, 4, generator=gen, dtype=torch.float64) for _ in cell.state_names)
    new, J = cell.step_and_jacobian(x, R, b, state)
    new_ref, J_ref = Cell.step_and_jacobian(cell, x, R, b, state)
    for i in range(cell.num_states):
        assert_close(f"{case} state {i}", new[i], new_ref[i], 1e-14)
        for j in range(cell.num_states):
            assert_close(f"{case} J[{i}][{j}]", J[i][j], J_ref[i][j], 1e-12)
