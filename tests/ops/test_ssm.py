"""SSM families: what is specific to them. Every form against the spec, packed batches,
state carry, single steps and argument names are tested for every family in
test_families.py; here: chunk boundaries and extreme steps of the scans, discretisations,
HiPPO and S4's kernel, conjugate pairs, long sequences, float32 and dtypes."""

from __future__ import annotations

import math

import pytest
import torch

from recur.ops.common import linear_recurrence
from recur.ops.family import Example
from recur.ops.ssm import (
    CHUNK_SIZE,
    DENSE_SSM,
    DIAG_SSM,
    DPLR_SSM,
    LINEAR_SCAN,
    SELECTIVE_SCAN,
    conv_diag_ssm,
    dense_ssm,
    diag_ssm,
    diagonal_init,
    discretize,
    discretize_dense,
    discretize_dplr,
    dplr_kernel,
    hippo,
    krylov,
    naive_selective_scan,
    nplr,
    rank_correction,
    scan_selective_scan,
    selective_scan,
)
from tests.helpers import assert_close, compare_results, family_results

EXACT = 1e-10


def check(family, example, form, tol=EXACT, label=""):
    """`form` against the spec on `example`: outputs, final states and every gradient."""
    compare_results(family_results(family, form, example), family_results(family, "naive", example), tol, label)


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_()


@pytest.mark.parametrize("case", ["real", "complex"])
@pytest.mark.parametrize("T", [CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 1])
def test_scans_across_chunk_boundaries(T, case):
    check(SELECTIVE_SCAN, SELECTIVE_SCAN.example_inputs(T, case=case), "scan", label=f"selective T={T}")
    for form in ("scan", "parallel"):
        check(LINEAR_SCAN, LINEAR_SCAN.example_inputs(T, case=case), form, label=f"linear {form} T={T}")


@pytest.mark.parametrize("delta_scale", [1e-3, 60.0])
def test_selective_scan_extreme_steps(delta_scale):
    """Δ from near 0 (Ā ≈ 1) to about 60 (exp(ΔA) ≈ 0), with grouped B and C."""
    example = SELECTIVE_SCAN.example_inputs(130, case="grouped", seed=1)
    u, delta, *rest = example.args
    example.args = (u, leaf(delta * delta_scale), *rest)
    check(SELECTIVE_SCAN, example, "scan", label=f"Δ × {delta_scale}")


def test_linear_scan_resets():
    """a = 0 forgets the state: exact in the chunked and the parallel scan, and nothing
    before a reset reaches the outputs after it."""
    example = LINEAR_SCAN.example_inputs(150, case="complex")
    a, b = example.args
    a = a.detach().clone()
    a[:, [0, 17, 64, 65, 149]] = 0
    example.args = (leaf(a), b)
    for form in ("scan", "parallel"):
        check(LINEAR_SCAN, example, form, label=f"resets {form}")
    h, _ = LINEAR_SCAN.function(a, b, initial_state=example.kwargs["initial_state"])
    after, _ = LINEAR_SCAN.function(a[:, 17:], b[:, 17:])
    assert_close("after the reset", h[:, 17:], after, 1e-12)


def test_selective_scan_complex_gradients_gradcheck():
    """Wirtinger gradients of the complex chunked scan against finite differences."""
    example = SELECTIVE_SCAN.example_inputs(9, case="complex", seed=2)
    u, delta, A, B, C = example.args

    def f(A, B, C, h0, u):
        return scan_selective_scan(u, delta.detach(), A, B, C, delta_softplus=True, initial_state=h0, output_final_state=True)

    assert torch.autograd.gradcheck(f, [A, B, C, example.kwargs["initial_state"], u])


@pytest.mark.parametrize(
    ("family", "form", "case"),
    [
        (SELECTIVE_SCAN, "scan", "gated"),
        (SELECTIVE_SCAN, "scan", "complex"),
        (DIAG_SSM, "conv", "complex"),
        (DENSE_SSM, "conv", "real"),
        (DPLR_SSM, "conv", "complex"),
        (LINEAR_SCAN, "scan", "complex"),
        (LINEAR_SCAN, "parallel", "complex"),
    ],
    ids=lambda x: getattr(x, "name", x),
)
def test_float32_matches_float64_spec(family, form, case):
    expected = family_results(family, "naive", family.example_inputs(300, case=case))
    actual = family_results(family, form, family.example_inputs(300, case=case, dtype=torch.float32))
    # S4's discretisation, (I − ΔA/2)⁻¹ by Woodbury, leaves even the float32 spec about 2e-5 off
    compare_results(actual, expected, 1e-4 if family is DPLR_SSM else 1e-5, f"{family.name} float32")


