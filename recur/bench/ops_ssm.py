"""Benchmark cases of the SSM families: every form of the selective scan, of a diagonal
time-invariant SSM and of the linear scan that S5 and LRU run, on the families' example
inputs at bigger sizes; the naive loop is the baseline."""

from __future__ import annotations

import functools

import torch

from ..ops.family import Family
from ..ops.ssm import DIAG_SSM, LINEAR_SCAN, SELECTIVE_SCAN
from .ops import OpCase, register_op_bench

B, D, N = 2, 64, 16
H, N_LTI = 64, 32
N_LINEAR = 256


def family_cases(family: Family, *, T: int, device, dtype: torch.dtype, case: str, **sizes) -> list[OpCase]:
    """One case per form of `family` (the naive one first) on its example inputs."""
    example = family.example_inputs(T, batch=B, case=case, dtype=dtype, device=device, **sizes)
    leaves = list(example.leaves().values())

    def run(form: str):
        def output() -> torch.Tensor:
            y, _ = family.forms[form](*example.args, **example.kwargs)
            return torch.view_as_real(y) if y.is_complex() else y

        return output

    forms = family.impls[1:]
    return [OpCase(f"{form} ({family.form_info(form).summary})", run(form), leaves) for form in forms]


# (benchmark name, family, example case, sizes, what the cases run)
BENCHES = (
    (
        "ssm", SELECTIVE_SCAN, "gated", {"channels": D, "states": N},
        f"Selective scan, B={B}, D={D} channels, N={N} real states, B and C shared by channels, "
        "Δ with bias and softplus, D skip and z gate (example case 'gated').",
    ),
    (
        "ssm-conv", DIAG_SSM, "complex", {"channels": H, "states": N_LTI},
        f"Time-invariant diagonal SSM, B={B}, H={H} channels, N={N_LTI} complex states each, |Ā| in "
        "[0.5, 0.99], from a random initial state.",
    ),
    (
        "linear_scan", LINEAR_SCAN, "complex", {"states": N_LINEAR},
        f"h_t = a_t ⊙ h_(t-1) + b_t as S5 and LRU run it, B={B}, N={N_LINEAR} complex states, "
        "|a| in [0.5, 0.99], from a random initial state.",
    ),
)
for name, family, case, sizes, shapes in BENCHES:
    register_op_bench(name, shapes)(functools.partial(family_cases, family, case=case, **sizes))
