"""The newton family's Triton scan in Triton's interpreter on the CPU.

The kernel in float32 against a float64 loop, forward and gradients (which run the
adjoint walk), for 1×1 and 2×2 blocks per unit, lengths that are not whole chunks, units
that are not whole program blocks, and blocks near 1 and near 0 in size; then the whole
Newton solve with it against the sequential form. Every output buffer is filled with NaN
first, so an element the kernel forgets fails the comparison. The generic tests of every
form (packed batches, split sequences, bad arguments) are in test_families.py.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from recur.ops.newton import NEWTON, NewtonInfo
from tests.helpers import (
    assert_close,
    compare_results,
    family_results,
    grads,
    interpreted_kernels,
    weighted_sum,
)

triton = pytest.importorskip("triton")

# float32 kernel against the float64 loop: rounding of float32 multiply-adds
TOL_FLOAT32 = 2e-5


@pytest.fixture(scope="module")
def launcher():
    """The launch module, its kernel in Triton's interpreter."""
    with interpreted_kernels("recur.ops.newton.triton") as module:
        yield module


@contextlib.contextmanager
def poisoned_outputs():
    """torch.empty_like (the scan's output buffers) returns NaN-filled tensors inside."""
    empty_like = torch.empty_like
    torch.empty_like = lambda *a, **kw: empty_like(*a, **kw).fill_(float("nan"))
    try:
        yield
    finally:
        torch.empty_like = empty_like


def blocks(S, T, size, B=2, H=2, D=20, seed=0):
    """Blocks J [S][S] and right-hand sides r [S] of [B, T, H, D] in float64. `size`:
    "near_one" (diagonal in ±[0.99, 1], off-diagonal within ±0.01: slow decay, both signs),
    "near_zero" (entries within ±1e-3, a tenth of them exactly 0) or "moderate" (within ±0.9)."""
    gen = torch.Generator().manual_seed(seed)
    uniform = lambda: 2 * torch.rand(B, T, H, D, generator=gen, dtype=torch.float64) - 1  # noqa: E731
    sign = lambda: torch.where(uniform() < 0, -1.0, 1.0).double()  # noqa: E731
    J = []
    for i in range(S):
        row = []
        for j in range(S):
            if size == "near_one":
                a = sign() * (1 - 0.01 * uniform().abs()) if i == j else 0.01 * uniform()
            elif size == "near_zero":
                a = 1e-3 * uniform() * (uniform().abs() > 0.1)
            else:
                a = 0.9 * uniform() / S
            row.append(a)
        J.append(row)
    r = [torch.randn(B, T, H, D, generator=gen, dtype=torch.float64) for _ in range(S)]
    return J, r


def loop(J, r):
    """δ_t = J_t δ_{t-1} + r_t step by step (the float64 reference, through autograd)."""
    S, T = len(r), r[0].shape[1]
    delta, out = [torch.zeros_like(v[:, 0]) for v in r], []
    for t in range(T):
        delta = [sum(J[i][j][:, t] * delta[j] for j in range(S)) + r[i][:, t] for i in range(S)]
        out.append(delta)
    return [torch.stack([step[i] for step in out], dim=1) for i in range(S)]


def scan_results(fn, J, r, dtype):
    """The solutions and the gradients of a weighted sum of them for every block and
    right-hand side, computed in `dtype` by fn."""
    leaves = [x.detach().to(dtype).requires_grad_() for x in (*(a for row in J for a in row), *r)]
    S = len(r)
    J_, r_ = [leaves[i * S : (i + 1) * S] for i in range(S)], leaves[S * S :]
    delta = fn(J_, r_)
    return [*delta, *grads(weighted_sum(*delta), leaves)]


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("size", ["moderate", "near_one", "near_zero"])
def test_scan_matches_the_float64_loop(launcher, S, size):
    # T = 37: two whole chunks of 16 and a partial one; 40 units: three program blocks, the
    # last one partial (B = 2 asks for narrow blocks)
    J, r = blocks(S, 37, size)
    with poisoned_outputs():
        got = scan_results(launcher.triton_block_recurrence, J, r, torch.float32)
    expected = scan_results(loop, J, r, torch.float64)
    names = [f"δ[{i}]" for i in range(S)] + [f"dJ[{i}][{j}]" for i in range(S) for j in range(S)]
    names += [f"dr[{i}]" for i in range(S)]
    for name, a, e in zip(names, got, expected, strict=True):
        assert a.dtype == torch.float32
        assert_close(f"{size} S={S} {name}", a, e, TOL_FLOAT32)


