"""SSM family: every form against the float64 recurrence, forward and gradients."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from recur.ops.common import linear_recurrence
from recur.ops.ssm import (
    DENSE_FORMS,
    DIAG_FORMS,
    FORMS,
    chunk_selective_scan,
    conv_dense_ssm,
    conv_diag_ssm,
    diag_ssm,
    diagonal_init,
    discretize,
    discretize_dense,
    discretize_dplr,
    dplr_kernel,
    hippo,
    krylov,
    naive_dense_ssm,
    naive_diag_ssm,
    naive_selective_scan,
    nplr,
    rank_correction,
    selective_scan,
)
from tests.helpers import assert_close, grads, weighted_sum

BATCH, CHANNELS, N = 2, 6, 4


def scan_inputs(T, complex_state=False, groups=None, delta_scale=1.0, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    u, delta, z = rand(BATCH, T, CHANNELS), rand(BATCH, T, CHANNELS) * delta_scale, rand(BATCH, T, CHANNELS)
    bc_shape = (BATCH, T, N) if groups is None else (BATCH, T, groups, N)
    A = -torch.rand(CHANNELS, N, generator=gen, dtype=dtype) - 0.05
    B, C, h0 = rand(*bc_shape), rand(*bc_shape), rand(BATCH, CHANNELS, N)
    if complex_state:
        A = torch.complex(A, rand(CHANNELS, N) * 3)
        B, C = torch.complex(B, rand(*bc_shape)), torch.complex(C, rand(*bc_shape))
        h0 = torch.complex(h0, rand(BATCH, CHANNELS, N))
    D, bias = rand(CHANNELS), rand(CHANNELS)
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias, initial_state=h0)


SCAN_ARGS = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]


def run_scan(form, inputs):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y, h = form(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"], z=leaves["z"],
        delta_bias=leaves["delta_bias"], delta_softplus=True, initial_state=leaves["initial_state"],
        output_final_state=True,
    )
    return [y, h, *grads(loss(y, h), [leaves[k] for k in SCAN_ARGS])]


def loss(y, h):
    """A real scalar depending on every element of y and of h (real and imaginary parts)."""
    return weighted_sum(y, torch.view_as_real(h) if h.is_complex() else h)


def compare(actual, expected, names, tol, label):
    for name, a, e in zip(names, actual, expected, strict=True):
        assert_close(f"{label} {name}", a, e, tol)


@pytest.mark.parametrize("complex_state", [False, True])
@pytest.mark.parametrize("T", [1, 63, 64, 65, 100, 200])
def test_scan_matches_naive_float64(T, complex_state):
    inputs = scan_inputs(T, complex_state)
    names = ["y", "final_state"] + [f"d{k}" for k in SCAN_ARGS]
    compare(run_scan(chunk_selective_scan, inputs), run_scan(naive_selective_scan, inputs), names, 1e-10, f"T={T}")


def test_scan_groups_and_extreme_steps():
    """B and C shared by groups of channels; Δ from near 0 to about 60 (exp(ΔA) ≈ 0)."""
    names = ["y", "final_state"] + [f"d{k}" for k in SCAN_ARGS]
    for delta_scale in (1e-3, 60.0):
        inputs = scan_inputs(70, groups=3, delta_scale=delta_scale, seed=1)
        compare(run_scan(chunk_selective_scan, inputs), run_scan(naive_selective_scan, inputs), names, 1e-10, f"Δ scale {delta_scale}")


def test_scan_complex_gradients_gradcheck():
    """Wirtinger gradients of the complex scan against finite differences."""
    inputs = scan_inputs(9, complex_state=True, seed=2)

    def f(A, B, C, h0, u):
        y, h = chunk_selective_scan(u, inputs["delta"], A, B, C, delta_softplus=True, initial_state=h0, output_final_state=True)
        return y, h

    args = [inputs[k].clone().requires_grad_() for k in ("A", "B", "C", "initial_state", "u")]
    assert torch.autograd.gradcheck(f, args)


def test_scan_carry_equals_one_pass():
    inputs = scan_inputs(80, complex_state=True, seed=3)
    kw = {k: inputs[k] for k in ("D", "delta_bias")}
    full, h_full = chunk_selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], delta_softplus=True, output_final_state=True, **kw)
    y1, h1 = chunk_selective_scan(*(inputs[k][:, :33] for k in ("u", "delta")), inputs["A"], *(inputs[k][:, :33] for k in ("B", "C")), delta_softplus=True, output_final_state=True, **kw)
    y2, h2 = chunk_selective_scan(*(inputs[k][:, 33:] for k in ("u", "delta")), inputs["A"], *(inputs[k][:, 33:] for k in ("B", "C")), delta_softplus=True, initial_state=h1, output_final_state=True, **kw)
    assert_close("carried output", torch.cat([y1, y2], 1), full, 1e-12)
    assert_close("carried state", h2, h_full, 1e-12)


def test_scan_long_sequence_stable():
    """T = 65536 in float32: finite, and equal to the float64 scan."""
    gen = torch.Generator().manual_seed(4)
    T, D, n = 65536, 2, 2
    u = torch.randn(1, T, D, generator=gen)
    delta = torch.randn(1, T, D, generator=gen)
    A = -torch.rand(D, n, generator=gen) - 0.01
    B, C = torch.randn(1, T, n, generator=gen), torch.randn(1, T, n, generator=gen)
    y, h = chunk_selective_scan(u, delta, A, B, C, delta_softplus=True, output_final_state=True)
    y64, _ = chunk_selective_scan(u.double(), delta.double(), A.double(), B.double(), C.double(), delta_softplus=True)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert_close("float32 vs float64 at T=65536", y, y64, 1e-5)


def test_scan_dtypes():
    inputs = scan_inputs(10, dtype=torch.float32)
    y, h = chunk_selective_scan(inputs["u"].bfloat16(), inputs["delta"], inputs["A"], inputs["B"], inputs["C"], output_final_state=True)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    inputs = scan_inputs(10, complex_state=True)
    _, h = naive_selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], output_final_state=True)
    assert h.dtype == torch.complex128


def test_forms_share_signatures_and_dispatch():
    for forms, reference in ((FORMS, naive_selective_scan), (DIAG_FORMS, naive_diag_ssm), (DENSE_FORMS, naive_dense_ssm)):
        for name, form in forms.items():
            assert inspect.signature(form) == inspect.signature(reference), f"{name} differs from {reference.__name__}"
    inputs = scan_inputs(20)
    args = (inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"])
    assert_close("auto", selective_scan(*args)[0], naive_selective_scan(*args)[0], 1e-12)
    with pytest.raises(ValueError, match="no 'triton' form"):
        selective_scan(*args, impl="triton")


def test_bad_inputs_name_the_argument():
    inputs = scan_inputs(5)
    args = dict(u=inputs["u"], delta=inputs["delta"], A=inputs["A"], B=inputs["B"], C=inputs["C"])
    with pytest.raises(ValueError, match=r"delta has shape \[2, 4, 6\]; expected \[2, 5, 6\]"):
        selective_scan(**{**args, "delta": inputs["delta"][:, :4]})
    with pytest.raises(ValueError, match="A must have shape"):
        selective_scan(**{**args, "A": inputs["A"][:3]})
    with pytest.raises(ValueError, match="initial_state has shape"):
        selective_scan(**args, initial_state=torch.zeros(2, 6, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="groups"):
        selective_scan(**{**args, "B": torch.zeros(2, 5, 4, 4, dtype=torch.float64), "C": torch.zeros(2, 5, 4, 4, dtype=torch.float64)})
    with pytest.raises(ValueError, match="B_bar has shape"):
        diag_ssm(inputs["u"], A_bar=inputs["A"], B_bar=inputs["A"][:, :2], C=inputs["A"])


def lti_inputs(T, method, seed=0, real=False):
    gen = torch.Generator().manual_seed(seed)
    H = 3
    A = torch.complex(-torch.rand(H, N, generator=gen, dtype=torch.float64) - 0.1, torch.randn(H, N, generator=gen, dtype=torch.float64) * 5)
    if real:
        A = A.real
    dt = torch.rand(H, generator=gen, dtype=torch.float64) * 0.1 + 1e-3
    A_bar, B_bar = discretize(A, dt, method=method, length=64)
    C = torch.randn(H, N, generator=gen, dtype=A.dtype)
    u = torch.randn(BATCH, T, H, generator=gen, dtype=torch.float64)
    h0 = torch.randn(BATCH, H, N, generator=gen, dtype=A.dtype)
    D = torch.randn(H, generator=gen, dtype=torch.float64)
    return dict(u=u, A_bar=A_bar, B_bar=B_bar, C=C, D=D, initial_state=h0)


LTI_ARGS = ["u", "A_bar", "B_bar", "C", "D", "initial_state"]


def run_lti(form, inputs):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y, h = form(leaves["u"], **{k: leaves[k] for k in LTI_ARGS[1:]}, output_final_state=True)
    return [y, h, *grads(loss(y, h), [leaves[k] for k in LTI_ARGS])]


@pytest.mark.parametrize("method", ["zoh", "bilinear", "dss"])
@pytest.mark.parametrize("T", [1, 63, 100])
def test_convolution_matches_recurrence(T, method):
    """FFT convolution (with the initial state's exact free response) == the recurrence."""
    inputs = lti_inputs(T, method)
    names = ["y", "final_state"] + [f"d{k}" for k in LTI_ARGS]
    compare(run_lti(conv_diag_ssm, inputs), run_lti(naive_diag_ssm, inputs), names, 1e-10, f"{method} T={T}")


def test_convolution_real_state():
    inputs = lti_inputs(65, "zoh", real=True)
    names = ["y", "final_state"] + [f"d{k}" for k in LTI_ARGS]
    out, ref = run_lti(conv_diag_ssm, inputs), run_lti(naive_diag_ssm, inputs)
    assert not out[1].is_complex()
    compare(out, ref, names, 1e-10, "real state")


def test_convolution_long_sequence():
    """T = 65536: the convolution equals the parallel-scan recurrence in float64 and is
    finite in float32."""
    gen = torch.Generator().manual_seed(5)
    T, H, n = 65536, 2, 4
    A = diagonal_init("lin", n)[None].expand(H, n)
    dt = torch.tensor([1e-3, 0.1], dtype=torch.float64)
    A_bar, B_bar = discretize(A, dt)
    C = torch.randn(H, n, generator=gen, dtype=torch.complex128)
    u = torch.randn(1, T, H, generator=gen, dtype=torch.float64)
    y, h = conv_diag_ssm(u, A_bar=A_bar, B_bar=B_bar, C=C, output_final_state=True)
    states = linear_recurrence(A_bar.expand(1, T, H, n), B_bar * u[..., None].to(B_bar.dtype))
    assert_close("conv vs scan at T=65536", y, (states * C).sum(-1).real, 1e-8)
    assert_close("final state", h, states[:, -1], 1e-8)
    y32, _ = conv_diag_ssm(u.float(), A_bar=A_bar.to(torch.complex64), B_bar=B_bar.to(torch.complex64), C=C.to(torch.complex64))
    assert torch.isfinite(y32).all()
    assert_close("float32 conv", y32, y, 1e-4)


@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
def test_dense_convolution_matches_recurrence(measure):
    gen = torch.Generator().manual_seed(6)
    H, n, T = 3, 8, 70
    A, B = hippo(measure, n)
    dt = torch.rand(H, generator=gen, dtype=torch.float64) * 0.1 + 1e-3
    A_bar, B_bar = discretize_dense(A.expand(H, n, n), dt, B.expand(H, n))
    inputs = dict(
        u=torch.randn(BATCH, T, H, generator=gen, dtype=torch.float64), A_bar=A_bar, B_bar=B_bar,
        C=torch.randn(H, n, generator=gen, dtype=torch.float64), D=torch.randn(H, generator=gen, dtype=torch.float64),
        initial_state=torch.randn(BATCH, H, n, generator=gen, dtype=torch.float64),
    )
    names = ["y", "final_state"] + [f"d{k}" for k in LTI_ARGS]
    compare(run_lti(conv_dense_ssm, inputs), run_lti(naive_dense_ssm, inputs), names, 1e-10, measure)


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
    dt = torch.rand(H, generator=gen, dtype=torch.float64) * 0.1 + 1e-3
    K = dplr_kernel(Lambda.expand(H, n), P.expand(H, r, n), P.expand(H, r, n), B.expand(H, n), C, dt, L)
    A = torch.diag(Lambda) - P.T @ P.conj()
    A_bar, B_bar = discretize_dense(A.expand(H, n, n), dt, B.expand(H, n))
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
    dt = torch.rand(H, generator=gen, dtype=torch.float64) * 0.5 + 1e-3
    A = torch.diag(Lambda) - P.T @ P.conj()
    A_bar, B_bar = discretize_dplr(Lambda.expand(H, n), P.expand(H, r, n), P.expand(H, r, n), B.expand(H, n), dt)
    A_ref, B_ref = discretize_dense(A.expand(H, n, n), dt, B.expand(H, n))
    assert_close("Woodbury Ā", A_bar, A_ref, 1e-12)
    assert_close("Woodbury B̄", B_bar, B_ref, 1e-12)
