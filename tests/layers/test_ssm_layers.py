"""SSM layers: convolution vs recurrence, initialisations, optimiser groups, the
bidirectional wrapper and long sequences."""

from __future__ import annotations

import math
import re

import pytest
import torch

from recur.layers import MIXERS, build_mixer
from recur.ops.ssm import DENSE_SSM, DIAG_SSM, DPLR_SSM, LINEAR_SCAN, SELECTIVE_SCAN
from tests.helpers import assert_close

SSM_LAYERS = ["s4", "s4d", "dss", "lssl", "s5", "lru", "liquid_s4", "mamba", "gss"]


FAMILY = {
    "s4": DPLR_SSM, "s4d": DIAG_SSM, "dss": DIAG_SSM, "lssl": DENSE_SSM, "s5": LINEAR_SCAN, "lru": LINEAR_SCAN,
    "liquid_s4": DIAG_SSM, "mamba": SELECTIVE_SCAN, "gss": DIAG_SSM,
}


def make(name, d_model=16, dtype=torch.float64, **options):
    torch.manual_seed(0)
    return build_mixer(name, d_model, **options).to(dtype)


def inputs(T=50, d_model=16, dtype=torch.float64, B=2):
    torch.manual_seed(1)
    return torch.randn(B, T, d_model, dtype=dtype)


@pytest.mark.parametrize("name", SSM_LAYERS)
def test_impl_picks_a_form_of_the_layers_family(name):
    family = FAMILY[name]
    assert MIXERS[name].family is family and MIXERS[name].impls == family.impls[1:]
    with pytest.raises(ValueError, match=re.escape(f"{name}: impl must be one of {list(family.impls)}")):
        build_mixer(name, 16, impl="chunk")


@pytest.mark.parametrize("options", [
    {"init": "lin"}, {"init": "inv"}, {"init": "legs"}, {"init": "real"},
    {"init": "lin", "discretization": "bilinear"},
])
def test_s4d_convolution_equals_recurrence(options):
    """The FFT convolution and the recurrence agree to < 1e-8, from a carried state too."""
    layer = make("s4d", **options)
    x = inputs(T=90)
    y_conv, s_conv = layer.with_impl("conv")(x)
    y_rec, s_rec = layer.with_impl("naive")(x)
    assert_close("conv vs recurrence", y_conv, y_rec, 1e-8)
    assert_close("final state", s_conv["x"], s_rec["x"], 1e-8)
    y1, s1 = layer.with_impl("conv")(x[:, :31])
    y2, s2 = layer.with_impl("conv")(x[:, 31:], s1)
    assert_close("carried conv", torch.cat([y1, y2], 1), y_rec, 1e-10)
    assert_close("carried state", s2["x"], s_rec["x"], 1e-10)
    assert s_conv["x"].is_complex() == (options["init"] != "real")


@pytest.mark.parametrize("name", ["s4", "dss", "lssl", "liquid_s4", "gss"])
def test_long_range_layers_convolution_equals_recurrence(name):
    layer = make(name)
    x = inputs(T=64)
    y1, s1 = layer.with_impl("conv")(x[:, :40])
    y2, s2 = layer.with_impl("conv")(x[:, 40:], s1)
    y_rec, s_rec = layer.with_impl("naive")(x)
    assert_close(f"{name} carried conv vs recurrence", torch.cat([y1, y2], 1), y_rec, 1e-8)
    for key in s_rec:
        assert_close(f"{name} state[{key}]", s2[key], s_rec[key], 1e-8)


def test_liquid_degree_one_is_s4d():
    liquid = make("liquid_s4", liquid_degree=1, init="legs")
    s4d = make("s4d", init="legs")
    x = inputs()
    assert_close("liquid_degree=1 vs s4d", liquid(x)[0], s4d(x)[0], 1e-12)


def test_liquid_correlation_term():
    """Order 2: x_t = Ā x_{t-1} + B̄ u_t + B̄² u_t u_{t-1}, y_t = Re(C x_t) + D u_t."""
    layer = make("liquid_s4", d_model=4, d_state=8)
    x = inputs(T=12, d_model=4)
    A_bar, B_bar, C = layer.ssm.system()
    h = torch.zeros(2, 4, 4, dtype=A_bar.dtype)
    ys, previous = [], torch.zeros(2, 4, dtype=x.dtype)
    for t in range(x.shape[1]):
        u = x[:, t]
        h = A_bar * h + B_bar * u[..., None] + B_bar**2 * (u * previous)[..., None]
        ys.append((C * h).sum(-1).real + layer.D * u)
        previous = u
    expected = layer.output(torch.stack(ys, 1))
    assert_close("liquid order 2", layer(x)[0], expected, 1e-12)