@pytest.mark.parametrize("S", [1, 2])
def test_scan_in_segments_matches_the_float64_loop(launcher, S, monkeypatch):
    """Few programs: the walk cut into segments of 8 steps (here forced on a short
    sequence): summaries, the walk over them, then each segment again from its carry;
    the last segment partial."""
    monkeypatch.setattr(launcher, "MIN_SEGMENT", 1)
    monkeypatch.setitem(launcher.TILES, "steps", 8)
    J, r = blocks(S, 29, "near_one", B=1, H=1, D=40)
    assert launcher._plan(1, 29, 40)[1:] == (4, 8)
    with poisoned_outputs():
        got = scan_results(launcher.triton_block_recurrence, J, r, torch.float32)
    for i, (a, e) in enumerate(zip(got, scan_results(loop, J, r, torch.float64), strict=True)):
        assert_close(f"S={S} result {i}", a, e, TOL_FLOAT32)


@pytest.mark.parametrize("T", [1, 5, 16])
def test_scan_lengths_up_to_one_chunk(launcher, T):
    J, r = blocks(2, T, "moderate", B=1, H=1, D=3)
    with poisoned_outputs():
        got = scan_results(launcher.triton_block_recurrence, J, r, torch.float32)
    for i, (a, e) in enumerate(zip(got, scan_results(loop, J, r, torch.float64), strict=True)):
        assert_close(f"T={T} result {i}", a, e, TOL_FLOAT32)


def test_adjoint_walk_reads_the_next_block_transposed(launcher):
    """λ_t = g_t + J_{t+1}ᵀ λ_{t+1}, the scan the Newton backward runs, against a loop."""
    J, g = blocks(2, 21, "moderate", B=1, H=1, D=3)
    with poisoned_outputs():
        got = launcher.triton_reverse_block_recurrence([[a.float() for a in row] for row in J], [v.float() for v in g])
    adjoint, expected = [torch.zeros_like(v[:, 0]) for v in g], []
    for t in reversed(range(21)):
        nxt = [[a[:, t + 1] if t + 1 < 21 else torch.zeros_like(a[:, 0]) for a in row] for row in J]
        adjoint = [g[i][:, t] + sum(nxt[j][i] * adjoint[j] for j in range(2)) for i in range(2)]
        expected.append(adjoint)
    for i in range(2):
        assert_close(f"λ[{i}]", got[i], torch.stack([step[i] for step in expected[::-1]], dim=1), TOL_FLOAT32)


def test_scan_refuses_larger_blocks(launcher):
    J, r = blocks(2, 4, "moderate", B=1, H=1, D=2)
    three = [[J[0][0]] * 3 for _ in range(3)]
    with pytest.raises(ValueError, match="1×1 or 2×2 blocks"):
        launcher.triton_block_recurrence(three, [r[0]] * 3)


@pytest.mark.parametrize("case", ["paragru", "paralstm"])
def test_newton_solve_matches_the_sequential_form(launcher, case):
    """The whole solve (T = 45, not whole chunks) in float64 with float32 scans: outputs,
    final states and every gradient against the sequential form, as many Newton steps as
    the PyTorch scans take."""
    example = NEWTON.example_inputs(45, case=case)
    info, reference_info = NewtonInfo(), NewtonInfo()
    got = family_results(NEWTON, "triton", example, info=info)
    expected = family_results(NEWTON, "sequential", example)
    compare_results(got, expected, TOL_FLOAT32, case)
    family_results(NEWTON, "newton", example, info=reference_info)
    assert info.converged and not info.fell_back
    assert info.iterations == reference_info.iterations


@pytest.mark.parametrize("case", ["paragru", "paralstm"])
def test_float64_states_converge_to_float64_with_float32_scans(launcher, case):
    """Newton corrects the float32 scans' rounding like iterative refinement: the states
    reach the float64 tolerance and match the loop to float64 accuracy."""
    example = NEWTON.example_inputs(40, case=case)
    info = NewtonInfo()
    with torch.no_grad():
        h, final = NEWTON.call("triton", example.args, {**example.kwargs, "info": info, "output_final_state": True})
        h_loop, final_loop = NEWTON.call("naive", example.args, {**example.kwargs, "output_final_state": True})
    assert info.converged and info.residual <= 1e-12
    assert h.dtype == torch.float64
    assert_close("h", h, h_loop, 1e-10)
    assert_close("final state", final, final_loop, 1e-10)


