"""Every layer checks its inputs and its state where they come in: a bad one fails with a
ValueError or TypeError whose message names the layer and the argument, never with a raw
torch error deep inside; T = 0 runs in every layer.

Registry-wide: a layer file enrols by registering itself. Layers are built once each, at
a small d_model, so that the whole file runs in seconds.
"""

from __future__ import annotations

import copy
import functools
import io
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recur.layers import MIXERS, Mixer, build_mixer

D_MODEL = 16
NAMES = sorted(MIXERS)

# what is wrong with the input, and which argument the error must name
X_DEFECTS = ("feature size", "rank", "dtype", "not a tensor", "device")
STATE_DEFECTS = (
    "missing key",
    "extra key",
    "batch",
    "shape",
    "dtype",
    "not a tensor",
    "not a dict",
    "device",
    "foreign",
)


@functools.cache
def built(name: str) -> Mixer:
    torch.manual_seed(0)
    return build_mixer(name, D_MODEL)


def layout(layer: Mixer) -> tuple:
    """The names, shapes after the batch and dtypes of a layer's state."""
    return tuple(
        sorted((key, tuple(t.shape[1:]), t.dtype) for key, t in layer.init_state(1).items())
    )


@functools.cache
def look_alikes(name: str) -> tuple[str, ...]:
    """The other causal layers whose states have the same names, shapes and dtypes."""
    mine = layout(built(name))
    return tuple(
        other
        for other in NAMES
        if other != name and built(other).causal and layout(built(other)) == mine
    )


def token_input(layer: Mixer, batch: int, steps: int | None, seed: int = 0) -> torch.Tensor:
    """x [batch, steps, d_model] for forward, [batch, d_model] for step (steps None)."""
    shape = (batch, D_MODEL) if steps is None else (batch, steps, D_MODEL)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def assert_same_state(label: str, actual, expected) -> None:
    assert actual.keys() == expected.keys(), f"{label}: keys {sorted(actual)} != {sorted(expected)}"
    for key in expected:
        a, b = actual[key], expected[key]
        assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b), (
            f"{label}: state[{key!r}] differs"
        )


def call(layer: Mixer, x, state, step: bool):
    return layer.step(x, state) if step else layer(x, state)


def assert_named(error: pytest.ExceptionInfo, name: str, argument: str) -> None:
    """The message starts with the layer's name and then the argument it is about."""
    message = str(error.value)
    assert re.match(rf"{re.escape(name)}: {re.escape(argument)}\b", message), (
        f"{name}: expected a message about {argument!r}; got {type(error.value).__name__}: {message}"
    )


def bad_x(draw, layer: Mixer, defect: str, batch: int, steps: int | None):
    x = token_input(layer, batch, steps)
    if defect == "feature size":
        size = draw(
            st.integers(1, 3 * D_MODEL).filter(lambda n: n != D_MODEL), label="feature size"
        )
        return x.new_zeros(*x.shape[:-1], size)
    if defect == "rank":
        shapes = [(D_MODEL,), (batch, 1, 1, D_MODEL)]
        shapes += (
            [(batch, 1, D_MODEL)]
            if steps is None
            else [(batch, D_MODEL), (batch, steps, D_MODEL, 1)]
        )
        return x.new_zeros(draw(st.sampled_from(shapes), label="shape"))
    if defect == "dtype":
        dtypes = (
            torch.int64,
            torch.int32,
            torch.bool,
            torch.float64,
            torch.bfloat16,
            torch.float16,
            torch.complex64,
        )
        return x.to(draw(st.sampled_from(dtypes), label="dtype"))
    if defect == "not a tensor":
        return x.tolist()
    assert defect == "device"
    return x.to("meta")


def bad_state(draw, layer: Mixer, defect: str, batch: int):
    state = dict(layer.init_state(batch))
    key = draw(st.sampled_from(sorted(state)), label="key")
    if defect == "missing key":
        del state[key]
    elif defect == "extra key":
        state[draw(st.sampled_from(["extra", "h0", "S_prev"]).filter(lambda k: k not in state))] = (
            torch.zeros(batch, 1)
        )
    elif defect == "batch":
        other = draw(st.integers(1, 4).filter(lambda b: b != batch), label="state batch")
        state = layer.init_state(other)
    elif defect == "shape":
        tensor = state[key]
        sizes = list(tensor.shape)
        # the batch is the case above; a cache's token dim may have any size
        dims = [d for d in range(1, tensor.dim()) if d != layer.state_token_dims.get(key)]
        if dims and draw(st.booleans(), label="resize a dim"):
            dim = draw(st.sampled_from(dims), label="dim")
            sizes[dim] += draw(st.sampled_from([-1, 1]), label="by") if sizes[dim] else 1
        else:
            sizes.append(draw(st.integers(1, 3), label="extra dim"))
        state[key] = tensor.new_zeros(sizes)
    elif defect == "dtype":
        # a real state where it is complex, an integer one where it is real, a real one for integers
        tensor = state[key]
        if tensor.is_complex():
            state[key] = tensor.real
        else:
            state[key] = tensor.to(torch.int64 if tensor.is_floating_point() else torch.float32)
    elif defect == "not a tensor":
        state[key] = state[key].tolist()
    elif defect == "not a dict":
        return draw(
            st.sampled_from([list(state.values()), next(iter(state.values()))]), label="state"
        )
    elif defect == "device":
        state[key] = state[key].to("meta")
    else:
        assert defect == "foreign"
        return built(
            draw(st.sampled_from(look_alikes(layer.name)), label="other layer")
        ).init_state(batch)
    return state


