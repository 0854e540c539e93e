"""An op family, declared once.

A `Family` holds everything about one recurrence: the paper, the spec (the naive form,
whose signature and docstring are the family's), the other forms, the single-step forms
used for decoding, the argument check, the state layout and example inputs that tests and
benchmarks share. From it come the public function (`gla(..., impl="auto")`) and one
checked callable per form (`chunk_gla`), all with the spec's signature.

The contract every family keeps:
- main inputs positional, everything else keyword-only; time on dim 1;
- the state is batch-first: a tensor, or a named tuple of tensors;
- every form returns `(output, final_state)`, the state None unless `output_final_state`;
- `initial_state`, `output_final_state` and packed batches (`cu_seqlens`, batch of one)
  everywhere;
- `impl` names the form: "auto" or one of the family's forms.

A form is a plain function that takes the spec's arguments by keyword and names in its
signature only those it reads. It returns `(output, final_state)`: a form that does not
name `output_final_state` computes the state always (the family drops it when not asked
for); one that can save work names it and returns None for the state when it is False. The family checks the arguments once, before any form runs, and
fills in what the check resolves (for example the default `scale`). A form that does not
declare `packed` gets packed batches one sequence at a time, and zero time steps go to the
spec, so no form needs code for either.

A NaN or inf in a time input at step t reaches no output before t, in any form. The spec
runs step by step, so a fault there only flows forward; the other forms mix many steps in one
matrix product (a chunk's steps, or the whole sequence in an FFT), where 0 · NaN = NaN would
carry it backwards. So the family looks for non-finite values first (one sum per input) and
gives such inputs to the spec, which says what they mean. -inf in a log gate (`log_gates`)
is a closed gate, not a fault: the forms compute it exactly.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..registry import Registry
from .common.varlen import check_cu_seqlens

__all__ = [
    "FAMILIES", "Example", "Family", "Form", "StateLayout", "map_state", "register_family", "triton_available",
    "triton_form", "triton_step_form",
]

FAMILIES: Registry[Family] = Registry("op family")

# the values of `impl` that name no form: "auto" picks one
AUTO = "auto"


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def register_family(family: Family) -> Family:
    """Adds `family` to `FAMILIES` under its name; returns it."""
    return FAMILIES.register(family.name, family)


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state):
    """fn applied to a state: a tensor, or each tensor of a (named) tuple."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    return type(state)(*(fn(s) for s in state)) if hasattr(state, "_fields") else type(state)(fn(s) for s in state)


