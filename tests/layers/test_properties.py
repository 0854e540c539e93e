"""Properties every registered mixer keeps, checked over the whole registry.

A new layer file enrols here by registering itself; capabilities (class attributes)
decide which checks apply, never lists of names.
"""

from __future__ import annotations

import pytest
import torch

from recur.layers import MIXERS, build_mixer
from tests.layers import properties

D_MODEL = 32
NAMES = sorted(MIXERS)


def make(name: str, dtype=torch.float64, **options):
    torch.manual_seed(0)
    return build_mixer(name, D_MODEL, **options).to(dtype)


def inputs(B=2, T=37, dtype=torch.float64):
    return properties.inputs(D_MODEL, B=B, T=T, dtype=dtype)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_and_state(name):
    layer = make(name)
    x = inputs()
    y, state = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert isinstance(state, dict) and all(isinstance(t, torch.Tensor) for t in state.values())
    if layer.constant_state:
        fresh = layer.init_state(x.shape[0])
        assert fresh.keys() == state.keys()
        for key in state:
            assert fresh[key].shape == state[key].shape, f"state[{key}] changes shape over time"
    assert layer.state_size() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_init_state_has_the_forward_state_dtypes(name, dtype):
    """init_state makes each state tensor in the dtype the forward returns it in (float32, or
    float64 for a float64 layer; caches of inputs in the layer's dtype), so a fresh state
    and a carried one are interchangeable."""
    layer = make(name, dtype=dtype)
    _, state = layer(inputs(T=5, dtype=dtype))
    fresh = layer.init_state(2)
    dtypes = {key: (fresh[key].dtype, state[key].dtype) for key in state}
    assert all(a == b for a, b in dtypes.values()), f"{name}: init_state vs forward dtypes {dtypes}"


@pytest.mark.parametrize("name", NAMES)
def test_state_carry(name):
    layer = make(name)
    if not layer.causal:
        pytest.skip(f"{name} is not causal, so it carries no state")
    properties.check_state_carry(layer, D_MODEL)


@pytest.mark.parametrize("name", NAMES)
def test_step_equals_forward(name):
    layer = make(name)
    if not layer.causal:
        pytest.skip(f"{name} is not causal, so it has no step")
    properties.check_step_equals_forward(layer, D_MODEL)


@pytest.mark.parametrize("name", NAMES)
def test_every_form_matches_naive(name):
    properties.check_forms_match_naive(make(name), D_MODEL)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    layer = make(name)
    y, _ = layer(inputs(T=20))
    y.square().mean().backward()
    missing = [n for n, p in layer.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f"{name}: no finite gradient for {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_bf16_forward_is_finite(name):
    # "auto": the family's parallel form on a CPU
    layer = make(name, dtype=torch.bfloat16)
    x = inputs(T=130, dtype=torch.bfloat16) * 4
    y, state = layer(x)
    assert y.dtype == torch.bfloat16
    assert torch.isfinite(y).all(), f"{name}: non-finite bf16 output"
    assert all(torch.isfinite(t).all() for t in state.values())


@pytest.mark.parametrize("name", NAMES)
def test_extreme_inputs_stay_finite(name):
    """Large activations saturate gates (decays near 0 or 1); nothing may overflow."""
    layer = make(name, dtype=torch.float32)
    x = inputs(T=300, dtype=torch.float32) * 100
    y, state = layer(x)
    assert torch.isfinite(y).all(), f"{name}: non-finite output at extreme inputs"


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_rejected(name):
    with pytest.raises(ValueError, match="no option 'not_an_option'"):
        build_mixer(name, D_MODEL, not_an_option=1)
