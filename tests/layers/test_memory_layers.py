"""The memory layers: what is specific to them. The registry-wide properties (state carry,
step == forward, forms against naive, gradients) run for each in test_properties.py."""

from __future__ import annotations

import pytest
import torch

from recur.layers import build_mixer, get_mixer
from recur.layers.memory import MemoryMixer
from tests.layers import properties

PAPERS = ("ttt_linear", "ttt_mlp", "titans", "moneta", "yaad", "memora", "atlas", "omeganet")


@pytest.mark.parametrize("name", PAPERS)
def test_each_paper_is_the_one_memory_layer_with_its_defaults(name):
    cls = get_mixer(name)
    assert issubclass(cls, MemoryMixer)
    # no code of its own: no method is overridden
    assert not [key for key, value in vars(cls).items() if callable(value) and key != "Config"], name
    assert cls.impls == ("naive", "chunk")


def test_titans_mini_batch_forms_agree_across_mini_batch_boundaries():
    """Mini-batches of 4 over 45 tokens split at 1, 20 and 44: the carried state holds the
    anchor weights and the position in the mini-batch."""
    torch.manual_seed(0)
    layer = build_mixer("titans", 32, minibatch=4, num_heads=2).double()
    properties.check_all(layer, 32)


def test_memora_state_starts_on_its_simplex():
    layer = build_mixer("memora", 32, simplex_scale=3.0).double()
    state = layer.init_state(2)
    for key in ("W1", "W2"):
        torch.testing.assert_close(state[key].sum(-1), torch.full_like(state[key].sum(-1), 3.0))


@pytest.mark.parametrize("name", PAPERS)
def test_the_memory_moves_from_its_start_and_a_deep_start_is_learned(name):
    """From all-zero weights a deep memory's gradients are all zero, so it would never change:
    every layer's memory must move as it reads, and a deep memory's start must get a gradient."""
    torch.manual_seed(0)
    layer = build_mixer(name, 32, num_heads=2).double()
    x = torch.randn(2, 8, 32, dtype=torch.float64)
    start = layer.init_state(2)
    y, state = layer(x)
    for key in (k for k in start if k.startswith("W")):
        assert (state[key] - start[key]).abs().max() > 1e-6, f"{name}: {key} did not move"
    if layer.config.depth > 1 and layer.initial_weights is not None:
        y.square().sum().backward()
        for w in layer.initial_weights:
            assert w.grad is not None and w.grad.abs().max() > 0, f"{name}: the starting weights get no gradient"