@pytest.mark.parametrize("name", NAMES)
@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(data=st.data())
def test_bad_inputs_fail_naming_the_layer_and_the_argument(name, data):
    """Random bad inputs: wrong feature size, rank, dtype or device of x, and states with a
    missing or extra key, another batch, shape, dtype or device, or another layer's."""
    layer = built(name)
    draw = data.draw
    step = layer.causal and draw(st.booleans(), label="step")
    batch = draw(st.integers(1, 3), label="batch")
    steps = None if step else draw(st.integers(0, 4), label="T")
    state_defects = [
        d for d in STATE_DEFECTS if d != "foreign" or (layer.causal and look_alikes(name))
    ]
    argument, defect = draw(
        st.sampled_from([("x", d) for d in X_DEFECTS] + [("state", d) for d in state_defects]),
        label="defect",
    )
    if argument == "x":
        x, state = bad_x(draw, layer, defect, batch, steps), None
    else:
        x, state = token_input(layer, batch, steps), bad_state(draw, layer, defect, batch)
    with pytest.raises((ValueError, TypeError)) as error:
        call(layer, x, state, step)
    assert_named(error, name, argument)


@pytest.mark.parametrize("name", NAMES)
def test_a_state_of_another_layer_type_is_refused(name):
    """Layers whose states have the same names and shapes tell them apart by the tag."""
    layer = built(name)
    if not layer.causal or not look_alikes(name):
        pytest.skip(f"no other layer has {name}'s state layout")
    x = token_input(layer, 2, 3)
    for other in look_alikes(name):
        _, foreign = built(other)(x)
        with pytest.raises(
            ValueError, match=rf"^{name}: state was made by a {other} layer"
        ) as error:
            layer(x, foreign)
        assert_named(error, name, "state")
        with pytest.raises(ValueError, match=rf"^{name}: state was made by a {other} layer"):
            layer.step(x[:, 0], foreign)


def test_the_known_look_alike_states_are_found():
    """The pairs of the issue: the automatic search above is not empty."""
    assert "gated_deltanet" in look_alikes("deltanet") and "deltanet" in look_alikes(
        "gated_deltanet"
    )
    assert "dss" in look_alikes("s4d")
    # an LSTM's state has GRU's key and one more: refused by its tag, or untagged by its keys
    x = token_input(built("gru"), 2, 3)
    _, lstm_state = built("lstm")(x)
    with pytest.raises(
        ValueError,
        match=re.escape("gru: state was made by a lstm layer; expected the state of a gru layer"),
    ):
        built("gru")(x, lstm_state)
    with pytest.raises(
        ValueError, match=re.escape("gru: state has the keys ['c', 'h']; expected ['h']")
    ):
        built("gru")(x, dict(lstm_state))


@pytest.mark.parametrize("step", [False, True], ids=["forward", "step"])
@pytest.mark.parametrize("name", NAMES)
def test_a_state_of_batch_one_is_not_broadcast(name, step):
    """A batch-1 state with a batch-2 input is an error (lru.step, s5.step and s4's forward
    used to broadcast it silently)."""
    layer = built(name)
    if not layer.causal:
        pytest.skip(f"{name} is not causal: it takes no state")
    state = layer.init_state(1)
    x = token_input(layer, 2, None if step else 3)
    with pytest.raises(ValueError, match=r"the batch 2 of x") as error:
        call(layer, x, state, step)
    assert_named(error, name, "state")