def test_dtypes_of_outputs_and_states():
    example = SELECTIVE_SCAN.example_inputs(10, case="gated", dtype=torch.float32)
    u, *rest = example.args
    y, h = selective_scan(u.bfloat16(), *rest, **example.kwargs, output_final_state=True)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    example = SELECTIVE_SCAN.example_inputs(10, case="complex")
    _, h = naive_selective_scan(*example.args, **example.kwargs, output_final_state=True)
    assert h.dtype == torch.complex128
    example = DIAG_SSM.example_inputs(10, case="real")
    y, h = diag_ssm(*example.args, **example.kwargs, output_final_state=True, impl="conv")
    assert y.dtype == torch.float64 and not h.is_complex()
    a, b = LINEAR_SCAN.example_inputs(10, case="real", dtype=torch.bfloat16).args
    h, final = LINEAR_SCAN.function(a, b, output_final_state=True)
    assert h.dtype == torch.bfloat16 and final.dtype == torch.float32


def test_messages_name_the_argument_and_the_expected_value():
    u, delta, A, B, C = SELECTIVE_SCAN.example_inputs(5).args
    with pytest.raises(ValueError, match=r"delta has shape \[2, 4, 6\]; expected \[B, T, D\] = \[2, 5, 6\]"):
        selective_scan(u, delta[:, :4], A, B, C)
    with pytest.raises(ValueError, match=r"A has shape \[3, 4\]; expected \[D, N\] with D = 6"):
        selective_scan(u, delta, A[:3], B, C)
    with pytest.raises(ValueError, match=r"initial_state has shape \[2, 6, 3\]; expected \[B, D, N\] = \[2, 6, 4\]"):
        selective_scan(u, delta, A, B, C, initial_state=torch.zeros(2, 6, 3, dtype=torch.float64))
    grouped = torch.zeros(2, 5, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="G = 4 groups; expected a divisor of D = 6"):
        selective_scan(u, delta, A, grouped, grouped)
    u, A_bar, B_bar, C = DIAG_SSM.example_inputs(5).args
    with pytest.raises(ValueError, match=r"B_bar has shape \[6, 2\]; expected \[H, N\] = \[6, 4\]"):
        diag_ssm(u, A_bar, B_bar[:, :2], C)
    with pytest.raises(ValueError, match=r"impl must be one of \['auto', 'naive', 'conv'\]"):
        diag_ssm(u, A_bar, B_bar, C, impl="chunk")
    a, b = LINEAR_SCAN.example_inputs(5).args
    with pytest.raises(ValueError, match=r"a has shape \[2, 4, 6\] but b has \[2, 5, 6\]; expected equal"):
        LINEAR_SCAN.function(a[:, :4], b)


def discretised_diag_inputs(T: int, method: str, real: bool = False) -> Example:
    """The diagonal family's example with Ā, B̄ from continuous A, Δ and `method`."""
    example = DIAG_SSM.example_inputs(T, case="real" if real else "complex")
    gen = torch.Generator().manual_seed(3)
    H, N = example.args[1].shape
    A = -torch.rand(H, N, generator=gen, dtype=torch.float64) - 0.1
    if not real:
        A = torch.complex(A, torch.randn(H, N, generator=gen, dtype=torch.float64) * 5)
    step = torch.rand(H, generator=gen, dtype=torch.float64) * 0.1 + 1e-3
    A_bar, B_bar = discretize(A, step, method=method, length=64)
    u, _, _, C = example.args
    example.args = (u, leaf(A_bar), leaf(B_bar), C)
    return example


@pytest.mark.parametrize("method", ["zoh", "bilinear", "dss"])
@pytest.mark.parametrize("real", [False, True])
def test_convolution_of_discretised_systems(method, real):
    """Ā, B̄ as each discretisation makes them (small steps, |Ā| near 1)."""
    check(DIAG_SSM, discretised_diag_inputs(100, method, real), "conv", label=method)


def test_zoh_small_steps_and_bilinear():
    """ZOH's B̄ = (exp(ΔA) − 1)/A · B keeps its digits for tiny Δ (expm1), and bilinear
    is (1 + ΔA/2)/(1 − ΔA/2)."""
    A = torch.tensor([[-0.5 + 3j, -2.0 + 0j]], dtype=torch.complex128)
    step = torch.tensor([1e-12], dtype=torch.float64)
    A_bar, B_bar = discretize(A, step)
    assert_close("ZOH B̄ at Δ = 1e-12", B_bar, torch.full_like(B_bar, 1e-12) * (1 + step * A / 2), 1e-15)
    assert_close("ZOH Ā", A_bar, torch.exp(step * A), 1e-15)
    step = torch.tensor([0.3], dtype=torch.float64)
    A_bar, B_bar = discretize(A, step, method="bilinear")
    assert_close("bilinear Ā", A_bar, (1 + 0.15 * A) / (1 - 0.15 * A), 1e-15)
    assert_close("bilinear B̄", B_bar, 0.3 / (1 - 0.15 * A), 1e-15)


