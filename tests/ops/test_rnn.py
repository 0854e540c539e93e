"""RNN family: the sequential form (hand-written backward through time) against the float64
naive loop for every cell, forward and gradients of x_proj, R, b and the initial state,
dense and head-wise R; the block-recompute backward for cells without a hand-written one;
sLSTM's stabilisation against the unstabilised equations; bad inputs."""

from __future__ import annotations

import inspect

import pytest
import torch

from recur.ops.rnn import ALRNN, CELLS, FORMS, RHN, Cell, get_cell, naive_rnn, rnn, sequential_rnn
from recur.ops.rnn.cells import recurrent
from tests.helpers import assert_close, grads, weighted_sum

B = 2
CELL_NAMES = sorted(CELLS) + ["alrnn"]


def cell_of(name):
    return ALRNN(num_relu=3) if name == "alrnn" else get_cell(name)


def make_inputs(name, T, H=2, Dh=5, depth=2, scale=1.0, dtype=torch.float64, seed=0):
    """x_proj, R, b, initial state for cell `name`, weights scaled so the recurrence is stable."""
    cell = cell_of(name)
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
    x = randn(B, T, cell.input_gates, H, Dh) * scale
    Gr = 2 * depth if isinstance(cell, RHN) else cell.recurrent_gates
    Gb = 2 * depth if isinstance(cell, RHN) else cell.bias_gates
    if cell.recurrence == "dense":
        R = randn(Gr, H, Dh, Dh) / Dh**0.5
    else:
        R = randn(Gr, H, Dh) * 0.5
    b = randn(Gb, H, Dh) * 0.5
    h0 = randn(cell.num_states, B, H, Dh)
    if name == "slstm":
        h0[2] = h0[2].abs() + 0.5  # normaliser n > 0: a live state
    if name == "alrnn":
        b[0] = torch.rand(H, Dh, generator=gen, dtype=dtype) * 0.9  # A in [0, 0.9): contracting
        R = R * 0.1
    if name == "indrnn":
        R = R.abs().clamp(max=0.95)
    return cell, x, R, b, h0


def run(form, cell, x, R, b, h0):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, R, b, h0)]
    h, final = form(*leaves[:3], cell=cell, initial_state=leaves[3], output_final_state=True)
    return [h, final, *grads(weighted_sum(h, final), leaves)]


NAMES = ["h", "final_state", "dx", "dR", "db", "dh0"]


def compare(actual, expected, tol, label):
    for name, a, e in zip(NAMES, actual, expected, strict=True):
        if e is None:
            assert a is None, f"{label} {name}: expected no gradient"
            continue
        assert_close(f"{label} {name}", a, e, tol)


def test_every_cell_has_a_hand_written_backward():
    for name in CELL_NAMES:
        assert cell_of(name).hand_backward, f"{name} would fall back to the block-recompute backward"


@pytest.mark.parametrize("name", CELL_NAMES)
@pytest.mark.parametrize("T", [1, 63, 64, 65, 100])
def test_sequential_matches_naive_float64(name, T):
    """Head-wise (block-diagonal) R: 2 heads of 5 units."""
    inputs = make_inputs(name, T)
    compare(run(sequential_rnn, *inputs), run(naive_rnn, *inputs), 1e-10, f"{name} T={T}")


@pytest.mark.parametrize("name", CELL_NAMES)
def test_sequential_matches_naive_dense_float64(name):
    """One head: R is a dense 8×8 matrix per gate."""
    inputs = make_inputs(name, 37, H=1, Dh=8, seed=1)
    compare(run(sequential_rnn, *inputs), run(naive_rnn, *inputs), 1e-10, f"{name} dense")


@pytest.mark.parametrize("name", CELL_NAMES)
def test_sequential_matches_naive_at_strong_gates(name):
    """Inputs ×6: saturated gates, ReLUs switching, sLSTM's stabiliser moving between branches."""
    inputs = make_inputs(name, 65, scale=6.0, seed=2)
    compare(run(sequential_rnn, *inputs), run(naive_rnn, *inputs), 1e-10, f"{name} strong gates")


@pytest.mark.parametrize("name", ["lstm", "slstm", "gru"])
def test_sequential_gradients_of_outputs_or_final_state_alone(name):
    """The backward gets no gradient for h (only the final state is used) or none for the
    final state (output_final_state=False)."""
    cell, x, R, b, h0 = make_inputs(name, 30)
    for form_outputs in ("final", "h"):
        results = []
        for form in (sequential_rnn, naive_rnn):
            leaves = [t.detach().clone().requires_grad_() for t in (x, R, b, h0)]
            h, final = form(*leaves[:3], cell=cell, initial_state=leaves[3], output_final_state=form_outputs == "final")
            results.append(grads(weighted_sum(final if form_outputs == "final" else h), leaves))
        for label, a, e in zip(NAMES[2:], *results, strict=True):
            assert_close(f"{name} {form_outputs} only: {label}", a, e, 1e-10)


