"""LightNet (1-D and grid), ViG, Activator and grid attention: what is specific to each.

The registry-wide properties of the 1-D `lightnet` mixer run in test_properties.py."""

from __future__ import annotations

import pytest
import torch

from recur.layers import build_mixer
from recur.layers.grid import GRID_MIXERS, build_grid_mixer
from recur.layers.lightnet import additive_recurrence, lrpe, lrpe_frequencies, normalised_keys
from recur.ops.gla import gla
from tests.helpers import assert_close, grads

OURS = ("lightnet_2d", "vig", "activator", "vit_attention")


def _qkv(T=23, B=2, H=2, K=4, V=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, n, generator=gen, dtype=torch.float64, requires_grad=True) for n in (K, K, V)]


@pytest.mark.parametrize("with_lrpe", [False, True])
@pytest.mark.parametrize("impl", ["chunk", "naive"])
def test_gla_form_of_the_additive_recurrence_equals_the_step_by_step_one(impl, with_lrpe):
    """SiLU(q)ᵀ Ŝ_t / Z_t with Ŝ_t, Z_t summed step by step == GLA on exp(k - logcumsumexp k)
    with log decay z_{t-1} - z_t, forward and gradients, in float64."""
    q, k, v = _qkv()
    T, K = q.shape[1], q.shape[-1]
    angles = None
    if with_lrpe:
        angles = (torch.arange(T, dtype=torch.float64)[:, None] * lrpe_frequencies(K, 10.0, torch.float64))
        angles = angles[None, :, None].expand(q.shape[0], T, 1, K)
    expected = additive_recurrence(q, k, v, angles)
    key, g, _ = normalised_keys(k, None)
    if with_lrpe:
        g = torch.cat([g, g], -1)
    actual, _ = gla(lrpe(torch.nn.functional.silu(q), angles), lrpe(key, angles), v, g=g, scale=1.0, impl=impl)
    assert_close("output", actual, expected, 1e-10)
    weight = torch.randn_like(expected)
    for name, a, b in zip("qkv", grads((actual * weight).sum(), [q, k, v]), grads((expected * weight).sum(), [q, k, v]),
                          strict=True):
        assert_close(f"d{name}", a, b, 1e-10)


def test_lightnet_state_continues_from_log_z():
    """Two chunks with the carried (S, log Z) equal one: the normaliser sums over both."""
    q, k, v = _qkv(T=30)
    key, g, _ = normalised_keys(k, None)
    whole, _ = gla(torch.nn.functional.silu(q), key, v, g=g, scale=1.0, impl="chunk")
    key1, g1, z1 = normalised_keys(k[:, :11], None)
    first, S = gla(torch.nn.functional.silu(q[:, :11]), key1, v[:, :11], g=g1, scale=1.0, output_final_state=True)
    key2, g2, _ = normalised_keys(k[:, 11:], z1)
    second, _ = gla(torch.nn.functional.silu(q[:, 11:]), key2, v[:, 11:], g=g2, scale=1.0, initial_state=S)
    assert_close("split", torch.cat([first, second], 1), whole, 1e-12)


@pytest.mark.parametrize("options", [{"lrpe": False}, {"tpe_size": 0}, {"lrpe": False, "tpe_size": 0}])
def test_lightnet_variants_keep_the_layer_properties(options):
    from tests.layers import properties

    torch.manual_seed(0)
    layer = build_mixer("lightnet", 16, num_heads=2, **options).double()
    properties.check_state_carry(layer, 16)
    properties.check_step_equals_forward(layer, 16)


def test_lightnet_grows_no_decay_with_distance():
    """Without positions (no LRPE, no TPE) the first token weighs on the last output as on any:
    moving it to the middle of the sequence leaves the last output unchanged."""
    torch.manual_seed(0)
    layer = build_mixer("lightnet", 16, num_heads=2, lrpe=False, tpe_size=0).double()
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    moved = torch.cat([x[:, 1:6], x[:, :1], x[:, 6:]], 1)
    assert_close("last output", layer(moved)[0][:, -1], layer(x)[0][:, -1], 1e-12)


def make_grid(name, dtype=torch.float64, **options):
    torch.manual_seed(0)
    return build_grid_mixer(name, 16, **options).to(dtype)


