"""RNN family: what is specific to it. Every form against the spec on every cell (head-wise
R), packed batches, state carry, single steps and argument names are tested for every
family in test_families.py.

Here: the hand-written backward through time with one dense head (its own code path), at
strong gates, for the output or the final state alone, without gradients, and the
block-recompute backward of a user cell; RHN depths; head-wise R as a block-diagonal dense
R; sLSTM's stabilisation against the unstabilised equations; torch.nn.LSTM / GRU's
equations; the cell registry; extreme and low-precision inputs; bad inputs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recur.ops.rnn import ALRNN, CELLS, RNN, Cell, naive_rnn, rnn, sequential_rnn
from recur.ops.rnn.cells import Recurrence
from tests.helpers import assert_close, compare_results, family_results, grads, weighted_sum


def check(example, tol=1e-10, label="", **overrides):
    compare_results(
        family_results(RNN, "sequential", example, **overrides), family_results(RNN, "naive", example, **overrides), tol, label
    )


def scaled(example, factor):
    """The example with x_proj times `factor` (saturated gates, switching ReLUs)."""
    example.args = ((example.args[0].detach() * factor).requires_grad_(), *example.args[1:])
    return example


def test_every_cell_is_a_case_and_has_a_hand_written_backward():
    assert set(CELLS) | {"alrnn"} <= set(RNN.cases)
    for case in RNN.cases:
        cell = RNN.example_inputs(1, case=case).kwargs["cell"]
        assert cell.hand_backward, f"{case} would fall back to the block-recompute backward"


@pytest.mark.parametrize("case", RNN.cases)
def test_sequential_matches_naive_with_one_dense_head(case):
    """One head: R is a dense 8×8 matrix per gate (the hand backward's single-matrix path)."""
    check(RNN.example_inputs(37, case=case, heads=1, head_dim=8, seed=1), label=f"{case} dense")


@pytest.mark.parametrize("case", RNN.cases)
def test_sequential_matches_naive_at_strong_gates(case):
    """Inputs ×6: saturated gates, ReLUs switching, sLSTM's stabiliser moving between branches."""
    check(scaled(RNN.example_inputs(65, case=case, seed=2), 6.0), label=f"{case} strong gates")


@pytest.mark.parametrize("case", ["lstm", "slstm", "gru", "paralstm"])
def test_sequential_gradients_of_the_outputs_alone(case):
    """No gradient reaches the final state (output_final_state=False)."""
    example = RNN.example_inputs(30, case=case)
    results = []
    for form in (sequential_rnn, naive_rnn):
        fresh = example.fresh()
        h, final = form(*fresh.args, **fresh.kwargs)
        assert final is None
        results.append(grads(weighted_sum(h), list(fresh.leaves().values())))
    for name, a, e in zip(example.leaves(), *results, strict=True):
        assert_close(f"{case} output only: {name}", a, e, 1e-10)


def test_sequential_without_grad_matches():
    """Nothing requires a gradient: the loop keeps no tape and gives the same outputs."""
    example = RNN.example_inputs(40, case="lstm")
    with torch.no_grad():
        h, final = sequential_rnn(*example.args, **example.kwargs, output_final_state=True)
    assert h.grad_fn is None
    h_ref, final_ref = naive_rnn(*example.args, **example.kwargs, output_final_state=True)
    assert_close("no-grad h", h, h_ref, 1e-12)
    assert_close("no-grad state", final, final_ref, 1e-12)


def test_sequential_when_only_x_requires_grad():
    example = RNN.example_inputs(40, case="gru")
    x, R, b = example.args
    R, b, h0 = R.detach(), b.detach(), example.kwargs["initial_state"].detach()
    dx = []
    for form in (sequential_rnn, naive_rnn):
        leaf = x.detach().clone().requires_grad_()
        dx.append(torch.autograd.grad(weighted_sum(form(leaf, R, b, cell="gru", initial_state=h0)[0]), leaf)[0])
    assert_close("dx", *dx, 1e-10)


class SquaredElman(Cell):
    """A user cell with only its step: h_t = tanh(x + R h + b)²."""

    name = "squared_elman"

    def tape_step(self, x, P, b, state):
        return (torch.tanh(P.plus(x, state[0])[..., 0, :, :] + b[0]) ** 2,), ()


@pytest.mark.parametrize("T", [1, 63, 64, 65, 100])
def test_block_recompute_for_cells_without_a_hand_written_backward(T):
    """The backward rebuilds blocks of 64 steps: lengths on both sides of a boundary."""
    cell = SquaredElman()
    assert not cell.hand_backward
    example = RNN.example_inputs(T, case="elman_tanh", heads=1, head_dim=7)
    example.kwargs.update(cell=cell)
    check(example, label=f"T={T}")


@pytest.mark.parametrize("depth", [1, 3])
def test_rhn_depths(depth):
    check(RNN.example_inputs(40, case="rhn", depth=depth), label=f"depth={depth}")


def test_recurrence_takes_any_leading_dims():
    """R h and Σ_g R_gᵀ d_g on [B, T, ...] equal those on each [B, ...] slice (one head and several)."""
    for heads in (1, 3):
        R = torch.randn(4, heads, 5, 5, dtype=torch.float64)
        P = Recurrence(R)
        h = torch.randn(2, 7, heads, 5, dtype=torch.float64)
        d = torch.randn(2, 7, 4, heads, 5, dtype=torch.float64)
        x = torch.randn(2, 7, 4, heads, 5, dtype=torch.float64)
        assert_close("R h", P(h), torch.einsum("ghed,bthd->btghe", R, h), 1e-14)
        assert_close("Rᵀ d", P.transposed(d), torch.einsum("ghed,btghe->bthd", R, d), 1e-14)
        assert_close("x + R h", P.plus(x, h), x + P(h), 1e-14)


def test_step_on_a_whole_sequence_equals_the_step_per_time():
    """What Newton relies on: the cell's step over [B, T, ...] at once."""
    example = RNN.example_inputs(9, case="lstm")
    x, R, b = (t.detach() for t in example.args)
    cell = example.kwargs["cell"]
    state = tuple(torch.randn(2, 9, 2, 4, dtype=torch.float64) for _ in cell.state_names)
    whole = cell.step(x, R, b, state)
    for t in range(9):
        one = cell.step(x[:, t], R, b, tuple(s[:, t] for s in state))
        for k in range(cell.num_states):
            assert_close(f"step t={t} state {k}", whole[k][:, t], one[k], 1e-14)


def test_head_wise_recurrence_is_block_diagonal():
    """H heads of Dh units equal one dense head whose R is block-diagonal."""
    example = RNN.example_inputs(30, case="lstm", heads=3, head_dim=4)
    x, R, b = (t.detach() for t in example.args)
    h0 = example.kwargs["initial_state"].detach()
    h, final = naive_rnn(x, R, b, cell="lstm", initial_state=h0, output_final_state=True)
    dense_R = torch.stack([torch.block_diag(*R[g]) for g in range(4)]).unsqueeze(1)
    flat = lambda t: t.reshape(*t.shape[:-2], 1, 12)  # noqa: E731
    h_dense, final_dense = naive_rnn(flat(x), dense_R, flat(b), cell="lstm", initial_state=flat(h0), output_final_state=True)
    assert_close("block-diagonal h", flat(h), h_dense, 1e-12)
    assert_close("block-diagonal state", flat(final), final_dense, 1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cells_have_torch_equations(kind):
    """torch.nn.LSTM / GRU with x_proj = W_ih x: the same outputs and final states, from a state."""
    torch.manual_seed(0)
    B, T, n = 2, 25, 6
    module = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](n, n, batch_first=True).double()
    gates = 4 if kind == "lstm" else 3
    x = torch.randn(B, T, n, dtype=torch.float64)
    h0 = torch.randn(1, B, n, dtype=torch.float64)
    c0 = torch.randn(1, B, n, dtype=torch.float64)
    expected, torch_state = module(x, (h0, c0) if kind == "lstm" else h0)
    x_proj = (x @ module.weight_ih_l0.T).reshape(B, T, gates, 1, n)
    R = module.weight_hh_l0.reshape(gates, 1, n, n)
    b_ih, b_hh = module.bias_ih_l0, module.bias_hh_l0
    if kind == "lstm":
        b = (b_ih + b_hh).reshape(4, 1, n)
        initial = torch.stack([h0[0], c0[0]], dim=1).unsqueeze(2)
    else:
        b = torch.cat([(b_ih + b_hh)[: 2 * n], b_ih[2 * n :], b_hh[2 * n :]]).reshape(4, 1, n)
        initial = h0[0][:, None, None]
    h, final = rnn(x_proj, R, b, cell=kind, initial_state=initial, output_final_state=True)
    assert_close(f"{kind} h", h.reshape(B, T, n), expected, 1e-12)
    assert_close(f"{kind} h_n", final[:, 0, 0], (torch_state[0] if kind == "lstm" else torch_state)[0], 1e-12)
    if kind == "lstm":
        assert_close("lstm c_n", final[:, 1, 0], torch_state[1][0], 1e-12)


def test_slstm_stabilisation_matches_unstabilised_equations():
    """h = σ(õ) c̄ / n̄ with c̄_t = σ(f̃) c̄ + exp(ĩ) tanh(z̃), n̄_t = σ(f̃) n̄ + exp(ĩ), from zeros."""
    example = RNN.example_inputs(40, case="slstm", heads=1, head_dim=3)
    x, R, b = (t.detach() for t in example.args)
    h, final = naive_rnn(x, R, b, cell="slstm", output_final_state=True)
    hp = torch.zeros(2, 1, 3, dtype=torch.float64)
    c, n = torch.zeros_like(hp), torch.zeros_like(hp)
    outputs = []
    for t in range(40):
        i, f, z, o = (x[:, t] + torch.einsum("ghed,bhd->bghe", R, hp) + b).unbind(1)
        c = torch.sigmoid(f) * c + torch.exp(i) * torch.tanh(z)
        n = torch.sigmoid(f) * n + torch.exp(i)
        hp = torch.sigmoid(o) * c / n
        outputs.append(hp)
    assert_close("sLSTM h", h, torch.stack(outputs, 1), 1e-12)
    # the stored pair is the unstabilised one scaled by exp(−m)
    assert_close("sLSTM n·exp(m)", final[:, 2] * final[:, 3].exp(), n, 1e-12)


@pytest.mark.parametrize("case", RNN.cases)
def test_extreme_inputs_stay_finite(case):
    example = scaled(RNN.example_inputs(200, case=case, dtype=torch.float32), 100.0)
    h, final = sequential_rnn(*example.args, **example.kwargs, output_final_state=True)
    assert torch.isfinite(h).all() and torch.isfinite(final).all(), f"{case}: non-finite forward"
    h.sum().backward()
    assert torch.isfinite(example.args[0].grad).all(), f"{case}: non-finite gradient"


def test_low_precision_inputs_keep_float32_state():
    example = RNN.example_inputs(20, case="lstm", dtype=torch.float32)
    x, R, b = example.args
    h, final = sequential_rnn(x.bfloat16(), R, b, cell="lstm", output_final_state=True)
    assert h.dtype == torch.bfloat16 and final.dtype == torch.float32


def test_bad_inputs_are_rejected():
    example = RNN.example_inputs(10, case="lstm", heads=2, head_dim=5)
    x, R, b = (t.detach() for t in example.args)
    h0 = example.kwargs["initial_state"].detach()
    with pytest.raises(ValueError, match=r"R has shape \[4, 2, 6, 6\]; expected \[4, 2, 5, 5\]"):
        rnn(x, torch.zeros(4, 2, 6, 6, dtype=x.dtype), b, cell="lstm")
    with pytest.raises(ValueError, match=r"x_proj has 3 input gates"):
        rnn(x[:, :, :3], R, b, cell="lstm")
    with pytest.raises(ValueError, match=r"b has shape \[4, 2, 4\]"):
        rnn(x, R, b[..., :4], cell="lstm")
    with pytest.raises(ValueError, match=r"initial_state has shape \[2, 1, 2, 5\]; expected \[2, 2, 2, 5\]"):
        rnn(x, R, b, cell="lstm", initial_state=h0[:, :1])
    with pytest.raises(ValueError, match=r"initial_state has shape \[2, 2, 2, 5\]; expected \[3, 2, 2, 5\] \(sequences"):
        rnn(x[:1], R, b, cell="lstm", initial_state=h0, cu_seqlens=torch.tensor([0, 2, 5, 10]))
    with pytest.raises(ValueError, match=r"x_proj must have shape \[B, T, Gx, H, Dh\]"):
        rnn(x[..., 0], R, b, cell="lstm")
    with pytest.raises(ValueError, match="unknown cell 'lstn'; did you mean 'lstm'"):
        rnn(x, R, b, cell="lstn")
    with pytest.raises(ValueError, match=r"needs its number of ReLU units"):
        rnn(x[:, :, :1], R[:1], b[:2], cell="alrnn")
    with pytest.raises(ValueError, match="num_relu = 6 exceeds the head size Dh = 5"):
        rnn(x[:, :, :1], R[:1], b[:2], cell=ALRNN(num_relu=6))
    with pytest.raises(ValueError, match=r"impl must be one of \['auto', 'naive', 'sequential', 'triton'\]"):
        rnn(x, R, b, cell="lstm", impl="newton")


@pytest.mark.parametrize("impl", ["naive", "sequential"])
def test_non_finite_inputs_are_refused(impl):
    example = RNN.example_inputs(10, case="gru")
    x, R, b = (t.detach() for t in example.args)
    bad = x.clone()
    bad[1, 3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x_proj contains NaN or inf \(first at index \[1, 3, 0, 0, 0\]\)"):
        rnn(bad, R, b, cell="gru", impl=impl)
    with pytest.raises(ValueError, match="R contains NaN"):
        rnn(x, R * float("nan"), b, cell="gru", impl=impl)
    with pytest.raises(ValueError, match="initial_state contains NaN or inf"):
        rnn(x, R, b, cell="gru", initial_state=torch.full((2, 1, 2, 4), float("inf"), dtype=x.dtype), impl=impl)
