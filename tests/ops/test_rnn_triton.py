"""The head-wise LSTM, GRU and sLSTM Triton kernels in Triton's interpreter on the CPU,
against the float64 naive loop. What every form of every family passes (the spec's results
on the family's example inputs at T = 70, packed batches, state carry) is in
test_families.py; here are the kernels' own cases: short and odd lengths, head widths that
are and are not the padded width, several batch blocks, no initial state, saturated
gates, 16-bit inputs, and the cells and widths they refuse.

Small sizes: the interpreter runs every program in Python. Every buffer the kernels
allocate is filled with NaN first, so an element a kernel forgets to write fails the
comparison.
"""

from __future__ import annotations

import pytest
import torch

from recur.ops.family import Example
from recur.ops.rnn import ALRNN, LSTM, RNN
from tests.helpers import assert_close, compare_results, family_results, interpreted_kernels
from tests.ops.test_gla_triton import poisoned_allocations

pytest.importorskip("triton")

# float32 kernels against the float64 loop: rounding of float32 products and sums
TOL_FLOAT32 = 2e-5
# bfloat16 inputs (rounded once, then the same float32 state maths) against the float64
# loop on the rounded inputs: the output's own rounding to bfloat16 (2^-8) dominates
TOL_BFLOAT16 = 1e-2
CELLS = ["lstm", "gru", "slstm"]


@pytest.fixture(scope="module")
def launcher():
    """The launch module, its kernels in Triton's interpreter."""
    with interpreted_kernels("recur.ops.rnn.triton") as module:
        yield module


def cast(example: Example, dtype: torch.dtype) -> Example:
    """The same inputs in `dtype`, as new leaves."""

    def to(x):
        return x.detach().to(dtype).requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor) else x

    return Example(tuple(to(x) for x in example.args), {name: to(x) for name, x in example.kwargs.items()})


def check_kernels(example: Example, tol: float = TOL_FLOAT32, label: str = "", dtype=torch.float32, **overrides):
    """Output, final state and the gradients of x_proj, R, b and the initial state of the
    Triton form (inputs in `dtype`, every allocation poisoned) against the float64 spec's on
    the same (rounded) values."""
    rounded = cast(cast(example, dtype), torch.float64)
    with poisoned_allocations():
        actual = family_results(RNN, "triton", cast(example, dtype), **overrides)
    compare_results(actual, family_results(RNN, "naive", rounded, **overrides), tol, label)
    return actual


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("T", "head_dim"), [(1, 8), (7, 16), (33, 8)])
def test_kernels_match_naive(launcher, cell, T, head_dim):
    """Two heads of 8 units (padded to 16 in the kernels) or 16 (no padding)."""
    example = RNN.example_inputs(T, case=cell, heads=2, head_dim=head_dim)
    check_kernels(example, label=f"{cell} T={T} Dh={head_dim}")


@pytest.mark.parametrize("cell", CELLS)
def test_several_batch_blocks_and_no_initial_state(launcher, cell):
    """20 rows take two programs per head, whose dR and db shares are summed; without an
    initial state the walk starts from zeros (sLSTM's empty state: n = 0)."""
    example = RNN.example_inputs(5, batch=20, case=cell, heads=2, head_dim=8)
    check_kernels(example, label=f"{cell} B=20")
    example.kwargs["initial_state"] = None
    check_kernels(example, label=f"{cell} no initial state")


# the interpreter's numpy reports the overflow of exp(−x) that σ relies on
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("cell", CELLS)
def test_saturated_gates_stay_finite(launcher, cell):
    """Pre-activations of ±200: σ and tanh at 0 and ±1, exp(−x) overflowing to inf inside
    σ; the results stay finite and match the loop. The slopes σ' there are ~e^-200 in
    float64 and 0 in float32, so the LSTM's and GRU's gradients of x_proj, R and b (each
    times a slope) are compared by their absolute difference."""
    example = RNN.example_inputs(7, case=cell, heads=2, head_dim=8)
    saturated = (200.0 * torch.sign(example.args[0].detach())).requires_grad_()
    example = Example((saturated, *example.args[1:]), example.kwargs)
    with poisoned_allocations():
        actual = family_results(RNN, "triton", cast(example, torch.float32))
    expected = family_results(RNN, "naive", example)
    for key, value in actual.items():
        assert bool(torch.isfinite(value).all()), f"{cell} {key} is not finite"
        if key in ("grad arg0", "grad arg1", "grad arg2") and cell != "slstm":
            assert float((value - expected[key]).abs().max()) < 1e-6, f"{cell} {key}"
        else:
            assert_close(f"{cell} saturated {key}", value, expected[key], TOL_FLOAT32)


@pytest.mark.parametrize("cell", CELLS)
def test_bfloat16_inputs(launcher, cell):
    """bfloat16 x_proj, R, b and initial state: the output in bfloat16, the state in float32."""
    example = RNN.example_inputs(7, case=cell, heads=2, head_dim=8)
    actual = check_kernels(example, TOL_BFLOAT16, f"{cell} bf16", dtype=torch.bfloat16)
    assert actual["output"].dtype == torch.bfloat16
    assert actual["final_state[0]"].dtype == torch.float32