@pytest.mark.parametrize("name", NAMES)
def test_zero_steps(name):
    """forward over T = 0: y [B, 0, D] and the state unchanged (init_state's for None).
    s4d, dss, gss, lssl, liquid_s4, bidirectional, lstm, gru, retnet and slstm used to fail."""
    layer = built(name)
    empty = token_input(layer, 2, 0)
    y, state = layer(empty)
    assert y.shape == (2, 0, D_MODEL) and y.dtype == empty.dtype
    assert_same_state(f"{name} T = 0 from None", state, layer.init_state(2))
    if not layer.causal:
        return
    _, carried = layer(token_input(layer, 2, 3))
    y, state = layer(empty, carried)
    assert y.shape == (2, 0, D_MODEL)
    assert_same_state(f"{name} T = 0 from a state", state, carried)
    # and the state carried through no tokens continues as the state itself does
    x = token_input(layer, 2, 2, seed=1)
    assert_same_state(f"{name} after T = 0", layer(x, state)[1], layer(x, carried)[1])


@pytest.mark.parametrize("name", NAMES)
def test_states_carry_the_layer_that_made_them(name):
    """init_state, forward (any T) and step return states tagged with the layer's name."""
    layer = built(name)
    assert layer.init_state(2).owner == layer(token_input(layer, 2, 0))[1].owner == name
    assert layer(token_input(layer, 2, 3))[1].owner == name
    if layer.causal:
        assert layer.step(token_input(layer, 2, None), None)[1].owner == name


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("deltanet", "gated_deltanet"),
        ("gated_deltanet", "deltanet"),
        ("gru", "lstm"),
        ("dss", "s4d"),
    ],
)
def test_the_look_alike_states_of_the_issue_are_refused(name, other):
    """States whose keys and shapes fit another layer type used to run there silently."""
    layer = built(name)
    x = token_input(layer, 2, 3)
    _, foreign = built(other)(x)
    for run in (lambda: layer(x, foreign), lambda: layer.step(x[:, 0], foreign)):
        with pytest.raises(ValueError) as error:
            run()
        assert_named(error, name, "state")
        assert f"made by a {other} layer" in str(error.value)


def test_zero_steps_leave_no_auxiliary_loss():
    """MoM's load-balancing loss over no tokens is zero, not the last batch's."""
    layer = built("mom")
    layer(token_input(layer, 2, 5))
    assert layer.aux_loss is not None and layer.aux_loss.item() != 0
    layer(token_input(layer, 2, 0))
    assert layer.aux_loss.item() == 0


def test_untagged_copies_and_saved_states_are_checked_by_keys_and_shapes():
    """dict(state) and a state saved and loaded (weights only) lose the tag and still run;
    deepcopy keeps it."""
    layer = built("deltanet")
    x = token_input(layer, 2, 3)
    with torch.no_grad():
        _, state = layer(x)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    for untagged in (dict(state), {**state}, loaded):
        assert_same_state("untagged", layer(x, untagged)[1], layer(x, state)[1])
    assert copy.deepcopy(state).owner == "deltanet"
    # untagged, another layer's state of the same layout passes: only keys and shapes are known
    layer(x, dict(built("gated_deltanet").init_state(2)))


def test_autocast_inputs_are_accepted():
    """Under autocast x may come in autocast's dtype while the parameters stay float32."""
    layer = built("gla")
    x = token_input(layer, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = layer(x.bfloat16())
        layer.step(x[:, 0].bfloat16(), None)
    with pytest.raises(
        TypeError, match=re.escape("gla: x has dtype torch.bfloat16; expected torch.float32")
    ):
        layer(x.bfloat16())


def test_attention_cache_keys_and_values_must_agree():
    layer = built("attention")
    _, state = layer(token_input(layer, 2, 3))
    state = {**state, "v": state["v"][:, 1:]}
    with pytest.raises(
        ValueError, match=r"attention: state\['v'\] holds 2 past tokens but state\['k'\] holds 3"
    ):
        layer(token_input(layer, 2, 1), state)


def test_messages_name_the_expected_and_received_value():
    layer = built("deltanet")
    with pytest.raises(
        ValueError,
        match=re.escape("deltanet: x has shape [2, 5, 15]; expected [B, T, 16] (d_model 16)"),
    ):
        layer(torch.zeros(2, 5, 15))
    with pytest.raises(
        ValueError, match=re.escape("deltanet: x has shape [2, 1, 16]; expected [B, 16] (one token")
    ):
        layer.step(torch.zeros(2, 1, 16), None)
    with pytest.raises(
        TypeError, match=re.escape("deltanet: x has dtype torch.float64; expected torch.float32")
    ):
        layer(torch.zeros(2, 5, 16, dtype=torch.float64))
    state = dict(layer.init_state(1))
    with pytest.raises(
        ValueError,
        match=re.escape("deltanet: state['S'] has shape [1, 4, 4, 4]; expected [2, 4, 4, 4]"),
    ):
        layer(torch.zeros(2, 5, 16), state)
    del state["S"]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "deltanet: state has the keys ['conv_k', 'conv_q', 'conv_v']; expected ['S', 'conv_k'"
        ),
    ):
        layer(torch.zeros(1, 5, 16), state)
