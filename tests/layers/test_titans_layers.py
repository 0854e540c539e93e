"""Titans with attention (titans_mag, titans_mac): what is specific to them. The registry-wide
properties run for each in test_properties.py with the default options."""

from __future__ import annotations

import pytest
import torch

from recur.layers import build_mixer
from tests.helpers import assert_close
from tests.layers import properties

D_MODEL = 32


def make(name: str, **options):
    torch.manual_seed(0)
    return build_mixer(name, D_MODEL, num_heads=2, **options).double()


def test_attention_with_persistent_pairs_carries_and_steps():
    properties.check_all(make("attention", window=3, persistent=2), D_MODEL)


def test_persistent_pairs_stay_visible_outside_the_window():
    """With a window of 1 a query sees its own key and the persistent pairs only: changing a
    persistent value changes every output."""
    layer = make("attention", window=1, persistent=2)
    x = properties.inputs(D_MODEL, T=9)
    y, _ = layer(x)
    with torch.no_grad():
        layer.persistent_v[1].add_(1.0)
    moved = (layer(x)[0] - y).abs().amax(-1)
    assert bool((moved > 1e-6).all()), moved


def test_mag_carries_its_state_across_the_window():
    """A window of 4 and mini-batches of 4 over 45 tokens split at 1, 20 and 44."""
    properties.check_all(make("titans_mag", attention_window=4, minibatch=4), D_MODEL)


# a linear memory (depth 1): the 2-layer MLP memory starts at W = 0, where its gradients are 0
# too, so its weights, and the retrieval's, would never move from there
@pytest.mark.parametrize("segment, minibatch", [(4, 4), (5, 4)], ids=["aligned", "misaligned"])
def test_mac_carries_its_state_across_segments(segment, minibatch):
    properties.check_all(make("titans_mac", segment=segment, minibatch=minibatch, depth=1), D_MODEL)


def test_mac_is_causal():
    layer = make("titans_mac", segment=4, minibatch=4)
    x = properties.inputs(D_MODEL, T=13)
    y, _ = layer(x)
    later = x.clone()
    later[:, 6] += 1.0
    y_later, _ = layer(later)
    assert_close("outputs before the changed token", y_later[:, :6], y[:, :6], 1e-12)
    assert (y_later[:, 6] - y[:, 6]).abs().max() > 1e-6


def test_mac_segment_boundary_moves_the_retrieval_and_clears_the_cache():
    layer = make("titans_mac", segment=4, minibatch=4, depth=1)
    x = properties.inputs(D_MODEL, T=5)
    _, state = layer(x[:, :4])
    assert state["attention.k"].shape[1] == 0
    assert state["memory.W1"].abs().amax() > 0
    torch.testing.assert_close(state["retrieve.W1"], state["memory.W1"], rtol=0, atol=0)
    _, state = layer(x[:, 4:], state)
    # one token into the next segment: its retrieval and itself are cached
    assert state["attention.k"].shape[1] == 2
    assert not torch.equal(state["retrieve.W1"], state["memory.W1"])


def test_mac_refuses_a_cache_that_is_not_within_a_segment():
    layer = make("titans_mac", segment=4)
    x = properties.inputs(D_MODEL, T=3)
    state = dict(layer.init_state(2))
    state["attention.k"] = torch.zeros(2, 3, 2, D_MODEL // 2, dtype=torch.float64)
    state["attention.v"] = state["attention.k"].clone()
    with pytest.raises(ValueError, match=r"titans_mac: state\['attention.k'\] holds 3 entries; expected an even"):
        layer(x, state)


@pytest.mark.parametrize("name, option", [("titans_mag", "attention_window"), ("titans_mac", "segment")])
def test_sizes_are_checked_by_name(name, option):
    with pytest.raises(ValueError, match=rf"{option} must be an int >= 1; got 0"):
        build_mixer(name, D_MODEL, **{option: 0})