def test_sequential_without_grad_matches():
    """Nothing requires a gradient: the loop runs without tape and gives the same outputs."""
    cell, x, R, b, h0 = make_inputs("lstm", 40)
    with torch.no_grad():
        h, final = sequential_rnn(x, R, b, cell=cell, initial_state=h0, output_final_state=True)
    assert h.grad_fn is None
    h_ref, final_ref = naive_rnn(x, R, b, cell=cell, initial_state=h0, output_final_state=True)
    assert_close("no-grad h", h, h_ref, 1e-12)
    assert_close("no-grad state", final, final_ref, 1e-12)


def test_sequential_only_x_requires_grad():
    cell, x, R, b, h0 = make_inputs("gru", 40)
    x_leaf = x.clone().requires_grad_()
    (dx,) = torch.autograd.grad(weighted_sum(sequential_rnn(x_leaf, R, b, cell=cell, initial_state=h0)[0]), x_leaf)
    x_ref = x.clone().requires_grad_()
    (dx_ref,) = torch.autograd.grad(weighted_sum(naive_rnn(x_ref, R, b, cell=cell, initial_state=h0)[0]), x_ref)
    assert_close("dx", dx, dx_ref, 1e-10)


class SquaredElman(Cell):
    """A user cell with only `step`: h_t = tanh(x + R h + b)²."""

    name = "squared_elman"

    def step(self, x, R, b, state):
        return (torch.tanh(x[..., 0, :, :] + recurrent(state[0], R)[..., 0, :, :] + b[0]) ** 2,)


@pytest.mark.parametrize("T", [1, 63, 64, 65, 100])
def test_block_recompute_for_cells_without_hand_written_backward(T):
    """The backward rebuilds blocks of 64 steps: lengths on both sides of a boundary."""
    cell = SquaredElman()
    assert not cell.hand_backward
    _, x, R, b, h0 = make_inputs("elman_tanh", T, H=1, Dh=7)
    compare(run(sequential_rnn, cell, x, R, b, h0[:1]), run(naive_rnn, cell, x, R, b, h0[:1]), 1e-10, f"T={T}")


@pytest.mark.parametrize("depth", [1, 3])
def test_rhn_depths(depth):
    inputs = make_inputs("rhn", 40, depth=depth)
    compare(run(sequential_rnn, *inputs), run(naive_rnn, *inputs), 1e-10, f"depth={depth}")


def test_no_initial_state_and_no_final_state():
    cell, x, R, b, _ = make_inputs("gru", 20)
    h_naive, none = naive_rnn(x, R, b, cell=cell)
    h_seq, _ = sequential_rnn(x, R, b, cell=cell)
    assert none is None
    assert_close("h without initial state", h_seq, h_naive, 1e-12)


def test_state_carry():
    cell, x, R, b, h0 = make_inputs("slstm", 50)
    h, final = sequential_rnn(x, R, b, cell=cell, initial_state=h0, output_final_state=True)
    h1, s1 = sequential_rnn(x[:, :17], R, b, cell=cell, initial_state=h0, output_final_state=True)
    h2, s2 = sequential_rnn(x[:, 17:], R, b, cell=cell, initial_state=s1, output_final_state=True)
    assert_close("carried h", torch.cat([h1, h2], 1), h, 1e-12)
    assert_close("carried state", s2, final, 1e-12)


def test_head_wise_recurrence_is_block_diagonal():
    """H heads of Dh units equal one dense head whose R is block-diagonal."""
    cell, x, R, b, h0 = make_inputs("lstm", 30, H=3, Dh=4)
    h, final = naive_rnn(x, R, b, cell=cell, initial_state=h0, output_final_state=True)
    dense_R = torch.stack([torch.block_diag(*R[g]) for g in range(4)]).unsqueeze(1)
    flat = lambda t: t.reshape(*t.shape[:-2], 1, 12)  # noqa: E731
    h_dense, final_dense = naive_rnn(
        flat(x), dense_R, flat(b), cell=cell, initial_state=flat(h0), output_final_state=True
    )
    assert_close("block-diagonal h", flat(h), h_dense, 1e-12)
    assert_close("block-diagonal state", flat(final), final_dense, 1e-12)


