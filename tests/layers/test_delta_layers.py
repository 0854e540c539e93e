"""Checks specific to the delta-rule and mLSTM layers, beyond the registry-wide properties."""

from __future__ import annotations

import pytest
import torch

from recur.layers import build_mixer
from recur.models.lm import LM, LMConfig
from tests.helpers import assert_close

D = 32


def make(name, **options):
    torch.manual_seed(0)
    return build_mixer(name, D, **options).double()


def x_of(T=30, B=2, seed=1):
    torch.manual_seed(seed)
    return torch.randn(B, T, D, dtype=torch.float64)


def capture_beta(layer, x):
    """The β the layer passes to its op, read through a hook on b_proj."""
    seen = {}
    hook = layer.b_proj.register_forward_hook(lambda mod, inp, out: seen.__setitem__("beta", out.detach().sigmoid()))
    layer(x)
    hook.remove()
    return seen["beta"] * (2 if layer.config.allow_neg_eigval else 1)


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet", "deltaproduct", "mom"])
def test_allow_neg_eigval_doubles_beta(name):
    x = x_of() * 5
    positive = make(name, allow_neg_eigval=False)
    negative = make(name, allow_neg_eigval=True)
    y_pos, _ = positive(x)
    y_neg, _ = negative(x)
    assert not torch.allclose(y_pos, y_neg)
    assert float(capture_beta(negative, x).max()) > 1.0
    assert float(capture_beta(positive, x).max()) <= 1.0


def test_deltaproduct_one_step_is_gated_deltanet():
    """n_h = 1 with the same parameters is exactly Gated DeltaNet."""
    product = make("deltaproduct", num_householder=1, allow_neg_eigval=False)
    gated = make("gated_deltanet")
    gated.load_state_dict(product.state_dict())
    x = x_of()
    assert_close("n_h = 1", product(x)[0], gated(x)[0], 1e-12)


def test_deltaproduct_without_forget_gate():
    layer = make("deltaproduct", use_forget_gate=False)
    assert not hasattr(layer, "A_log") and layer.param_groups() == {}
    y, state = layer(x_of())
    assert torch.isfinite(y).all() and state["S"].shape == (2, 4, 8, 8)


def test_gated_deltanet_decay_in_unit_interval_and_no_decay_group():
    layer = make("gated_deltanet")
    log_alpha = layer._log_decay(x_of() * 100)
    assert bool((log_alpha <= 0).all()) and torch.isfinite(log_alpha).all()
    assert {id(p) for p in layer.param_groups()["no_decay"]} == {id(layer.A_log), id(layer.dt_bias)}


def test_mom_memory_moves_only_on_its_tokens():
    """A memory's state after a sequence equals its state after only the tokens routed to it."""
    layer = make("mom", num_memories=4, top_k=1, shared_memory=False, conv_size=0)
    x = x_of(T=40, B=1)
    weights, _ = layer.route(x)
    _, state = layer(x)
    for m in range(4):
        mine = weights[0, :, m] != 0
        if not bool(mine.any()):
            continue
        # a sequence of only memory m's tokens routes them all to m again (routing is per token)
        _, alone = layer(x[:, mine])
        assert_close(f"memory {m}", state["S"][0, m], alone["S"][0, m], 1e-10)
        untouched = [e for e in range(4) if e != m]
        assert bool((alone["S"][0, untouched] == 0).all()), "other memories moved"


def test_mom_routing_weights_and_shared_memory():
    layer = make("mom", num_memories=4, top_k=2, shared_memory=True)
    weights, aux = layer.route(x_of())
    assert weights.shape == (2, 30, 5)
    assert_close("top-k weights sum to 1", weights[..., :4].sum(-1), torch.ones(2, 30, dtype=torch.float64), 1e-12)
    assert bool(((weights[..., :4] != 0).sum(-1) == 2).all())
    assert bool((weights[..., 4] == 1).all())
    assert aux.ndim == 0 and float(aux) > 0


def test_mom_load_balancing_loss():
    """Switch loss E · Σ_e f_e P_e: its minimum (perfect balance) is 1 × scale; collapse onto
    one memory gives E × scale, and its gradient pushes the router back towards balance."""
    layer = make("mom", num_memories=4, top_k=1, aux_loss_scale=1.0)
    with torch.no_grad():
        layer.router.weight.zero_()
    # equal logits: uniform probabilities, so the loss is exactly 1 whatever top-k picks
    _, aux = layer.route(x_of())
    assert_close("balanced", aux, torch.tensor(1.0, dtype=aux.dtype), 1e-6)
    x = torch.zeros(1, 10, D, dtype=torch.float64)
    x[..., 0] = 1.0
    with torch.no_grad():
        layer.router.weight[0, 0] = 50.0
    _, aux = layer.route(x)
    assert_close("collapsed", aux, torch.tensor(4.0, dtype=aux.dtype), 1e-6)
    layer.router.weight.requires_grad_(True)
    _, aux = layer.route(x)
    (grad,) = torch.autograd.grad(aux, layer.router.weight)
    assert float(grad[0, 0]) >= 0, "the loss should not reward the collapsed memory"
    layer(x_of())
    assert layer.aux_loss is not None and layer.aux_loss.requires_grad


def test_mlstm_sigmoid_input_gate_and_soft_cap():
    exp_layer = make("mlstm")
    sig_layer = make("mlstm", input_gate="sigmoid")
    x = x_of() * 50
    y_exp, s_exp = exp_layer(x)
    y_sig, s_sig = sig_layer(x)
    assert torch.isfinite(y_exp).all() and torch.isfinite(y_sig).all()
    assert bool((s_sig["m"] == 0).all()), "mLSTMsig never moves its stabiliser"
    assert not bool((s_exp["m"] == 0).all())
    with pytest.raises(ValueError, match="input_gate must be one of"):
        build_mixer("mlstm", D, input_gate="relu")


def test_xlstm_stacks_with_other_layers_in_an_lm():
    config = LMConfig(vocab_size=17, d_model=D, n_layers=3, pattern=("xlstm", "mlstm", "gated_deltanet"), mlp_ratio=0)
    torch.manual_seed(0)
    model = LM(config).double()
    ids = torch.randint(0, 17, (2, 25))
    out = model(ids, labels=ids)
    assert torch.isfinite(out.loss)
    # prefill then step equals one forward over the whole sequence
    prefix = model(ids[:, :20])
    state = prefix.state
    for t in range(20, 25):
        step_logits, state = model.step(ids[:, t], state)
    assert_close("prefill + steps", step_logits, out.logits[:, -1], 1e-10)
