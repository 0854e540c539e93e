"""Every op family, every form, against the family's spec (its naive form) in float64.

A family is tested here by registering it in `recur.ops.FAMILIES`: outputs, final states
and the gradients of every input (the initial state included) against the spec; packed
batches against separate sequences; [0:t] then [t:T] against [0:T]; single steps against
the forward; bad arguments rejected with a message that names them. Tests of what is
specific to one family stay in that family's own file.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from recur.ops import FAMILIES
from recur.ops.family import Example, state_tensors
from tests.helpers import assert_close, compare_results, family_results, interpreted_kernels

# the families every user of the library can count on
REQUIRED = {"gla", "delta_rule", "delta_product", "mlstm", "selective_scan", "diag_ssm", "dense_ssm", "rnn", "newton"}

EXACT = 1e-10
# forms that compute in float32 (Triton kernels), compared with the float64 spec
FLOAT32 = 2e-5


def _params(what: str, sequences_only: bool = False):
    """(family, impl, case) for every form but the spec ("forms"), every form ("all") or
    every single-step form ("steps"); `sequences_only` leaves out grid families, which have
    no packed batches and whose boundary state does not carry across a split of the rows."""
    params = []
    for name, family in FAMILIES.items():
        if sequences_only and family.layout != "sequence":
            continue
        table = family.step_impls[1:] if what == "steps" else family.impls[1:]
        for impl in table:
            if what == "forms" and impl == "naive":
                continue
            for case in family.cases:
                # a form written for some of the family's inputs (RNN kernels for some cells)
                if family.runs_case(impl, case):
                    params.append(pytest.param(name, impl, case, id=f"{name}-{impl}-{case}"))
    return params


@contextlib.contextmanager
def runnable(family, impl: str, steps: bool = False):
    """Triton forms run in Triton's interpreter (their module loaded for it); the rest as is."""
    form = family._steps[impl] if steps else family.form_info(impl)
    if not form.triton:
        yield form
        return
    pytest.importorskip("triton")
    with interpreted_kernels(form.fn.partition(":")[0]):
        yield form


def tolerance(form) -> float:
    return EXACT if form.float64 else FLOAT32


def test_every_family_is_registered():
    assert REQUIRED <= set(FAMILIES), f"missing families: {sorted(REQUIRED - set(FAMILIES))}"
    for name, family in FAMILIES.items():
        assert "naive" in family.forms, name
        assert family.time_inputs and family.cases, name
        example = family.example_inputs(3, case=family.cases[0])
        assert isinstance(example, Example) and example.leaves(), name


@pytest.mark.parametrize(("name", "impl", "case"), _params("forms"))
def test_form_matches_spec(name, impl, case):
    family = FAMILIES[name]
    with runnable(family, impl) as form:
        for T in (1, 100) if form.float64 else (70,):
            example = family.example_inputs(T, case=case)
            compare_results(family_results(family, impl, example), family_results(family, "naive", example), tolerance(form), f"T={T}")


@pytest.mark.parametrize(("name", "impl", "case"), _params("all", sequences_only=True))
def test_packed_equals_separate_sequences(name, impl, case):
    """cu_seqlens: N sequences end to end in a batch of one behave as N separate ones."""
    family = FAMILIES[name]
    lengths = [5, 0, 70, 1, 33]
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    example = family.example_inputs(sum(lengths), batch=1, case=case)
    states = family.example_inputs(1, batch=len(lengths), case=case, seed=1).kwargs.get("initial_state")
    example.kwargs["initial_state"] = states
    with runnable(family, impl) as form:
        packed = family_results(family, impl, example, cu_seqlens=bounds)
        outputs, finals = [], []
        for n in range(len(lengths)):
            start, end = int(bounds[n]), int(bounds[n + 1])
            one = _slice_time(family, example, start, end)
            one.kwargs["initial_state"] = None if states is None else _state_rows(states, n)
            output, state = family.call("naive", one.args, {**one.kwargs, "output_final_state": True})
            outputs.append(output)
            finals.append(state_tensors(state))
        assert_close("packed output", packed["output"], torch.cat(outputs, dim=1), tolerance(form))
        for i, parts in enumerate(zip(*finals, strict=True)):
            assert_close(f"packed final_state[{i}]", packed[f"final_state[{i}]"], torch.cat(parts), tolerance(form))
        if impl != "naive":
            compare_results(packed, family_results(family, "naive", example, cu_seqlens=bounds), tolerance(form), "packed")