def test_slstm_stabilisation_matches_unstabilised_equations():
    """h = σ(õ) c̄ / n̄ with c̄_t = σ(f̃) c̄ + exp(ĩ) tanh(z̃), n̄_t = σ(f̃) n̄ + exp(ĩ)."""
    cell, x, R, b, _ = make_inputs("slstm", 40, H=1, Dh=3)
    h, final = naive_rnn(x, R, b, cell=cell, output_final_state=True)
    hp = torch.zeros(B, 1, 3, dtype=torch.float64)
    c = torch.zeros_like(hp)
    n = torch.zeros_like(hp)
    outputs = []
    for t in range(40):
        pre = x[:, t] + torch.einsum("ghed,bhd->bghe", R, hp) + b
        i, f, z, o = pre.unbind(1)
        c = torch.sigmoid(f) * c + torch.exp(i) * torch.tanh(z)
        n = torch.sigmoid(f) * n + torch.exp(i)
        hp = torch.sigmoid(o) * c / n
        outputs.append(hp)
    assert_close("sLSTM h", h, torch.stack(outputs, 1), 1e-12)
    # the stored pair is the unstabilised one scaled by exp(−m)
    assert_close("sLSTM n·exp(m)", final[2] * final[3].exp(), n, 1e-12)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_extreme_inputs_stay_finite(name):
    cell, x, R, b, _ = make_inputs(name, 200, dtype=torch.float32, scale=100.0)
    x.requires_grad_()
    h, final = sequential_rnn(x, R, b, cell=cell, output_final_state=True)
    assert torch.isfinite(h).all() and torch.isfinite(final).all(), f"{name}: non-finite forward"
    h.sum().backward()
    assert torch.isfinite(x.grad).all(), f"{name}: non-finite gradient"


def test_low_precision_inputs_keep_float32_state():
    cell, x, R, b, h0 = make_inputs("lstm", 20, dtype=torch.float32)
    h, final = sequential_rnn(x.bfloat16(), R, b, cell=cell, output_final_state=True)
    assert h.dtype == torch.bfloat16 and final.dtype == torch.float32


def test_forms_share_one_signature():
    signatures = {name: inspect.signature(form) for name, form in FORMS.items()}
    assert len(set(map(str, signatures.values()))) == 1, signatures


def test_dispatch():
    cell, x, R, b, h0 = make_inputs("gru", 10)
    ref, _ = naive_rnn(x, R, b, cell=cell, initial_state=h0)
    for impl in ("auto", "naive", "sequential"):
        out, _ = rnn(x, R, b, cell=cell, initial_state=h0, impl=impl)
        assert_close(f"impl={impl}", out, ref, 1e-12)
    with pytest.raises(ValueError, match="no 'chunk' form"):
        rnn(x, R, b, cell=cell, impl="chunk")


@pytest.mark.parametrize("form", [naive_rnn, sequential_rnn])
def test_bad_inputs_are_rejected(form):
    cell, x, R, b, h0 = make_inputs("lstm", 10, H=2, Dh=5)
    with pytest.raises(ValueError, match=r"R has shape \[4, 2, 6, 6\]; expected \[4, 2, 5, 5\]"):
        form(x, torch.zeros(4, 2, 6, 6, dtype=x.dtype), b, cell=cell)
    with pytest.raises(ValueError, match=r"x_proj has 3 input gates"):
        form(x[:, :, :3], R, b, cell=cell)
    with pytest.raises(ValueError, match=r"b has shape \[4, 2, 4\]"):
        form(x, R, b[..., :4], cell=cell)
    with pytest.raises(ValueError, match=r"initial_state has shape \[1, 2, 2, 5\]; expected \[2, 2, 2, 5\]"):
        form(x, R, b, cell=cell, initial_state=h0[:1])
    with pytest.raises(ValueError, match=r"x_proj must have shape \[B, T, Gx, H, Dh\]"):
        form(x[..., 0], R, b, cell=cell)
    bad = x.clone()
    bad[1, 3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x_proj contains NaN or inf \(first at index \[1, 3, 0, 0, 0\]\)"):
        form(bad, R, b, cell=cell)
    with pytest.raises(ValueError, match="R contains NaN"):
        form(x, R * float("nan"), b, cell=cell)
    with pytest.raises(ValueError, match="unknown cell 'lstn'"):
        form(x, R, b, cell="lstn")
    with pytest.raises(ValueError, match=r"needs its number of ReLU units"):
        form(x[:, :, :1], R[:1], b[:2], cell="alrnn")
    with pytest.raises(ValueError, match="num_relu = 6 exceeds the head size Dh = 5"):
        form(x[:, :, :1], R[:1], b[:2], cell=ALRNN(num_relu=6))
