"""The RHN hybrid's switches: every gating with and without attention keeps the mixer
properties, the plain switch is the `rhn` layer, and the attention reads only its window."""

from __future__ import annotations

import pytest
import torch

from recur.layers import build_mixer
from tests.helpers import assert_close
from tests.layers import properties

D_MODEL = 16


def make(name="rhn_hybrid", **options):
    torch.manual_seed(0)
    return build_mixer(name, D_MODEL, **options).to(torch.float64)


@pytest.mark.parametrize("window", [0, 3])
@pytest.mark.parametrize("gating", ["none", "additive", "learned", "input"])
def test_every_variant_keeps_the_mixer_properties(gating, window):
    layer = make(gating=gating, attention_window=window, attention_heads=2)
    y, state = layer(properties.inputs(D_MODEL, T=9))
    assert y.shape == (2, 9, D_MODEL)
    assert ("memory" in state) == (window > 0)
    properties.check_all(layer, D_MODEL)


def test_without_attention_or_gating_it_is_the_rhn_layer():
    hybrid, plain = make(gating="none", attention_window=0), make("rhn")
    plain.load_state_dict(hybrid.state_dict())
    x = properties.inputs(D_MODEL, T=11)
    assert_close("rhn_hybrid vs rhn", hybrid(x)[0], plain(x)[0], 1e-12)


def test_attention_reads_only_its_window():
    layer = make(gating="none", attention_window=2, depth=1)
    # a state h_j changed by hand reaches a_t only for t − 2 <= j <= t
    rnn_h = torch.randn(1, 8, D_MODEL, dtype=torch.float64)
    memory, filled = rnn_h.new_zeros(1, 2, D_MODEL), rnn_h.new_zeros(1, 2)
    a = layer.attend(rnn_h, memory, filled)
    moved = rnn_h.clone()
    moved[:, 3] += 1.0
    b = layer.attend(moved, memory, filled)
    changed = (a - b).abs().amax(-1)[0] > 0
    assert changed.tolist() == [False, False, False, True, True, True, False, False]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"gating": "highway"}, "gating must be one of"), ({"attention_window": -1}, "attention_window"),
     ({"attention_heads": 3}, "attention_heads"), ({"bidirectional": True}, "bidirectional")],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        build_mixer("rhn_hybrid", D_MODEL, **options)