def test_lru_parametrisation():
    layer = make("lru", d_state=256, r_min=0.4, r_max=0.9, max_phase=math.pi / 10)
    modulus = torch.exp(-torch.exp(layer.nu_log))
    phase = torch.exp(layer.theta_log)
    assert modulus.min() >= 0.4 - 1e-9 and modulus.max() <= 0.9 + 1e-9
    assert phase.min() >= 0 and phase.max() <= math.pi / 10 + 1e-9
    assert_close("γ = √(1 − |λ|²)", torch.exp(layer.gamma_log), torch.sqrt(1 - modulus**2), 1e-6)


def test_mamba_initialisation():
    layer = make("mamba", d_model=32, d_state=8)
    assert torch.allclose(-torch.exp(layer.A_log), -torch.arange(1, 9, dtype=torch.float64).expand(64, 8))
    dt = torch.nn.functional.softplus(layer.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-9
    assert torch.equal(layer.D, torch.ones_like(layer.D)) and layer.dt_rank == 2


@pytest.mark.parametrize("name", SSM_LAYERS + ["bidirectional"])
def test_param_groups_are_own_parameters(name):
    layer = make(name)
    groups = layer.param_groups()
    assert groups, f"{name} declares no optimiser groups"
    own = {id(p) for p in layer.parameters()}
    seen = set()
    for group, params in groups.items():
        assert group in ("ssm", "no_decay"), f"{name}: unknown group {group!r}"
        assert params, f"{name}: empty group {group!r}"
        for p in params:
            assert id(p) in own, f"{name}: group {group!r} holds a parameter the layer does not own"
            assert id(p) not in seen, f"{name}: a parameter is in two groups"
            seen.add(id(p))


def test_bidirectional_reads_the_future():
    layer = make("bidirectional", mixer="s4d", mixer_options={"d_state": 8})
    assert not layer.causal and not MIXERS["bidirectional"].causal
    x = inputs(T=20)
    y, state = layer(x)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert (layer(x2)[0][:, 0] - y[:, 0]).abs().max() > 1e-6, "output 0 must depend on the last token"
    forward_only, _ = layer.forward_mixer(x)
    backward_only, _ = layer.backward_mixer(x.flip(1))
    assert_close("f(x) + flip(g(flip(x)))", y, forward_only + backward_only.flip(1), 1e-12)
    with pytest.raises(ValueError, match="not causal"):
        layer.step(x[:, 0], None)
    with pytest.raises(ValueError, match="state must be None"):
        layer(x, state)


def test_bidirectional_rejects_bad_inner():
    with pytest.raises(ValueError, match="not causal"):
        build_mixer("bidirectional", 16, mixer="bidirectional")
    with pytest.raises(ValueError, match="no option 'nope'"):
        build_mixer("bidirectional", 16, mixer="s4d", mixer_options={"nope": 1})
    with pytest.raises(ValueError, match="unknown mixer"):
        build_mixer("bidirectional", 16, mixer="s4dd")


@pytest.mark.parametrize("name", ["s4d", "lru", "mamba", "s5"])
def test_long_sequence_stable(name):
    """T = 65536 in float32: finite outputs and states."""
    layer = make(name, d_model=4, dtype=torch.float32, **({"d_state": 8} if name != "s5" else {"d_state": 8, "blocks": 1}))
    x = inputs(T=65536, d_model=4, dtype=torch.float32, B=1)
    with torch.no_grad():
        y, state = layer(x)
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(t).all() for t in state.values())


def test_bad_options_rejected():
    with pytest.raises(ValueError, match="d_state must be even"):
        build_mixer("s4d", 16, d_state=7)
    with pytest.raises(ValueError, match="r_min"):
        build_mixer("lru", 16, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="liquid_degree"):
        build_mixer("liquid_s4", 16, liquid_degree=0)
    with pytest.raises(ValueError, match="measure"):
        build_mixer("lssl", 16, measure="cheb")