def grid_input(B=2, H=5, W=7, D=16, dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(B, H, W, D, generator=gen, dtype=torch.float64).to(dtype)


def test_our_grid_mixers_are_registered():
    assert set(OURS) <= set(GRID_MIXERS)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", OURS)
def test_grid_mixer_shapes_and_gradients(name, dtype):
    layer = make_grid(name, dtype)
    x = grid_input(dtype=dtype).requires_grad_()
    y = layer(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()
    y.float().square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    missing = [n for n, p in layer.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no finite gradient for {missing}"


@pytest.mark.parametrize("name", OURS)
def test_grid_mixer_rows_do_not_mix_across_the_batch_and_any_size_runs(name):
    layer = make_grid(name)
    x = grid_input(B=3, H=4, W=3)
    assert_close(f"{name} batch row", layer(x[1:2]), layer(x)[1:2], 1e-12)
    assert layer(grid_input(B=1, H=1, W=1)).shape == (1, 1, 1, 16)


@pytest.mark.parametrize("name", ["lightnet_2d", "vig", "vit_attention"])
def test_grid_mixers_read_the_whole_grid(name):
    """A change in one corner cell reaches the opposite corner (one layer, any direction)."""
    layer = make_grid(name)
    x = grid_input(B=1)
    changed = x.clone()
    changed[0, -1, -1] += 1.0
    assert (layer(changed)[0, 0, 0] - layer(x)[0, 0, 0]).abs().max() > 1e-8


def test_activator_acts_on_each_patch_alone():
    layer = make_grid("activator")
    x = grid_input(B=1)
    changed = x.clone()
    changed[0, 2, 3] += 1.0
    difference = (layer(changed) - layer(x)).abs().sum(-1)
    assert difference[0, 2, 3] > 0 and difference.sum() == difference[0, 2, 3]


def test_lightnet_2d_without_positions_is_one_order_free_scan():
    """Without MD-TPE and MD-LRPE every cell reads one state summed over all cells: permuting
    the cells permutes the outputs (no scan order anywhere)."""
    layer = make_grid("lightnet_2d", lrpe=False, tpe_size=0)
    x = grid_input(B=1, H=4, W=5)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(3))
    shuffled = x.flatten(1, 2)[:, perm].view_as(x)
    assert_close("permuted", layer(shuffled).flatten(1, 2), layer(x).flatten(1, 2)[:, perm], 1e-12)


def test_lightnet_2d_positions_break_the_symmetry():
    layer = make_grid("lightnet_2d")
    x = grid_input(B=1, H=4, W=5)
    flipped = x.flip(1, 2)
    assert (layer(flipped).flip(1, 2) - layer(x)).abs().max() > 1e-6


def test_vig_reads_both_directions_and_its_gates_differ_per_direction():
    layer = make_grid("vig")
    assert layer.gate_up.out_features == 2 * layer.key_dim
    x = grid_input(B=1)
    changed = x.clone()
    changed[0, 0, 0] += 1.0
    # the last cell sees the first through the forward scan, and the first the last through the backward one
    assert (layer(changed)[0, -1, -1] - layer(x)[0, -1, -1]).abs().max() > 1e-8


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("vig", {"conv_size": 2}, "conv_size must be a positive odd int; got 2"),
        ("vig", {"num_heads": 5}, "num_heads must be a positive divisor of d_model = 16; got 5"),
        ("lightnet_2d", {"tpe_size": -1}, "tpe_size must be an int >= 0"),
        ("activator", {"expand": 0.0}, "expand \\* d_model = 0 must be a positive int"),
        ("activator", {"impl": "chunk"}, "impl must be 'auto' \\(the layer has one form\\); got 'chunk'"),
        ("vig", {"impl": "fast"}, "impl must be one of \\['auto', 'naive', 'chunk', 'triton'\\]"),
    ],
)
def test_bad_options_are_named(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_grid_mixer(name, 16, **options)


@pytest.mark.parametrize("T", [17, 200], ids=["matrix", "fft"])
def test_toeplitz_position_encoding_equals_its_recurrence(T):
    """The Toeplitz matrix or FFT convolution with K[j] = Σ_e a_e λ_e^j, continued from a
    state, equals s_t = diag(λ) s_{t-1} + x_t, y_t = aᵀ s_t step by step (float64)."""
    from recur.layers.lightnet import ToeplitzPositionEncoding

    torch.manual_seed(0)
    tpe = ToeplitzPositionEncoding(6, 3).double()
    x = torch.randn(2, T, 6, dtype=torch.float64)
    s0 = torch.randn(2, 6, 3, dtype=torch.float64)
    y, final = tpe(x, s0)
    decay = torch.sigmoid(tpe.decay_logit)
    s, outputs = s0, []
    for t in range(x.shape[1]):
        s = decay * s + x[:, t, :, None]
        outputs.append((tpe.weight * s).sum(-1))
    assert_close("y", y, torch.stack(outputs, 1), 1e-12)
    assert_close("s_T", final, s, 1e-12)


def test_vig_forms_of_the_gla_op_agree():
    x = grid_input(B=1, H=6, W=7)
    naive, chunk = make_grid("vig", impl="naive"), make_grid("vig", impl="chunk")
    assert_close("vig chunk vs naive", chunk(x), naive(x), 1e-10)


def test_md_tpe_is_the_four_directional_scans():
    """MD-TPE on a grid == the causal encoding run right and left along every row and down
    and up along every column, summed."""
    layer = make_grid("lightnet_2d")
    x = grid_input(B=2, H=5, W=7)
    B, H, W, D = x.shape
    right, left, down, up = layer.tpe
    rows, cols = x.reshape(B * H, W, D), x.transpose(1, 2).reshape(B * W, H, D)
    along_rows = right(rows, None)[0] + left(rows.flip(1), None)[0].flip(1)
    along_cols = down(cols, None)[0] + up(cols.flip(1), None)[0].flip(1)
    expected = along_rows.view(B, H, W, D) + along_cols.view(B, W, H, D).transpose(1, 2)
    assert_close("md_tpe", layer.md_tpe(x), expected, 1e-12)


@pytest.mark.parametrize("impl", ["chunk", "naive"])
def test_lightnet_from_a_fresh_state_equals_from_none(impl):
    """init_state holds log Z = -inf (an empty sum): the first step's decay is exp(-inf) = 0,
    outputs and gradients as with no state."""
    torch.manual_seed(0)
    layer = build_mixer("lightnet", 16, num_heads=2, impl=impl).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    y, state = layer(x, layer.init_state(2))
    expected, expected_state = layer(x)
    assert_close("output", y, expected, 1e-12)
    assert_close("S", state["S"], expected_state["S"], 1e-12)
    (dx,) = torch.autograd.grad(y.square().sum(), x)
    (expected_dx,) = torch.autograd.grad(expected.square().sum(), x)
    assert_close("dx", dx, expected_dx, 1e-12)
