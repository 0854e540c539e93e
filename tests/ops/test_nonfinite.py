"""A NaN or inf in a time input at step t reaches no output before t, in every family's forms.

The spec runs step by step, so a fault at step t can only flow forward; the faster forms mix
many steps in one matrix product (0 · NaN = NaN), so without care a fault at step t spoils
the outputs before it in its chunk, or in the whole sequence. Every family × form × case is
run here with NaN, +inf and -inf put at one step inside a chunk, in each time input in turn:
the outputs before that step equal those of the clean input, the other batch rows are
untouched, and from the step on the outputs are non-finite exactly where the spec's are.
-inf in a log gate is a closed gate, not a fault: the forms compute it themselves, exactly.
"""

from __future__ import annotations

import pytest
import torch

from recur.ops import FAMILIES
from recur.ops.family import Example, Form
from tests.helpers import assert_close
from tests.ops.test_families import runnable, tolerance

# inside a chunk of any power-of-two size up to 64, never at its first step
T, STEP = 80, 37
FAULTS = (float("nan"), float("inf"), float("-inf"))


def _params(first_case_only: bool = False, sequences_only: bool = False):
    params = []
    for name, family in FAMILIES.items():
        if sequences_only and family.layout != "sequence":
            continue
        for impl in family.impls[1:]:
            if impl == "naive":
                continue
            cases = [case for case in family.cases if family.runs_case(impl, case)]
            for case in cases[:1] if first_case_only else cases:
                params.append(pytest.param(name, impl, case, id=f"{name}-{impl}-{case}"))
    return params


def _arguments(family, example: Example) -> dict:
    names = list(family.signature.parameters)
    return dict(zip(names, example.args, strict=False)) | example.kwargs


def _time_inputs(family, example: Example) -> list[str]:
    """The floating time inputs the example gives."""
    arguments = _arguments(family, example)
    return [
        name for name in family.time_inputs
        if isinstance(x := arguments.get(name), torch.Tensor) and (x.is_floating_point() or x.is_complex())
    ]


def _with_fault(family, example: Example, name: str, value: float) -> Example:
    """The example with `value` at step STEP of batch row 0, in the first slice of dim 2
    (one head, one channel or one group: the others stay clean)."""
    x = _arguments(family, example)[name].detach().clone()
    if x.dim() == 2:
        x[0, STEP] = value
    else:
        x[0, STEP, 0] = value
    names = list(family.signature.parameters)
    if name in example.kwargs:
        return Example(example.args, {**example.kwargs, name: x})
    args = list(example.args)
    args[names.index(name)] = x
    return Example(tuple(args), example.kwargs)


def _output(family, impl: str, example: Example) -> torch.Tensor:
    with torch.no_grad():
        output, _ = family.call(impl, example.args, example.kwargs)
    return output


def _finite_parts_close(label: str, actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    """Non-finite at the same places, and close where finite."""
    bad = ~torch.isfinite(expected)
    assert torch.equal(~torch.isfinite(actual), bad), f"{label}: non-finite at other places than the spec"
    assert_close(label, actual.masked_fill(bad, 0), expected.masked_fill(bad, 0), tol)


@pytest.mark.parametrize(("name", "impl", "case"), _params())
def test_a_fault_reaches_no_earlier_output(name, impl, case):
    family = FAMILIES[name]
    with runnable(family, impl) as form:
        dtype = torch.float64 if form.float64 else torch.float32
        example = family.example_inputs(T, case=case, dtype=dtype)
        clean = _output(family, impl, example)
        for input_name in _time_inputs(family, example):
            for value in FAULTS:
                label = f"{input_name}[{STEP}] = {value}"
                faulty = _with_fault(family, example, input_name, value)
                try:
                    output = _output(family, impl, faulty)
                except ValueError as error:
                    # a family may refuse non-finite inputs outright, naming the input
                    assert input_name in str(error), f"{label}: {error}"
                    continue
                assert torch.isfinite(output[:, :STEP]).all(), f"{label}: non-finite output before step {STEP}"
                assert_close(f"{label}: outputs before it", output[:, :STEP], clean[:, :STEP], tolerance(form))
                assert_close(f"{label}: other batch rows", output[1:], clean[1:], tolerance(form))
                expected = _output(family, "naive", faulty)
                _finite_parts_close(f"{label}: outputs from it on", output[:, STEP:], expected[:, STEP:], tolerance(form))


@pytest.mark.parametrize(("name", "impl", "case"), _params(first_case_only=True))
def test_closed_gates_and_finite_inputs_run_the_form(name, impl, case, monkeypatch):
    """Finite inputs, and -inf in a log gate, run the form itself, not the spec, and match it."""
    family = FAMILIES[name]
    with runnable(family, impl) as form:
        dtype = torch.float64 if form.float64 else torch.float32
        example = family.example_inputs(T, case=case, dtype=dtype)
        gates = [gate for gate in family.log_gates if gate in _time_inputs(family, example)]
        closed = [_with_fault(family, example, gate, float("-inf")) for gate in gates]
        expected = [_output(family, "naive", e) for e in (example, *closed)]

        def spec_runs(**_):
            raise AssertionError(f"{name}: the spec ran instead of the {impl!r} form")

        monkeypatch.setitem(family._forms, "naive", Form(spec_runs))
        for e, want in zip((example, *closed), expected, strict=True):
            _finite_parts_close("output", _output(family, impl, e), want, tolerance(form))


@pytest.mark.parametrize(("name", "impl", "case"), _params(first_case_only=True, sequences_only=True))
def test_a_fault_stays_in_its_packed_sequence(name, impl, case):
    """Two sequences packed in a batch of one: a fault in the first reaches neither its own
    earlier outputs nor the second sequence."""
    family = FAMILIES[name]
    bounds = torch.tensor([0, 50, T])
    with runnable(family, impl) as form:
        dtype = torch.float64 if form.float64 else torch.float32
        example = family.example_inputs(T, batch=1, case=case, dtype=dtype)
        example.kwargs["initial_state"] = family.example_inputs(1, batch=2, case=case, dtype=dtype, seed=1).kwargs.get("initial_state")
        example.kwargs["cu_seqlens"] = bounds
        clean = _output(family, impl, example)
        for input_name in _time_inputs(family, example):
            faulty = _with_fault(family, example, input_name, float("nan"))
            try:
                output = _output(family, impl, faulty)
            except ValueError as error:
                assert input_name in str(error), error
                continue
            label = f"{input_name}[{STEP}] = nan"
            assert_close(f"{label}: outputs before it", output[:, :STEP], clean[:, :STEP], tolerance(form))
            # the family gives faulty inputs to the spec: its own clean run is the reference for
            # the untouched sequence (a float32 form differs from the float32 spec by the
            # rounding of both, which an output near a zero normaliser magnifies)
            reference = clean if form.float64 else _output(family, "naive", example)
            assert_close(f"{label}: the next sequence", output[:, 50:], reference[:, 50:], tolerance(form))
            expected = _output(family, "naive", faulty)
            _finite_parts_close(f"{label}: outputs from it on", output[:, STEP:50], expected[:, STEP:50], tolerance(form))