def test_conjugate_pairs_fold_into_twice_the_readout():
    """A real signal through N/2 complex states with 2C equals it through all N states of
    the conjugate pairs, and the full pair set gives a real final-state response."""
    example = DIAG_SSM.example_inputs(50, case="complex")
    u, A_bar, B_bar, C = (x.detach() for x in example.args)
    h0 = example.kwargs["initial_state"].detach()
    half, _ = diag_ssm(u, A_bar, B_bar, 2 * C, initial_state=h0)
    pairs = [torch.cat([x, x.conj()], dim=-1) for x in (A_bar, B_bar, C, h0)]
    full, final = diag_ssm(u, *pairs[:3], initial_state=pairs[3], output_final_state=True)
    assert_close("half with 2C vs the full conjugate set", half, full, 1e-12)
    assert_close("conjugate halves of the state", final[..., 4:], final[..., :4].conj(), 1e-12)


@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
def test_dense_convolution_of_hippo_systems(measure):
    """LSSL's systems: HiPPO A, B bilinear with small steps."""
    example = DENSE_SSM.example_inputs(70, case="real", states=8)
    u, _, _, C = example.args
    H, N = C.shape
    A, B = hippo(measure, N)
    step = torch.rand(H, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 0.1 + 1e-3
    A_bar, B_bar = discretize_dense(A.expand(H, N, N), step, B.expand(H, N))
    example.args = (u, leaf(A_bar), leaf(B_bar), C)
    check(DENSE_SSM, example, "conv", label=measure)


def test_dplr_family_on_hippo_legs():
    """S4's own system, HiPPO-LegS in its NPLR basis (N = 16), by the Cauchy kernel."""
    N = 16
    Lambda, P, B, _ = nplr("legs", N)
    example = DPLR_SSM.example_inputs(100, states=N)
    u, _, _, _, C, step = example.args
    H = C.shape[0]
    example.args = (u, leaf(Lambda.expand(H, N)), leaf(P.expand(H, 1, N)), leaf(B.expand(H, N)), C, step)
    check(DPLR_SSM, example, "conv", label="HiPPO-LegS")


@pytest.mark.parametrize("impl", ["naive", "conv"])
def test_a_diagonal_transition_is_the_dense_one_with_that_diagonal(impl):
    """diag_ssm and dense_ssm share one spec: Ā [H, N] stands for the matrix diag(Ā)."""
    example = DIAG_SSM.example_inputs(30, case="complex")
    u, A_bar, B_bar, C = (x.detach() for x in example.args)
    kwargs = {name: x.detach() for name, x in example.kwargs.items()}
    y, x = diag_ssm(u, A_bar, B_bar, C, **kwargs, output_final_state=True, impl=impl)
    y_dense, x_dense = dense_ssm(u, torch.diag_embed(A_bar), B_bar, C, **kwargs, output_final_state=True, impl=impl)
    assert_close("y", y, y_dense, 1e-12)
    assert_close("final state", x, x_dense, 1e-12)


def test_each_form_is_exported_under_its_name():
    import recur.ops.ssm as ssm

    for family in (SELECTIVE_SCAN, DIAG_SSM, DENSE_SSM, DPLR_SSM, LINEAR_SCAN):
        assert getattr(ssm, family.name) is family.function
        for form, function in family.forms.items():
            assert getattr(ssm, f"{form}_{family.name}") is function and form in function.__name__


def test_hippo_entries():
    A, B = hippo("legs", 4)
    assert A[2, 1] == -math.sqrt(5 * 3) and A[2, 2] == -3 and A[1, 2] == 0 and B[3] == math.sqrt(7)
    A, B = hippo("legt", 4)
    assert math.isclose(A[1, 2], 0.5 * math.sqrt(3 * 5)) and math.isclose(A[2, 1], -0.5 * math.sqrt(15))


@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
def test_nplr_reconstructs_hippo(measure):
    n = 16
    A, B = hippo(measure, n)
    P = rank_correction(measure, n)
    S = A + P.T @ P
    # normal part: a multiple of I plus a skew-symmetric matrix
    off = S - torch.diag(torch.diagonal(S))
    assert torch.allclose(off, -off.T, atol=1e-12) and torch.allclose(torch.diagonal(S), torch.diagonal(S).mean().expand(n))
    Lambda, P_tilde, B_tilde, V = nplr(measure, n)
    rebuilt = V @ (torch.diag(Lambda) - P_tilde.T @ P_tilde.conj()) @ V.conj().T
    assert_close("V (Λ − P̃ᵀP̃*) V*", rebuilt, A.to(rebuilt.dtype), 1e-12)
    assert_close("V B̃", V @ B_tilde, B.to(torch.complex128), 1e-12)


def test_diagonal_inits():
    legs = diagonal_init("legs", 8)
    assert torch.allclose(legs.real, torch.full((8,), -0.5, dtype=torch.float64)) and (legs.imag > 0).all()
    assert torch.allclose(diagonal_init("lin", 3).imag, torch.tensor([0, math.pi, 2 * math.pi], dtype=torch.float64))
    assert torch.equal(diagonal_init("real", 3).real, torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64))


