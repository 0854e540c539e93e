"""Layer-specific behaviour of the GLA-family layers and attention, and the registry-wide
properties under non-default options."""

from __future__ import annotations

import pytest
import torch

from recur.layers import build_mixer
from tests.helpers import assert_close
from tests.layers import properties

D = 32


def make(name, **options):
    torch.manual_seed(0)
    return build_mixer(name, D, **options).double()


@pytest.mark.parametrize(
    "name,options",
    [
        ("attention", {"window": 5}),
        ("attention", {"window": 1}),
        ("mamba2", {"allow_neg_eigval": True}),
        ("linear_attention", {"feature_map": "relu"}),
        ("linear_attention", {"feature_map": "identity"}),
        ("hgrn2", {"lower_bound": "fixed", "forget_lower_bound": 0.5}),
        ("gla", {"num_heads": 2, "expand_k": 1.0}),
    ],
)
def test_properties_under_options(name, options):
    properties.check_all(make(name, **options), D)


def test_sliding_window_equals_masked_full_attention():
    windowed = make("attention", window=4)
    x = properties.inputs(D, T=12)
    y, state = windowed(x)
    assert state["k"].shape[1] == 3
    # token t only sees tokens t-3..t: changing token 0 leaves outputs from t = 4 on unchanged
    x2 = x.clone()
    x2[:, 0] += 1.0
    y2, _ = windowed(x2)
    assert_close("beyond the window", y2[:, 4:], y[:, 4:], 1e-14)
    assert (y2[:, :4] - y[:, :4]).abs().max() > 1e-6


def test_attention_forms_agree_with_cache():
    layer = make("attention")
    x = properties.inputs(D, T=20)
    _, state = layer(x[:, :9])
    for impl in ("naive", "chunk"):
        y, _ = layer.with_impl(impl)(x[:, 9:], state)
        ref, _ = layer.with_impl("naive")(x)
        assert_close(f"attention {impl} after cache", y, ref[:, 9:], 1e-10)


def test_mamba2_negative_eigenvalues_change_the_decay_range():
    layer = make("mamba2", allow_neg_eigval=True)
    with torch.no_grad():
        layer.A_log.fill_(3.0)
        layer.dt_bias.fill_(5.0)
    x = properties.inputs(D, T=8)
    y, state = layer(x)
    assert torch.isfinite(y).all()
    # with Δ·A very negative, a = 2·exp(ΔA) - 1 ≈ -1: the state's sign alternates
    plain = make("mamba2")
    plain.load_state_dict(layer.state_dict())
    y_plain, _ = plain(x)
    assert (y - y_plain).abs().max() > 1e-3


def test_retnet_decays_are_fixed_per_head():
    layer = make("retnet")
    gammas = layer.log_decay.exp()
    expected = torch.tensor([1 - 2.0 ** (-5 - h) for h in range(4)])
    assert_close("gamma", gammas, expected, 1e-7)
    assert not any("decay" in n for n, _ in layer.named_parameters())


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="feature_map must be one of"):
        build_mixer("linear_attention", D, feature_map="softmax")
    with pytest.raises(ValueError, match="num_heads must be a positive divisor of d_model = 32; got 5"):
        build_mixer("attention", D, num_heads=5)
    with pytest.raises(ValueError, match="forget_lower_bound must be in"):
        build_mixer("hgrn2", D, lower_bound="fixed", forget_lower_bound=1.0)
    with pytest.raises(ValueError, match="head_dim"):
        build_mixer("mamba2", D, head_dim=7)
    with pytest.raises(ValueError, match="impl must be one of"):
        build_mixer("gla", D, impl="cuda")