def test_forward_without_gradients(launcher):
    """Under no_grad the forward keeps no states or gates and gives the same results."""
    example = RNN.example_inputs(9, case="slstm", heads=2, head_dim=8)
    with torch.no_grad():
        output, state = RNN.call("triton", cast(example, torch.float32).args,
                                 {**cast(example, torch.float32).kwargs, "output_final_state": True})
        expected, expected_state = RNN.call("naive", example.args, {**example.kwargs, "output_final_state": True})
    assert_close("output", output, expected, TOL_FLOAT32)
    assert_close("final state", state, expected_state, TOL_FLOAT32)


def test_other_cells_and_wide_heads_are_refused(launcher):
    """impl="triton" names the cell or the head width it cannot run."""
    elman = RNN.example_inputs(3, case="elman_tanh")
    with pytest.raises(ValueError, match=r"impl='triton' cannot run these inputs: .*got cell Elman"):
        RNN.call("triton", elman.args, elman.kwargs)
    alrnn = RNN.example_inputs(3, case="alrnn")
    with pytest.raises(ValueError, match=r"run the cells 'lstm', 'gru', 'slstm' only; got cell ALRNN"):
        RNN.call("triton", alrnn.args, {**alrnn.kwargs, "cell": ALRNN(num_relu=2)})

    class PeepholeLSTM(LSTM):
        """A subclass may change the step: the kernels do not run it."""

    lstm = RNN.example_inputs(3, case="lstm")
    with pytest.raises(ValueError, match="got cell PeepholeLSTM"):
        RNN.call("triton", lstm.args, {**lstm.kwargs, "cell": PeepholeLSTM()})
    wide = RNN.example_inputs(2, case="lstm", heads=1, head_dim=80)
    with pytest.raises(ValueError, match="heads of up to 64 units; got x_proj with heads of 80"):
        RNN.call("triton", wide.args, wide.kwargs)


@pytest.mark.parametrize("name", ["lstm", "gru", "slstm"])
def test_layers_run_the_kernels(launcher, name):
    """The RNN layers with two heads and impl="triton" (float32) give the outputs, state and
    parameter gradients of the sequential form in float64."""
    from recur.layers.registry import build_mixer
    from tests.helpers import layer_results

    torch.manual_seed(0)
    layer = build_mixer(name, 16, num_heads=2)
    x = torch.randn(2, 6, 16)
    expected = layer_results(layer, x, "sequential", torch.float64)
    actual = layer_results(layer, x, "triton", torch.float32)
    assert actual.keys() == expected.keys() and len(expected) > 2
    for key in expected:
        assert_close(f"{name} {key}", actual[key], expected[key], 1e-5)


def _compile_sm90(kernel, constexprs: dict, warps: int, dtype_name: str):
    """The kernel compiled for an H100 (sm_90) without a device; pointers to the inputs,
    outputs and their gradients in `dtype_name`, every other buffer float32."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    inputs = {"x_ptr", "R_ptr", "b_ptr", "out_ptr", "dout_ptr"}
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in ("B", "T"):
            signature[name] = "i32"
        elif name == "len_ptr":
            signature[name] = "*i32"
        else:
            signature[name] = f"*{dtype_name}" if name in inputs else "*fp32"
    return triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
        target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": 1},
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
def test_kernels_compile_for_an_h100_at_heads_of_64(dtype_name):
    """Both kernels of every cell, with the launcher's settings at the widest heads they
    take, compile for sm_90, fit its shared memory, and the forward keeps its recurrent
    blocks in registers (the machine code read with Triton's CUDA tools): no spill for the
    LSTM and GRU, at most 64 bytes per thread for the sLSTM, whose four states and four
    recurrent blocks fill the 255 registers (32 bytes measured with Triton 3.9)."""
    from triton.backends import backends

    from tests.ops.test_triton_compile import (
        SM90_SHARED_BYTES,
        has_tools,
        load_compiled,
        machine_code,
    )

    if "nvidia" not in backends or not has_tools():
        pytest.skip("Triton has no CUDA backend with its tools here")
    m = load_compiled("recur.ops.rnn.triton")
    try:
        D = 64
        precision = "ieee" if dtype_name == "fp32" else "tf32"
        for code, G, S in ((0, 4, 2), (1, 3, 1), (2, 4, 4)):
            settings = dict(H=4, D=D, BD=D, BB=m.BATCH_BLOCK, G=G, S=S, CELL=code, HAS_S0=True, VARLEN=True, PRECISION=precision)
            forward = _compile_sm90(m.kernels.forward, dict(settings, SAVE=True), m.WARPS["forward"], dtype_name)
            backward = _compile_sm90(m.kernels.backward, dict(settings, HAS_DFINAL=True), m.WARPS["backward"], dtype_name)
            for name, compiled in (("forward", forward), ("backward", backward)):
                assert compiled.metadata.shared <= SM90_SHARED_BYTES, (code, name, compiled.metadata.shared)
            allowed = 64 if code == 2 else 0
            assert machine_code(forward)["spilled_bytes"] <= allowed, (code, machine_code(forward))
    finally:
        load_kernel_module_back()


def load_kernel_module_back() -> None:
    """The launch module as TRITON_INTERPRET says now, for the tests that follow."""
    from tests.helpers import load_kernel_module

    load_kernel_module("recur.ops.rnn.triton")
