"""PGN: what is specific to it (the registry-wide properties cover step, carry and forms)."""

from __future__ import annotations

import pytest
import torch

from recur.layers import build_mixer


def make(window=5, d_model=8, impl="auto"):
    torch.manual_seed(0)
    return build_mixer("pgn", d_model, window=window, impl=impl).double()


@pytest.mark.parametrize("impl", ["naive", "fft"])
def test_matches_the_equations(impl):
    """y_t = G ⊙ H + (1 − G) ⊙ tanh(c), [G; c] = W [x_t, H_t] + b, H_t = b + Σ_j W_j x_{t−j}."""
    layer = make(impl=impl)
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    y, _ = layer(x)
    W, b = layer.hie_weight, layer.hie_bias
    for t in range(9):
        H = b + sum(W[:, j - 1] * x[:, t - j] for j in range(1, 6) if t - j >= 0)
        gate, candidate = layer.gate_proj(torch.cat([x[:, t], H.expand(2, -1)], -1)).chunk(2, -1)
        G = torch.sigmoid(gate)
        torch.testing.assert_close(y[:, t], G * H + (1 - G) * torch.tanh(candidate), rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", ["naive", "fft"])
def test_reads_exactly_the_window(impl):
    """Output t changes with x_{t−w}, not with x_{t−w−1}: the HIE layer reads w steps back."""
    layer = make(window=4, impl=impl)
    x = torch.randn(1, 10, 8, dtype=torch.float64)
    y, _ = layer(x)
    inside, outside = x.clone(), x.clone()
    inside[:, 5] += 1.0  # t = 9 reads 5..8
    outside[:, 4] += 1.0
    assert not torch.allclose(layer(inside)[0][:, 9], y[:, 9])
    torch.testing.assert_close(layer(outside)[0][:, 9], y[:, 9], rtol=0, atol=1e-13)


def test_state_is_the_last_inputs():
    layer = make(window=3)
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    _, state = layer(x)
    torch.testing.assert_close(state["window"], x[:, -3:])
    # shorter than the window: the zeros of the start, then the inputs
    _, state = layer(x[:, :2])
    torch.testing.assert_close(state["window"], torch.cat([torch.zeros(2, 1, 8, dtype=torch.float64), x[:, :2]], 1))


def test_window_option_is_checked():
    with pytest.raises(ValueError, match="window must be a positive int"):
        build_mixer("pgn", 8, window=0)