@pytest.mark.parametrize(("name", "impl", "case"), _params("all", sequences_only=True))
def test_split_carries_the_state(name, impl, case):
    """[0:t] then [t:T] from the carried state equals [0:T]."""
    family = FAMILIES[name]
    T, t = 100, 37
    example = family.example_inputs(T, case=case)
    with runnable(family, impl) as form:
        whole, whole_state = family.call(impl, example.args, {**example.kwargs, "output_final_state": True})
        first = _slice_time(family, example, 0, t)
        out_a, state = family.call(impl, first.args, {**first.kwargs, "output_final_state": True})
        second = _slice_time(family, example, t, T)
        second.kwargs["initial_state"] = state
        out_b, final = family.call(impl, second.args, {**second.kwargs, "output_final_state": True})
        assert_close("split output", torch.cat([out_a, out_b], dim=1), whole, tolerance(form))
        for i, (a, b) in enumerate(zip(state_tensors(final), state_tensors(whole_state), strict=True)):
            assert_close(f"split final_state[{i}]", a, b, tolerance(form))


@pytest.mark.parametrize(("name", "impl", "case"), _params("steps"))
def test_steps_equal_the_forward(name, impl, case):
    family = FAMILIES[name]
    T = 6
    example = family.example_inputs(T, case=case)
    expected, expected_state = family.call("naive", example.args, {**example.kwargs, "output_final_state": True})
    with runnable(family, impl, steps=True) as form, torch.no_grad():
        state, outputs = example.kwargs.get("initial_state"), []
        for t in range(T):
            one = _slice_time(family, example, t, t + 1, squeeze=True)
            one.kwargs["initial_state"] = state
            output, state = family.step(*one.args, impl=impl, **one.kwargs)
            outputs.append(output)
        assert_close("steps output", torch.stack(outputs, dim=1), expected, tolerance(form))
        for i, (a, b) in enumerate(zip(state_tensors(state), state_tensors(expected_state), strict=True)):
            assert_close(f"steps final_state[{i}]", a, b, tolerance(form))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_zero_steps_return_the_state(name):
    family = FAMILIES[name]
    example = family.example_inputs(0, case=family.cases[0])
    for impl in family.impls[1:]:
        if family.form_info(impl).triton:
            continue
        output, state = family.call(impl, example.args, {**example.kwargs, "output_final_state": True})
        assert output.shape[1] == 0
        for got, given in zip(state_tensors(state), state_tensors(example.kwargs["initial_state"]), strict=True):
            assert torch.equal(got.detach().to(given.dtype), given.detach()), impl


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bad_arguments_are_named(name):
    """A tensor of the wrong rank or dtype fails before any form runs, naming the argument."""
    family = FAMILIES[name]
    example = family.example_inputs(8, case=family.cases[0])
    positional = list(family.signature.parameters)[: len(example.args)]
    arguments = dict(zip(positional, example.args, strict=True)) | example.kwargs
    for arg, value in arguments.items():
        for i, tensor in _tensors_of(value):
            for bad, what in ((tensor.detach().unsqueeze(0), "one more dim"), (tensor.detach().long(), "int64")):
                broken = dict(arguments)
                broken[arg] = bad if i is None else type(value)(*(bad if j == i else s for j, s in enumerate(value)))
                with pytest.raises((ValueError, TypeError)) as error:
                    family.call("naive", (), broken)
                assert arg in str(error.value), f"{name}: {arg} with {what}: {error.value}"
    with pytest.raises(TypeError, match="no_such_argument"):
        family.call("naive", example.args, {**example.kwargs, "no_such_argument": 1})
    with pytest.raises(ValueError, match="impl must be one of"):
        family.call("fastest", example.args, example.kwargs)


def _tensors_of(value):
    if isinstance(value, torch.Tensor):
        return [(None, value)]
    if isinstance(value, tuple) and value and all(isinstance(s, torch.Tensor) for s in value):
        return list(enumerate(value))
    return []


def _state_rows(state, n: int):
    from recur.ops.family import map_state

    return map_state(lambda s: s[n : n + 1], state)


def _slice_time(family, example: Example, start: int, end: int, squeeze: bool = False) -> Example:
    """The example on time steps [start, end) (the time axis dropped when `squeeze`)."""
    names = list(family.signature.parameters)

    def cut(name, x):
        if name in family.time_inputs and isinstance(x, torch.Tensor):
            x = x[:, start:end]
            return x.squeeze(1) if squeeze else x
        return x

    args = tuple(cut(name, x) for name, x in zip(names, example.args, strict=False))
    return Example(args, {k: cut(k, x) for k, x in example.kwargs.items()})


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_outputs_in_the_inputs_dtype(name):
    """Every form returns its output in the input's dtype (float32 here; bf16 below), states
    in float32 or wider, whatever it computes in."""
    family = FAMILIES[name]
    for dtype in (torch.float32, torch.bfloat16):
        example = family.example_inputs(5, case=family.cases[0], dtype=dtype)
        for impl in family.impls[1:]:
            if family.form_info(impl).triton:
                continue
            with torch.no_grad():
                output, state = family.call(impl, example.args, {**example.kwargs, "output_final_state": True})
            assert output.dtype == dtype, f"{name} {impl}: output {output.dtype} for {dtype} inputs"
            for s in state_tensors(state):
                assert s.dtype in (torch.float32, torch.complex64, torch.float64), f"{name} {impl}: state {s.dtype}"
