"""RNN layers: torch.nn.LSTM / torch.nn.GRU equivalence, torch's fused kernel (impl
"native") against the op, heads, bidirectional wrapping, step and state carry with
non-default options, Newton forms, sLSTM in an LM."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from recur.layers import build_mixer
from recur.models.lm import LM, LMConfig
from tests.helpers import assert_close, weighted_sum

D = 12


def inputs(B=3, T=23, dtype=torch.float64, seed=1):
    return torch.randn(B, T, D, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("impl", ["sequential", "native"])
def test_loading_torch_weights_gives_identical_outputs(kind, bidirectional, impl):
    torch.manual_seed(0)
    hidden = D // 2 if bidirectional else D
    reference = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](D, hidden, batch_first=True, bidirectional=bidirectional).double()
    layer = build_mixer(kind, D, bidirectional=bidirectional, impl=impl).double()
    layer.load_torch(reference)
    x = inputs()
    expected, torch_state = reference(x)
    y, state = layer(x)
    assert_close(f"{kind} output", y, expected, 1e-12)
    if not bidirectional:
        h_n = torch_state[0] if kind == "lstm" else torch_state
        assert_close(f"{kind} h_n", state["h"].reshape(3, D), h_n[0], 1e-12)
        if kind == "lstm":
            assert_close("lstm c_n", state["c"].reshape(3, D), torch_state[1][0], 1e-12)
    # gradients agree too
    (expected * torch.linspace(-1, 1, D, dtype=x.dtype)).sum().backward()
    (y * torch.linspace(-1, 1, D, dtype=x.dtype)).sum().backward()
    assert_close(f"{kind} dW_hh", layer.directions[0].R.grad.reshape(-1, hidden), reference.weight_hh_l0.grad, 1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_torch_initial_state_carries(kind):
    torch.manual_seed(0)
    reference = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](D, D, batch_first=True).double()
    layer = build_mixer(kind, D).double()
    layer.load_torch(reference)
    x = inputs()
    h0 = torch.randn(1, 3, D, dtype=x.dtype)
    c0 = torch.randn(1, 3, D, dtype=x.dtype)
    expected, _ = reference(x, (h0, c0) if kind == "lstm" else h0)
    state = {"h": h0[0].reshape(3, 1, D)}
    if kind == "lstm":
        state["c"] = c0[0].reshape(3, 1, D)
    y, _ = layer(x, state)
    assert_close(f"{kind} from a state", y, expected, 1e-12)


def op_and_native(kind, bidirectional=False, **options):
    """The same layer twice: forced onto the naive op, and onto torch's kernel."""
    torch.manual_seed(0)
    layer = build_mixer(kind, D, bidirectional=bidirectional, impl="naive", **options).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.4)  # larger than the default init, and nonzero biases
    return layer, layer.with_impl("native")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_native_matches_the_op_float64(kind, bidirectional):
    """Forward, final state, and gradients of x, every parameter and the initial state."""
    op, native = op_and_native(kind, bidirectional)
    x = inputs(T=41)
    results = []
    for layer in (op, native):
        x_leaf = x.clone().requires_grad_()
        state = None
        if not bidirectional:
            state = {n: torch.randn(3, 1, D, dtype=x.dtype, generator=torch.Generator().manual_seed(i)).requires_grad_()
                     for i, n in enumerate(layer.cell.state_names)}
        y, final = layer(x_leaf, state)
        loss = weighted_sum(y, *final.values())
        leaves = [x_leaf, *layer.parameters(), *(state.values() if state else ())]
        results.append([y, *final.values(), *torch.autograd.grad(loss, leaves)])
    for i, (a, e) in enumerate(zip(results[1], results[0], strict=True)):
        assert_close(f"{kind} native vs op, output {i}", a, e, 1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_native_state_carry_and_step(kind):
    op, native = op_and_native(kind)
    x = inputs(T=30)
    y, state = op(x)
    y1, s1 = native(x[:, :13])
    y2, s2 = native(x[:, 13:], s1)
    assert_close(f"{kind} native carried output", torch.cat([y1, y2], 1), y, 1e-10)
    step_state, outputs = None, []
    for t in range(x.shape[1]):
        y_t, step_state = native.step(x[:, t], step_state)
        outputs.append(y_t)
    assert_close(f"{kind} native step loop", torch.stack(outputs, 1), y, 1e-10)
    for name in state:
        assert_close(f"{kind} native carried state[{name}]", s2[name], state[name], 1e-10)
        assert_close(f"{kind} native step state[{name}]", step_state[name], state[name], 1e-10)


def test_auto_runs_torch_kernel_only_where_it_applies(monkeypatch):
    calls = []
    original = torch._VF.lstm

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(torch._VF, "lstm", counting)
    x = inputs(T=9)
    build_mixer("lstm", D).double()(x)
    assert len(calls) == 1, "impl='auto' with one head and float64 should use torch's kernel"
    for layer, data in (
        (build_mixer("lstm", D, num_heads=3).double(), x),
        (build_mixer("lstm", D).bfloat16(), x.bfloat16()),
        (build_mixer("lstm", D, impl="sequential").double(), x),
        (build_mixer("lstm", D, impl="naive").double(), x),
    ):
        layer(data)
    assert len(calls) == 1, "heads, low precision, or a forced op form must run the op"
    with pytest.raises(ValueError, match=r"impl='native' cannot run this lstm layer: num_heads = 3"):
        build_mixer("lstm", D, num_heads=3, impl="native")(x.float())
    with pytest.raises(TypeError, match=r"lstm: x has dtype torch.float32; expected torch.float64"):
        build_mixer("lstm", D, impl="native").double()(x.float())
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(
        ValueError, match=r"impl='native' cannot run this lstm layer: x is torch.bfloat16 but the parameters"
    ):
        build_mixer("lstm", D, impl="native")(x.bfloat16())
    with pytest.raises(ValueError, match=r"elman: impl must be one of \['auto', 'naive', 'sequential'\]; got 'native'"):
        build_mixer("elman", D, impl="native")


def test_loading_rejects_mismatched_modules():
    layer = build_mixer("lstm", D)
    with pytest.raises(ValueError, match="hidden_size 8; expected 12 and 12"):
        layer.load_torch(nn.LSTM(D, 8, batch_first=True))
    with pytest.raises(ValueError, match="only a one-layer"):
        layer.load_torch(nn.LSTM(D, D, num_layers=2))
    with pytest.raises(ValueError, match="bidirectional"):
        layer.load_torch(nn.LSTM(D, D, bidirectional=True))
    with pytest.raises(ValueError, match="num_heads=1"):
        build_mixer("gru", D, num_heads=3).load_torch(nn.GRU(D, D))


CASES = [
    ("lstm", {"num_heads": 3}),
    ("gru", {"num_heads": 2}),
    ("elman", {"activation": "relu", "num_heads": 2}),
    ("rhn", {"depth": 3}),
    ("alrnn", {"num_relu": 3, "num_heads": 2}),
    ("slstm", {"num_heads": 2, "conv_size": 3}),
    ("paragru", {"num_heads": 2, "impl": "newton"}),
    ("paralstm", {"impl": "newton"}),
    ("indrnn", {"impl": "newton"}),
    ("mgu", {"num_heads": 4}),
]


@pytest.mark.parametrize(("name", "options"), CASES)
def test_step_and_state_carry_with_options(name, options):
    torch.manual_seed(0)
    layer = build_mixer(name, D, **options).double()
    x = inputs(T=30)
    y, state = layer(x)
    y1, s1 = layer(x[:, :11])
    y2, s2 = layer(x[:, 11:], s1)
    assert_close(f"{name} split", torch.cat([y1, y2], 1), y, 1e-10)
    step_state, outputs = None, []
    for t in range(x.shape[1]):
        y_t, step_state = layer.step(x[:, t], step_state)
        outputs.append(y_t)
    assert_close(f"{name} step", torch.stack(outputs, 1), y, 1e-10)
    for key in state:
        assert_close(f"{name} state[{key}]", step_state[key], state[key], 1e-10)
        assert_close(f"{name} carried state[{key}]", s2[key], state[key], 1e-10)


@pytest.mark.parametrize("name", ["lstm", "gru", "elman", "mgu", "rhn", "indrnn", "alrnn", "paragru", "paralstm"])
def test_bidirectional(name):
    torch.manual_seed(0)
    layer = build_mixer(name, D, bidirectional=True).double()
    assert not layer.causal
    x = inputs(T=15)
    y, _ = layer(x)
    assert y.shape == x.shape
    # the Triton forms run on CUDA (tests/ops/test_rnn_triton.py and test_newton_triton.py run
    # them in Triton's interpreter)
    for impl in (impl for impl in layer.impls if impl != "triton"):
        assert_close(f"{name} impl={impl}", layer.with_impl(impl)(x)[0], y, 1e-10)
    # reversing time swaps the roles of the two halves
    layer.directions[0], layer.directions[1] = layer.directions[1], layer.directions[0]
    assert_close(f"{name} reversed", layer(x.flip(1))[0].flip(1), torch.cat([y[..., D // 2 :], y[..., : D // 2]], -1), 1e-12)
    with pytest.raises(ValueError, match="has no step"):
        layer.step(x[:, 0], None)
    with pytest.raises(ValueError, match="takes no state"):
        layer(x, layer.init_state(3))


def test_config_errors():
    with pytest.raises(ValueError, match="num_heads must be a positive divisor of the hidden size 6"):
        build_mixer("lstm", D, num_heads=4, bidirectional=True)
    with pytest.raises(ValueError, match="activation must be 'tanh' or 'relu'"):
        build_mixer("elman", D, activation="gelu")
    with pytest.raises(ValueError, match=r"num_relu must be an int in \[0, head size 6\]"):
        build_mixer("alrnn", D, num_heads=2, num_relu=7)
    with pytest.raises(ValueError, match="slstm has no bidirectional form"):
        build_mixer("slstm", D, bidirectional=True)
    with pytest.raises(ValueError, match="impl must be one of"):
        build_mixer("gru", D, impl="fast")
    layer = build_mixer("lstm", D)
    with pytest.raises(ValueError, match=re.escape("lstm: x has shape [2, 5, 13]; expected [B, T, 12]")):
        layer(torch.randn(2, 5, 13))
    with pytest.raises(ValueError, match=re.escape("lstm: state has the keys ['h']; expected ['c', 'h']")):
        layer(torch.randn(2, 5, D), {"h": torch.zeros(2, 1, D)})
    with pytest.raises(ValueError, match=r"lstm: impl must be one of \['auto', 'naive', 'sequential', 'triton', 'native'\]"):
        build_mixer("lstm", D, impl="newton")
    assert build_mixer("paragru", D).impls == ("naive", "newton", "sequential", "triton")


def test_slstm_in_an_lm_pattern():
    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=17, d_model=16, n_layers=2, pattern=("slstm", "gla"), mlp_ratio=2.0))
    ids = torch.randint(0, 17, (2, 9))
    out = model(ids, labels=ids)
    assert torch.isfinite(out.loss)
    out.loss.backward()


@pytest.mark.parametrize("kind", ["paragru"])
def test_compiled_newton_layer_matches_the_naive_op(kind):
    """compile=True with impl="newton": the same outputs, state and gradients in float64
    (ParaLSTM's compiled solve is checked at the op level; compiling it here costs ~30 s)."""
    torch.manual_seed(0)
    naive = build_mixer(kind, D, impl="naive").double()
    compiled = build_mixer(kind, D, impl="newton", compile=True).double()
    compiled.load_state_dict(naive.state_dict())
    x = inputs(T=40)
    results = []
    for layer in (naive, compiled):
        x_leaf = x.clone().requires_grad_()
        y, final = layer(x_leaf)
        leaves = [x_leaf, *layer.parameters()]
        results.append([y, *final.values(), *torch.autograd.grad(weighted_sum(y, *final.values()), leaves)])
    for i, (a, e) in enumerate(zip(results[1], results[0], strict=True)):
        assert_close(f"{kind} compiled newton vs naive, output {i}", a, e, 1e-9)
