"""The delta rule's Triton kernels compiled ahead of time for an H100 (sm_90), without a
device: every kernel compiles with the tiles, warps and stages the launches use, and fits
the 227 KiB of shared memory a program may have there (a launch that asks for more fails).

Marked `slow` (run with `pytest -m slow`): compiling takes about a minute per case on 2
CPU cores. Skipped where Triton has no CUDA backend with its ptxas.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

triton = pytest.importorskip("triton")

pytestmark = pytest.mark.slow

SM90_SHARED_BYTES = 232448


@pytest.fixture(scope="module")
def compiled_module():
    """The kernel module loaded for compilation (not the interpreter), restored after."""
    from triton.backends import backends

    if "nvidia" not in backends:
        pytest.skip("Triton has no CUDA backend here")
    previous = os.environ.pop("TRITON_INTERPRET", None)
    name = "recur.ops.delta.triton"
    module = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    yield module
    if previous is not None:
        os.environ["TRITON_INTERPRET"] = previous
        importlib.reload(module)


def launches(m, K, V, dtype_name):
    """(kernel, constexprs, warps) for every launch of a forward and backward, with the
    values the launchers use."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    precision = m._precision(dtype)
    cfg = m._launch(K, V)
    common = dict(H=16, K=K, V=V, C=m.CHUNK)
    walk = dict(common, BK=cfg["BK"], BV=cfg["BV"], HAS_H0=True, PRECISION=precision)
    out = []
    for store_t in (False, True):
        out.append((m._prepare_kernel, dict(
            common, BK=cfg["BK"], BV=m._pow2(min(V, 2 * m.VALUE_TILE)), LOG2_C=m.CHUNK.bit_length() - 1,
            HAS_G=True, STORE_T=store_t, PRECISION=precision,
        ), m.WARPS["prepare"]))
    out.append((m._walk_kernel, dict(walk, OUTPUT=True, STORE_U=False, STORE_STATES=False, STORE_FINAL=True), m.WARPS["walk"]))
    out.append((m._walk_kernel, dict(walk, OUTPUT=False, STORE_U=True, STORE_STATES=True, STORE_FINAL=False), m.WARPS["walk"]))
    out.append((m._reverse_walk_kernel, dict(
        common, BK=cfg["BK"], BV=cfg["BV"], HAS_DHT=True, PRECISION=precision,
    ), m.WARPS["walk"]))
    out.append((m._gradient_values_kernel, dict(
        common, BK=cfg["BK"], BV=cfg["BV"], PRECISION=precision,
    ), m.WARPS["gradient"]))
    keys = dict(H=16, K=K, C=m.CHUNK, BK=m._pow2(min(K, m.KEY_BLOCK)), HAS_G=True, PRECISION=precision)
    out.append((m._gradient_keys_kernel, keys, m.WARPS["gradient"]))
    return out


# input tensors of the kernels (the dtype of the inputs); every other pointer is a float32 buffer
INPUTS = {"q_ptr", "k_ptr", "v_ptr", "beta_ptr", "g_ptr", "do_ptr", "o_ptr", "dq_ptr", "dk_ptr", "dv_ptr", "dbeta_ptr", "dg_ptr"}
SCALARS = {"T": "i32", "T_pad": "i32", "NC": "i32", "scale": "fp32", "floor": "fp32"}


@pytest.mark.parametrize("K, dtype_name", [(128, "fp32"), (128, "bf16"), (256, "fp32")])
def test_kernels_compile_and_fit_an_h100(compiled_module, K, dtype_name):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    m = compiled_module
    too_big = {}
    for kernel, constexprs, warps in launches(m, K, K, dtype_name):
        signature = {}
        for name in kernel.arg_names:
            if name in constexprs:
                signature[name] = "constexpr"
            elif name in SCALARS:
                signature[name] = SCALARS[name]
            else:
                signature[name] = f"*{dtype_name}" if name in INPUTS else "*fp32"
        compiled = triton.compile(
            ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
            target=GPUTarget("cuda", 90, 32),
            options={"num_warps": warps, "num_stages": m.STAGES},
        )
        if compiled.metadata.shared > SM90_SHARED_BYTES:
            too_big[f"{kernel.__name__} {constexprs}"] = compiled.metadata.shared
    assert not too_big, f"K = {K}, {dtype_name}: shared memory above {SM90_SHARED_BYTES} bytes: {too_big}"
