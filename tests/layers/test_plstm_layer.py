"""The pLSTM grid mixer: shapes and gradients in each mode, its forms agree, and flipping
the input flips the output of a one-orientation layer with the flipped orientation."""

from __future__ import annotations

import pytest
import torch

from recur.layers.grid import GRID_MIXERS, build_grid_mixer


@pytest.mark.parametrize("mode", ["P", "D", "PD"])
def test_shapes_and_gradients(mode):
    torch.manual_seed(0)
    layer = build_grid_mixer("plstm", 32, mode=mode)
    x = torch.randn(2, 5, 7, 32, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} receives no gradient"


def test_forms_agree():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 6, 16, dtype=torch.float64)
    naive = build_grid_mixer("plstm", 16, impl="naive").double()
    fast = build_grid_mixer("plstm", 16, impl="wavefront").double()
    fast.load_state_dict(naive.state_dict())
    torch.testing.assert_close(fast(x), naive(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("flip", [1, 2, 3])
def test_flipping_the_input_flips_the_output(mode, flip):
    """orientation o XOR flip on the flipped grid = orientation o on the grid, flipped."""
    torch.manual_seed(2)
    x = torch.randn(2, 5, 6, 16, dtype=torch.float64)
    dims = [dim for bit, dim in ((1, 2), (2, 1)) if flip & bit]
    for orientation in range(4):
        layer = build_grid_mixer("plstm", 16, num_heads=2, mode=mode, orientations=(orientation,)).double()
        flipped = build_grid_mixer("plstm", 16, num_heads=2, mode=mode, orientations=(orientation ^ flip,)).double()
        flipped.load_state_dict(layer.state_dict())
        torch.testing.assert_close(flipped(x.flip(dims)), layer(x).flip(dims), rtol=1e-10, atol=1e-12)
        # without the matching orientation the layer is not flip-equivariant
        assert not torch.allclose(layer(x.flip(dims)), layer(x).flip(dims), atol=1e-6)


def test_bad_options_are_named():
    assert "plstm" in GRID_MIXERS
    with pytest.raises(ValueError, match="num_heads must be a multiple of 8"):
        build_grid_mixer("plstm", 24, num_heads=4)
    with pytest.raises(ValueError, match="mode"):
        build_grid_mixer("plstm", 32, mode="Q")
    with pytest.raises(ValueError, match="orientations"):
        build_grid_mixer("plstm", 32, orientations=(0, 4))
    with pytest.raises(ValueError, match="impl"):
        build_grid_mixer("plstm", 32, impl="chunk")