def cat_states(states: Sequence):
    """States of several sequences, batch-first, concatenated along the batch."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(states)
    parts = [torch.cat(column) for column in zip(*states, strict=True)]
    return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)


def state_tensors(state) -> list[torch.Tensor]:
    """The tensors of a state, in order."""
    if state is None:
        return []
    return [state] if isinstance(state, torch.Tensor) else list(state)


@dataclass(frozen=True)
class StateLayout:
    """What a family's state is: named tensors, batch first. `shapes` gives each tensor's
    shape in the family's notation; `type` is the named tuple a multi-tensor state comes in
    (None: a single tensor)."""

    shapes: dict[str, str]
    type: type | None = None

    def __str__(self) -> str:
        return ", ".join(f"{name} {shape}" for name, shape in self.shapes.items())


@dataclass(frozen=True)
class Form:
    """One way to compute a family's recurrence.

    fn: the function, or "module:name" imported on first use (optional dependencies).
    triton: runs Triton kernels: needs Triton, and CUDA tensors or TRITON_INTERPRET=1.
    float64: computes in float64 for float64 inputs (Triton kernels compute in float32).
    packed: takes packed batches (`cu_seqlens`) itself.
    summary: one line for `recur list` and the docs.
    refuses: for a form that runs only some of the family's inputs (a kernel written for
        some cells): called with the checked arguments by keyword, None when the form runs
        them, else why not (naming the argument). "auto" passes over a form that refuses;
        naming it raises that reason.
    """

    fn: Callable | str
    triton: bool = False
    float64: bool = True
    packed: bool = False
    summary: str = ""
    refuses: Callable[..., str | None] | None = None


def triton_form(fn: str, refuses: Callable[..., str | None] | None = None) -> Form:
    """A form of fused Triton kernels, forward and backward ("module:name", imported on first
    use): it computes in float32 and takes packed batches itself; `refuses` as in `Form`."""
    return Form(
        fn, triton=True, float64=False, packed=True, summary="fused Triton kernels, forward and backward",
        refuses=refuses,
    )


def triton_step_form(fn: str) -> Form:
    """A step form that runs one fused Triton loop over time for decoding, without gradients
    ("module:name", imported on first use; float32, packed batches taken as they come)."""
    return Form(fn, triton=True, float64=False, packed=True, summary="one fused loop over time, for decoding (no gradients)")


@dataclass
class Example:
    """Inputs of one call: positional `args` and keyword `kwargs` (the initial state among
    them). Leaves that tests differentiate have requires_grad set."""

    args: tuple
    kwargs: dict[str, Any]

    def leaves(self) -> dict[str, torch.Tensor]:
        """Every tensor that requires grad, by argument name (state tensors as
        "initial_state.<name>")."""
        found = {}
        for name, value in self.named():
            for key, tensor in _named_tensors(name, value):
                if tensor.requires_grad:
                    found[key] = tensor
        return found

    def named(self, spec: inspect.Signature | None = None) -> list[tuple[str, Any]]:
        names = list(spec.parameters) if spec is not None else [f"arg{i}" for i in range(len(self.args))]
        return list(zip(names, self.args, strict=False)) + list(self.kwargs.items())

    def fresh(self) -> Example:
        """A copy whose tensors are new leaves (same values, same requires_grad)."""

        def copy(x):
            if isinstance(x, torch.Tensor):
                return x.detach().clone().requires_grad_(x.requires_grad)
            if isinstance(x, tuple) and x and all(isinstance(s, torch.Tensor) for s in x):
                return map_state(lambda s: s.detach().clone().requires_grad_(s.requires_grad), x)
            return x

        return Example(tuple(copy(a) for a in self.args), {k: copy(v) for k, v in self.kwargs.items()})


def _faulty(x: torch.Tensor, log_gate: bool) -> torch.Tensor:
    """Where x is NaN or inf; for a log gate, NaN or +inf (-inf closes the gate)."""
    return torch.isnan(x) | (x == float("inf")) if log_gate else ~torch.isfinite(x)


@functools.cache
def _parameters(fn: Callable) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def _named_tensors(name: str, value) -> list[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        return [(name, value)]
    if isinstance(value, tuple) and value and all(isinstance(s, torch.Tensor) for s in value):
        fields = getattr(value, "_fields", range(len(value)))
        return [(f"{name}.{f}", s) for f, s in zip(fields, value, strict=True)]
    return []


@dataclass
class Family:
    """One op family. See the module docstring for the contract every family keeps.

    name: the registry name ("gla").
    paper: title and arXiv id of the paper that defines the recurrence.
    recurrence: the recurrence in one line.
    spec: the naive form; its signature and docstring are the family's.
    forms: form name -> `Form` (or a bare function); "naive" is the spec itself.
    check: called with every argument by keyword before any form runs; raises on bad
        input, naming the argument; may return a dict of resolved values (e.g. the scale).
    state: the state's layout.
    time_inputs: the arguments with time on dim 1 (sliced for packed batches and steps).
    example_inputs: (T, *, batch, case, dtype, device, seed, **sizes) -> Example.
    cases: the input cases example_inputs knows (gate kinds, cells, ...); tests run each.
    log_gates: the time inputs that are log gates (or their pre-activations), in which -inf
        is a value (a closed gate: a full reset, no input) rather than a fault.
    steps: single-step forms (decoding), name -> Form with the spec's signature run on
        T = 1; "naive" is added.
    default: the form "auto" picks where no Triton kernel runs.
    layout: "sequence" (time on dim 1) or "grid": the main inputs are cells of 2-D grids,
        rows on dim 1 and columns on dim 2, read from the top-left corner to the
        bottom-right one. A grid has no packed batches (`cu_seqlens` must be None), no
        single steps, and its state is the boundary (what enters at the top and left
        edges, what leaves at the bottom and right ones), so [0:t] then [t:T] does not
        carry over; the generic tests of those run on sequence families only.
    """

    name: str
    paper: str
    recurrence: str
    spec: Callable
    forms: dict[str, Form | Callable]
    check: Callable[..., dict | None]
    state: StateLayout
    time_inputs: tuple[str, ...]
    example_inputs: Callable[..., Example]
    cases: tuple[str, ...] = ("default",)
    log_gates: tuple[str, ...] = ()
    steps: dict[str, Form | Callable] = field(default_factory=dict)
    default: str = "chunk"
    layout: str = "sequence"
    signature: inspect.Signature = field(init=False)

    def __post_init__(self) -> None:
        self.signature = inspect.signature(self.spec)
        forms = {"naive": Form(self.spec, summary="the spec: a loop over time"), **self.forms}
        self._forms = {name: f if isinstance(f, Form) else Form(f) for name, f in forms.items()}
        if self.layout not in ("sequence", "grid"):
            raise ValueError(f"family {self.name!r}: layout must be 'sequence' or 'grid'; got {self.layout!r}")
        if self.layout == "grid" and self.steps:
            raise ValueError(f"family {self.name!r}: a grid family has no single-step forms; got {sorted(self.steps)}")
        steps = {} if self.layout == "grid" else {"naive": Form(self.spec), **self.steps}
        self._steps = {name: f if isinstance(f, Form) else Form(f) for name, f in steps.items()}
        if self.default not in self._forms:
            raise ValueError(f"family {self.name!r}: default form {self.default!r} is not one of {sorted(self._forms)}")
        for name in self.time_inputs:
            if name not in self.signature.parameters:
                raise ValueError(f"family {self.name!r}: time input {name!r} is not an argument of the spec")
        for name in self.log_gates:
            if name not in self.time_inputs:
                raise ValueError(f"family {self.name!r}: log gate {name!r} is not one of the time inputs {self.time_inputs}")
        self.function = self._make_function(None)
        self.forms = {name: self._make_function(name) for name in self._forms}
        # the single-step forms as functions of the spec's signature, run on [B, 1, ...]
        self.step_forms = {name: self._make_function(name, steps=True) for name in self._steps}

    # ------------------------------------------------------------------ public callables

    @property
    def impls(self) -> tuple[str, ...]:
        """The values `impl` takes: "auto" and every form."""
        return (AUTO, *self._forms)

    @property
    def step_impls(self) -> tuple[str, ...]:
        return (AUTO, *self._steps)

    def functions(self, *forms: str) -> tuple[Callable, ...]:
        """The public function, then the function of each form named, for the family
        package to export: `gla, naive_gla, chunk_gla = GLA.functions("naive", "chunk")`."""
        return (self.function, *(self.forms[name] for name in forms))

    def form_info(self, name: str) -> Form:
        return self._forms[name]

    def __call__(self, *args, impl: str = AUTO, **kwargs):
        return self.call(impl, args, kwargs)

    def call(self, impl: str, args: tuple, kwargs: dict):
        arguments = self.bind(args, kwargs)
        return self.run(self.resolve(impl, arguments), arguments)

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """Every argument by name, defaults filled in, checked and resolved."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{self.name}: {error}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        self._check_common(arguments)
        resolved = self.check(**arguments)
        if resolved:
            arguments.update(resolved)
        return arguments

    def _check_common(self, arguments: dict[str, Any]) -> None:
        """What every family checks alike: the flag, the packed-batch offsets."""
        flag = arguments.get("output_final_state")
        if not isinstance(flag, bool):
            raise TypeError(f"output_final_state must be True or False; got {flag!r}")
        cu_seqlens = arguments.get("cu_seqlens")
        if cu_seqlens is not None and self.layout == "grid":
            raise ValueError(f"cu_seqlens must be None for the {self.name} family (its inputs are grids, not sequences)")
        if cu_seqlens is not None:
            if not isinstance(cu_seqlens, torch.Tensor):
                raise TypeError(f"cu_seqlens must be a torch.Tensor [N + 1] or None; got {type(cu_seqlens).__name__}")
            first = arguments[self.time_inputs[0]]
            if isinstance(first, torch.Tensor) and first.dim() >= 2:
                check_cu_seqlens(cu_seqlens, first.shape[0], first.shape[1])

    def step(self, *args, impl: str = AUTO, **kwargs):
        """One time step: the time inputs without their time axis, the state as
        `initial_state` -> (output without the time axis, next state). For decoding."""
        if self.layout == "grid":
            raise TypeError(f"the {self.name} family reads whole grids; it has no single step")
        bound = self.signature.bind_partial(*args, **kwargs)
        stepped = {
            name: (value.unsqueeze(1) if name in self.time_inputs and isinstance(value, torch.Tensor) else value)
            for name, value in bound.arguments.items()
        }
        stepped["output_final_state"] = True
        arguments = self.bind((), stepped)
        form = self.resolve(impl, arguments, steps=True)
        output, state = self.run(form, arguments)
        return output.squeeze(1), state

    # ------------------------------------------------------------------ dispatch

    def resolve(self, impl: str, arguments: dict[str, Any], steps: bool = False) -> Form:
        """The form `impl` names for these arguments; loud when it cannot run."""
        table = self._steps if steps else self._forms
        if not isinstance(impl, str) or (impl != AUTO and impl not in table):
            what = "step forms" if steps else "forms"
            raise ValueError(f"impl must be one of {[AUTO, *table]} (the {self.name} family's {what}); got {impl!r}")
        like = self._first_tensor(arguments)
        if impl == AUTO:
            on_gpu = like is not None and like.is_cuda
            impl = "triton" if on_gpu and triton_available() and "triton" in table else None
            if impl is not None and self._refusal(table[impl], arguments) is not None:
                impl = None
            impl = impl or (self.default if self.default in table else "naive")
        form = table[impl]
        refusal = self._refusal(form, arguments)
        if refusal is not None:
            raise ValueError(f"impl={impl!r} cannot run these inputs: {refusal}")
        if form.triton:
            if not triton_available():
                raise RuntimeError(f"impl={impl!r} needs Triton: pip install 'recur[triton]' (or use impl='chunk')")
            if like is not None and not like.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
                raise RuntimeError(
                    f"impl={impl!r} runs on CUDA tensors; got {like.device}. Use impl='chunk' on this "
                    "device, or set TRITON_INTERPRET=1 to run the kernels in Triton's interpreter"
                )
        return form

    @staticmethod
    def _refusal(form: Form, arguments: dict[str, Any]) -> str | None:
        return None if form.refuses is None else form.refuses(**arguments)

    def runs_case(self, impl: str, case: str) -> bool:
        """Whether the form `impl` runs the inputs of `case` (a form with `refuses` may not)."""
        form = self._forms[impl]
        if form.refuses is None:
            return True
        example = self.example_inputs(1, case=case)
        return self._refusal(form, self.bind(example.args, example.kwargs)) is None

    def run(self, form: Form, arguments: dict[str, Any]):
        """Runs one form on checked arguments."""
        fn = self._load(form)
        parameters = _parameters(fn)
        if arguments.get("cu_seqlens") is not None and not form.packed:
            return self._per_sequence(form, arguments)
        if form.fn is not self.spec and self._steps_in(arguments) == 0:
            # zero steps: no outputs and the state as it came in; the spec says how
            return self.run(self._forms["naive"], arguments)
        if form.fn is not self.spec and self._has_faults(arguments):
            # a NaN or inf would reach earlier outputs through the form's matrix products;
            # the spec lets it reach only the outputs at and after its step
            return self.run(self._forms["naive"], arguments)
        output, state = fn(**{name: arguments[name] for name in parameters})
        return output, (state if arguments.get("output_final_state") else None)

    def _per_sequence(self, form: Form, arguments: dict[str, Any]):
        """A packed batch run as N separate sequences, each from its own initial state."""
        cu_seqlens = arguments["cu_seqlens"].tolist()
        initial = arguments.get("initial_state")
        outputs, finals = [], []
        for n, (start, end) in enumerate(zip(cu_seqlens[:-1], cu_seqlens[1:], strict=True)):
            one = dict(arguments, cu_seqlens=None, output_final_state=True)
            for name in self.time_inputs:
                if isinstance(arguments.get(name), torch.Tensor):
                    one[name] = arguments[name][:, start:end]
            one["initial_state"] = map_state(lambda s, n=n: s[n : n + 1], initial)
            output, state = self.run(form, one)
            outputs.append(output)
            finals.append(state)
        output = torch.cat(outputs, dim=1)
        return output, (cat_states(finals) if arguments.get("output_final_state") else None)

    def _has_faults(self, arguments: dict[str, Any]) -> bool:
        """Whether a time input of more than one step holds NaN or inf (-inf in a log gate
        excepted). One sum per input and one read on the host; a sum that overflows on
        large finite values only costs the exact look that follows. Not looked for while
        torch compiles or a CUDA graph is captured, where the host cannot read a value."""
        steps = self._steps_in(arguments)
        if steps is None or steps < 2 or torch.compiler.is_compiling():
            return False
        inputs = [
            (name, torch.view_as_real(x) if x.is_complex() else x)
            for name in self.time_inputs
            if isinstance(x := arguments.get(name), torch.Tensor) and (x.is_floating_point() or x.is_complex())
        ]
        if not inputs or (inputs[0][1].is_cuda and torch.cuda.is_current_stream_capturing()):
            return False
        with torch.no_grad():
            sums = [(name, x.sum(dtype=torch.promote_types(x.dtype, torch.float32))) for name, x in inputs]
            suspect = torch.stack([_faulty(total, name in self.log_gates) for name, total in sums])
            if not bool(suspect.any()):
                return False
            return any(bool(_faulty(x, name in self.log_gates).any()) for name, x in inputs)

    def _steps_in(self, arguments: dict[str, Any]) -> int | None:
        """The number of time steps (of cells, for a grid)."""
        for name in self.time_inputs:
            if isinstance(arguments.get(name), torch.Tensor):
                x = arguments[name]
                return x.shape[1] * x.shape[2] if self.layout == "grid" else x.shape[1]
        return None

    def _load(self, form: Form) -> Callable:
        if not isinstance(form.fn, str):
            return form.fn
        # looked up on every call (a dict lookup): a module loaded again, as tests do to
        # switch Triton's interpreter on, is picked up
        module, _, name = form.fn.partition(":")
        return getattr(importlib.import_module(module), name)

    def _first_tensor(self, arguments: dict[str, Any]) -> torch.Tensor | None:
        for value in arguments.values():
            if isinstance(value, torch.Tensor):
                return value
        return None

    def _arguments_doc(self) -> str:
        """The spec's docstring without its first line (which describes the naive loop)."""
        doc = inspect.getdoc(self.spec) or ""
        return doc.split("\n\n", 1)[1] if "\n\n" in doc else doc

    def _make_function(self, form: str | None, steps: bool = False) -> Callable:
        """A function with the spec's signature (plus `impl` for the dispatcher) that
        checks its arguments once and runs the form."""
        family = self
        if form is None:

            def function(*args, impl: str = AUTO, **kwargs):
                return family.call(impl, args, kwargs)

            impl_parameter = inspect.Parameter("impl", inspect.Parameter.KEYWORD_ONLY, default=AUTO, annotation="str")
            parameters = list(self.signature.parameters.values()) + [impl_parameter]
            function.__signature__ = self.signature.replace(parameters=parameters)
            function.__name__ = function.__qualname__ = self.name
            choices = ", ".join(repr(f) for f in self._forms)
            function.__doc__ = (
                f"{self.recurrence}\n\n{self.paper}. `impl` picks the form: {choices}, or 'auto' (Triton "
                f"on CUDA when it is installed and the family has kernels, else {self.default!r}).\n\n"
                f"{self._arguments_doc()}"
            )
        else:

            def function(*args, **kwargs):
                arguments = family.bind(args, kwargs)
                return family.run(family.resolve(form, arguments, steps=steps), arguments)

            function.__signature__ = self.signature
            function.__name__ = function.__qualname__ = f"{form}_{self.name}" + ("_step" if steps else "")
            summary = (self._steps if steps else self._forms)[form].summary
            function.__doc__ = (
                f"{self.recurrence}\n\nThe {self.name} family's {form!r} form"
                f"{': ' + summary if summary else ''}.\n\n{self._arguments_doc()}"
            )
        function.__module__ = self.spec.__module__.rsplit(".", 1)[0]
        return function
