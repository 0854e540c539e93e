"""PLRNN-style cells: each one's recurrence against a loop of its paper's equation, written
with full matrices (heads as a block-diagonal W), in float64. Forms, gradients, state carry
and bad arguments are tested for every case in test_families.py."""

from __future__ import annotations

import pytest
import torch

from recur.ops.rnn import RNN, naive_rnn, rnn

relu = torch.relu


def dense(blocks: torch.Tensor) -> torch.Tensor:
    """Head-wise blocks [H, a, b] -> the block-diagonal matrix [H·a, H·b]."""
    return torch.block_diag(*blocks.unbind(0))


def flat(x: torch.Tensor) -> torch.Tensor:
    """[..., H, Dh] -> [..., H·Dh]."""
    return x.flatten(-2)


def papers_loop(case: str, cell, x, R, b, z0) -> torch.Tensor:
    """z_1..z_T [B, T, M] by the paper's equation, one vector per step."""
    H, Dh = b.shape[1], z0.shape[-1]
    z, out = flat(z0), []
    if case == "plrnn":
        # Schmidt et al. 2021: z_t = A z + W ReLU(z) + h, W off-diagonal
        A, h = flat(b[0]), flat(b[1])
        W = dense(R[0])
        W = W - torch.diag(torch.diag(W))
        step = lambda z: A * z + relu(z) @ W.T + h  # noqa: E731
    elif case.startswith("dendplrnn"):
        # Brenner et al. 2022: z_t = A z + W Σ_b α_b [z − θ_b]_+ + h₀
        B = cell.num_bases
        A, h0 = flat(b[0]), flat(b[1])
        alpha, theta = flat(b[2 : 2 + B]), flat(b[2 + B :])
        W = dense(R[0])
        W = W - torch.diag(torch.diag(W))

        def step(z):
            if cell.clipped:
                phi = sum(alpha[k] * (relu(z - theta[k]) - relu(z)) for k in range(B))
            else:
                phi = sum(alpha[k] * relu(z - theta[k]) for k in range(B))
            return A * z + phi @ W.T + h0
    else:
        # Hess et al. 2023: z_t = A z + W₁ ReLU(W₂ z + h₂) + h₁ (clipped: − ReLU(W₂ z))
        L = cell.hidden
        A, h1, h2 = flat(b[0, :, :Dh]), flat(b[0, :, Dh : 2 * Dh]), flat(b[0, :, 2 * Dh :])
        W1, W2 = dense(R[0]), dense(R[1].transpose(-1, -2))
        assert W1.shape == (H * Dh, H * L)

        def step(z):
            hidden = relu(z @ W2.T + h2) - (relu(z @ W2.T) if cell.clipped else 0)
            return A * z + hidden @ W1.T + h1
    for x_t in flat(x[:, :, 0]).unbind(1):
        z = step(z) + x_t
        out.append(z)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("case", ["plrnn", "dendplrnn", "dendplrnn_clipped", "shplrnn", "shplrnn_clipped"])
def test_the_recurrence_is_the_papers_equation(case, heads):
    example = RNN.example_inputs(9, case=case, heads=heads, head_dim=3, seed=3)
    (x, R, b), kwargs = example.args, example.kwargs
    # inputs ×3: units switch on and off along the way
    x = x.detach() * 3
    expected = papers_loop(case, kwargs["cell"], x, R.detach(), b.detach(), kwargs["initial_state"][:, 0].detach())
    for form in ("naive", "sequential"):
        h, final = rnn(x, R, b, cell=kwargs["cell"], initial_state=kwargs["initial_state"], output_final_state=True,
                       impl=form)
        assert torch.allclose(flat(h), expected, rtol=0, atol=1e-12), form
        assert torch.allclose(flat(final[:, 0]), expected[:, -1], rtol=0, atol=1e-12), form


def test_the_plrnn_diagonal_of_w_is_unused():
    example = RNN.example_inputs(6, case="plrnn", heads=1, head_dim=4)
    (x, R, b), kwargs = example.args, example.kwargs
    R2 = R.detach() + torch.diag_embed(torch.full((1, 1, 4), 5.0, dtype=R.dtype))
    first, _ = naive_rnn(x, R, b, **kwargs)
    second, _ = naive_rnn(x, R2, b, **kwargs)
    assert torch.equal(first, second)
    grad = torch.autograd.grad(rnn(x, R, b, **kwargs)[0].sum(), R)[0]
    assert grad[0, 0].diagonal().abs().max() == 0


def test_cells_with_options_are_named():
    example = RNN.example_inputs(3, case="plrnn")
    x, R, b = example.args
    with pytest.raises(ValueError, match=r"DendPLRNN\(num_bases=B\)"):
        rnn(x, R, b, cell="dendplrnn")
    with pytest.raises(ValueError, match=r"ShallowPLRNN\(hidden=L\)"):
        rnn(x, R, b, cell="shplrnn")
    shallow = RNN.example_inputs(3, case="shplrnn")
    x, R, b = shallow.args
    with pytest.raises(ValueError, match=r"R has shape \[2, 2, 4, 6\]; expected \[2, 2, 4, 5\]"):
        rnn(x, R, b[..., :-1], cell=type(shallow.kwargs["cell"])(hidden=5))