def test_float32_solve_matches_the_pytorch_scans(launcher):
    """float32 inputs, a packed batch: the same iterations and results as the "newton" form."""
    lengths = [9, 0, 40, 17]
    bounds = torch.tensor([0, 9, 9, 49, 66])
    example = NEWTON.example_inputs(sum(lengths), batch=1, case="paralstm", dtype=torch.float32)
    example.kwargs["initial_state"] = NEWTON.example_inputs(1, batch=4, case="paralstm", dtype=torch.float32, seed=1).kwargs["initial_state"]
    info, reference_info = NewtonInfo(), NewtonInfo()
    got = family_results(NEWTON, "triton", example, cu_seqlens=bounds, info=info)
    expected = family_results(NEWTON, "newton", example, cu_seqlens=bounds, info=reference_info)
    compare_results(got, expected, 1e-5, "packed float32")
    assert info.iterations == reference_info.iterations and info.converged


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_layers_run_the_kernel(launcher, name):
    """A ParaRNN layer with impl="triton" (float32) gives the output, state and parameter
    gradients of impl="newton" in float64."""
    from recur.layers import build_mixer

    torch.manual_seed(0)
    layer = build_mixer(name, 8, num_heads=2)
    x = torch.randn(2, 21, 8, dtype=torch.float64)
    results = {}
    for impl, dtype in (("triton", torch.float32), ("newton", torch.float64)):
        layer.to(dtype).zero_grad()
        y, state = layer.with_impl(impl)(x.to(dtype))
        (weighted_sum(y) + sum(weighted_sum(s) for s in state.values())).backward()
        results[impl] = {"y": y, **state, **{n: p.grad for n, p in layer.named_parameters()}}
    for key, expected in results["newton"].items():
        assert_close(f"{name} {key}", results["triton"][key], expected, TOL_FLOAT32)


@pytest.mark.slow
@pytest.mark.parametrize("S", [1, 2])
def test_kernel_keeps_each_units_steps_in_its_registers(S):
    """Compiled ahead of time for an H100 (sm_90) as the launcher launches it, specialised
    as Triton's launch would for aligned buffers and sizes that are multiples of 16 (where
    the kernel lets it): each thread holds one unit's rows, so picking a step's row needs
    no shuffles, barriers or shared memory, and nothing spills."""
    import subprocess
    import tempfile

    from triton.backends import backends
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tests.helpers import load_kernel_module
    from tests.ops.test_triton_compile import has_tools, machine_code

    if "nvidia" not in backends or not has_tools():
        pytest.skip("Triton has no CUDA backend with its tools here")
    previous = os.environ.get("TRITON_INTERPRET")
    module = load_kernel_module("recur.ops.newton.triton", interpret=False)
    try:
        kernel = module.kernels.block_scan
        for has_carry, summary in ((False, False), (True, False), (False, True)):
            constexprs = {
                "S": S, "C": module.TILES["steps"], "BN": module.TILES["units"], "REVERSE": False,
                "HAS_CARRY": has_carry, "SUMMARY": summary,
            }
            signature = {n: "constexpr" if n in constexprs else "*fp32" if n.endswith("_ptr") else "i32" for n in kernel.arg_names}
            unspecialised = {p.name for p in kernel.params if p.do_not_specialize}
            aligned = {
                (i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
                if n not in constexprs and n not in unspecialised
            }
            compiled = triton.compile(
                ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=aligned),
                target=GPUTarget("cuda", 90, 32), options={"num_warps": module.TILES["units"] // 32, "num_stages": module.STAGES},
            )
            code = machine_code(compiled)
            with tempfile.TemporaryDirectory() as tmp:
                path = f"{tmp}/kernel.cubin"
                with open(path, "wb") as f:
                    f.write(compiled.asm["cubin"])
                tools = f"{os.path.dirname(triton.__file__)}/backends/nvidia/bin"
                sass = subprocess.run([f"{tools}/nvdisasm", path], capture_output=True, text=True, check=True).stdout
            label = f"S={S} carry={has_carry} summary={summary}"
            assert code["spilled_bytes"] == 0 and code["shared_bytes"] == 0, f"{label}: {code}"
            assert sass.count("SHFL") == 0 and sass.count("BAR") == 0, f"{label}: the rows are spread over threads"
    finally:
        if previous is not None:
            os.environ["TRITON_INTERPRET"] = previous
        load_kernel_module("recur.ops.newton.triton")