@pytest.mark.parametrize("rank_measure", ["legs", "legt"])
def test_dplr_kernel_equals_krylov_kernel(rank_measure):
    """S4's Cauchy + Woodbury kernel == C Ā^l B̄ of the dense bilinear system, exactly."""
    gen = torch.Generator().manual_seed(7)
    H, n, L = 3, 16, 100
    Lambda, P, B, _ = nplr(rank_measure, n)
    r = P.shape[0]
    C = torch.randn(H, n, generator=gen, dtype=torch.complex128)
    step = torch.rand(H, generator=gen, dtype=torch.float64) * 0.1 + 1e-3
    K = dplr_kernel(Lambda.expand(H, n), P.expand(H, r, n), P.expand(H, r, n), B.expand(H, n), C, step, L)
    A = torch.diag(Lambda) - P.T @ P.conj()
    A_bar, B_bar = discretize_dense(A.expand(H, n, n), step, B.expand(H, n))
    K_ref = torch.einsum("hnl,hn->hl", krylov(A_bar.transpose(-1, -2), C, L), B_bar).real
    assert_close("DPLR kernel", K, K_ref, 1e-10)


def test_krylov_powers():
    gen = torch.Generator().manual_seed(8)
    A = torch.randn(2, 5, 5, generator=gen, dtype=torch.float64) / 3
    v = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    cols = krylov(A, v, 11)
    for l in (0, 1, 6, 10):
        assert_close(f"Ā^{l} v", cols[..., l], (torch.linalg.matrix_power(A, l) @ v[..., None])[..., 0], 1e-12)


def test_dplr_discretisation_equals_dense():
    gen = torch.Generator().manual_seed(9)
    H, n = 3, 8
    Lambda, P, B, _ = nplr("legt", n)
    r = P.shape[0]
    step = torch.rand(H, generator=gen, dtype=torch.float64) * 0.5 + 1e-3
    A = torch.diag(Lambda) - P.T @ P.conj()
    A_bar, B_bar = discretize_dplr(Lambda.expand(H, n), P.expand(H, r, n), P.expand(H, r, n), B.expand(H, n), step)
    A_ref, B_ref = discretize_dense(A.expand(H, n, n), step, B.expand(H, n))
    assert_close("Woodbury Ā", A_bar, A_ref, 1e-12)
    assert_close("Woodbury B̄", B_bar, B_ref, 1e-12)


def test_selective_scan_long_sequence_stable():
    """T = 65536 in float32: finite, and equal to the float64 scan."""
    def inputs(dtype):
        example = SELECTIVE_SCAN.example_inputs(65536, batch=1, case="gated", dtype=dtype, channels=2, states=2, seed=4)
        return example.args, example.kwargs

    with torch.no_grad():
        args, kwargs = inputs(torch.float64)
        y64, _ = selective_scan(*args, **kwargs)
        args, kwargs = inputs(torch.float32)
        y, h = selective_scan(*args, **kwargs, output_final_state=True)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert_close("float32 vs float64 at T=65536", y, y64, 1e-5)


def test_convolution_long_sequence():
    """T = 65536: the convolution equals the parallel-scan recurrence in float64 and is
    finite in float32."""
    gen = torch.Generator().manual_seed(5)
    T, H, n = 65536, 2, 4
    A = diagonal_init("lin", n)[None].expand(H, n)
    A_bar, B_bar = discretize(A, torch.tensor([1e-3, 0.1], dtype=torch.float64))
    C = torch.randn(H, n, generator=gen, dtype=torch.complex128)
    u = torch.randn(1, T, H, generator=gen, dtype=torch.float64)
    y, h = conv_diag_ssm(u, A_bar, B_bar, C, output_final_state=True)
    states = linear_recurrence(A_bar.expand(1, T, H, n), B_bar * u[..., None].to(B_bar.dtype))
    assert_close("conv vs scan at T=65536", y, (states * C).sum(-1).real, 1e-8)
    assert_close("final state", h, states[:, -1], 1e-8)
    y32, _ = conv_diag_ssm(u.float(), A_bar.to(torch.complex64), B_bar.to(torch.complex64), C.to(torch.complex64))
    assert torch.isfinite(y32).all()
    assert_close("float32 conv", y32, y, 1e-4)
