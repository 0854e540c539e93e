"""The Triton kernels compiled ahead of time for an H100 (sm_90), without a device.

Every kernel of the GLA, delta-rule and mLSTM families (their kernels.py) compiles with the tiles,
warps and stages its launcher (their triton.py) uses and fits the 227 KiB of shared memory a
program may have there (a launch that asks for more fails). The machine code is then read with the CUDA tools Triton ships:
the whole-chunk GLA kernels must multiply on the tensor cores with warpgroup instructions
(HGMMA) and keep their registers without spilling, the two things that made the sub-chunk
kernels they replace slow.

Marked `slow` (run with `pytest -m slow`): compiling takes up to a minute per case on 2
CPU cores. Skipped where Triton has no CUDA backend with its tools.

`python tests/ops/test_triton_compile.py [gla|delta|mlstm]` prints, for every launch at
K = V = 128 in bfloat16, the registers, spilled bytes, shared memory and instruction counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from tests.helpers import load_kernel_module

triton = pytest.importorskip("triton")

pytestmark = pytest.mark.slow

SM90_SHARED_BYTES = 232448
# the launch modules: launch settings, and their kernels as `.kernels`
FAMILIES = {"gla": "recur.ops.gla.triton", "delta": "recur.ops.delta.triton", "mlstm": "recur.ops.mlstm.triton"}
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# pointers to tensors in the inputs' dtype; every other pointer is a float32 buffer
INPUTS = {
    "q_ptr", "k_ptr", "v_ptr", "beta_ptr", "g_ptr", "do_ptr", "o_ptr", "x_ptr", "y_ptr",
    "dq_ptr", "dk_ptr", "dv_ptr", "dbeta_ptr", "dg_ptr", "h_ptr", "dnum_ptr", "dx_ptr",
}
SCALARS = {"T": "i32", "T_pad": "i32", "NC": "i32", "scale": "fp32", "floor": "fp32", "eps": "fp32"}
INDEX_POINTERS = {"cu_ptr": "*i32", "last_ptr": "*i32"}


def load_compiled(name):
    """The launch module, its kernels loaded for compilation (not the interpreter)."""
    return load_kernel_module(name, interpret=False)


@pytest.fixture(scope="module")
def modules():
    from triton.backends import backends

    if "nvidia" not in backends:
        pytest.skip("Triton has no CUDA backend here")
    previous = os.environ.get("TRITON_INTERPRET")
    yield {family: load_compiled(name) for family, name in FAMILIES.items()}
    if previous is not None:
        os.environ["TRITON_INTERPRET"] = previous
        for name in FAMILIES.values():
            load_kernel_module(name)


def launch_precision(m, dtype_name):
    """The products' input precision the launcher `m` asks for with inputs of `dtype_name`."""
    import torch

    from recur.ops.common.launch import precision

    return precision(getattr(torch, DTYPES[dtype_name]), m.FLOAT32_PRODUCTS)


def delta_launches(m, K, V, dtype_name):
    """(kernel, constexprs, warps, stages) for every launch of a forward and backward, and
    of decoding."""
    from recur.ops.common.launch import pow2

    kernels = m.kernels
    precision = launch_precision(m, dtype_name)
    cfg = m._launch_config(K, V)
    common = dict(H=16, K=K, V=V, C=m.CHUNK)
    walk = dict(common, BK=cfg["BK"], BV=cfg["BV"], HAS_H0=True, VARLEN=False, PRECISION=precision)
    out = []
    for store_t in (False, True):
        out.append((kernels.prepare, dict(
            common, BK=cfg["BK"], BV=pow2(min(V, 2 * m.VALUE_TILE)), LOG2_C=m.CHUNK.bit_length() - 1,
            HAS_G=True, STORE_T=store_t, PRECISION=precision,
        ), m.WARPS["prepare"], m.STAGES))
    out.append((kernels.walk, dict(walk, OUTPUT=True, STORE_U=False, STORE_STATES=False, STORE_FINAL=True), m.WARPS["walk"], m.STAGES))
    out.append((kernels.walk, dict(walk, OUTPUT=False, STORE_U=True, STORE_STATES=True, STORE_FINAL=False), m.WARPS["walk"], m.STAGES))
    out.append((kernels.walk, dict(
        walk, OUTPUT=True, STORE_U=False, STORE_STATES=False, STORE_FINAL=True, VARLEN=True,
    ), m.WARPS["walk"], m.STAGES))
    for intra_given, varlen in ((False, False), (True, False), (False, True)):
        out.append((kernels.reverse_walk, dict(
            common, BK=cfg["BK"], BV=cfg["BV"], HAS_DHT=True, INTRA_GIVEN=intra_given, VARLEN=varlen,
            PRECISION=precision,
        ), m.WARPS["walk"], m.STAGES))
    per_chunk = dict(common, BK=cfg["BK"], BV=cfg["BV"], PRECISION=precision)
    out.append((kernels.outputs, per_chunk, m.WARPS["gradient"], m.STAGES))
    out.append((kernels.intra_gradient, per_chunk, m.WARPS["gradient"], m.STAGES))
    out.append((kernels.gradient_values, dict(common, BK=cfg["BK"], BV=cfg["BV"], PRECISION=precision), m.WARPS["gradient"], m.STAGES))
    keys = dict(H=16, K=K, C=m.CHUNK, BK=pow2(min(K, m.KEY_BLOCK)), HAS_G=True, PRECISION=precision)
    out.append((kernels.gradient_keys, keys, m.WARPS["gradient"], m.STAGES))
    out.append((kernels.recurrent, dict(
        H=16, K=K, V=V, BK=pow2(K, 1), BV=min(pow2(V, 1), 32), HAS_G=True, HAS_H0=True, STORE_FINAL=True, VARLEN=True,
    ), 4, 3))
    return out


def gla_launches(m, K, V, dtype_name, scalar_gate=False):
    """(kernel, constexprs, warps, stages) for every launch of a forward and backward, and
    of decoding."""
    from recur.ops.common.launch import pow2

    kernels = m.kernels
    precision = launch_precision(m, dtype_name)
    cfg = m._launch_config(K, V)
    gates = dict(SCALAR_GATE=scalar_gate, HAS_SIGN=scalar_gate)
    chunk = dict(H=16, K=K, V=V, C=m.CHUNK, KP=cfg["KP"], PRECISION=precision, **gates)
    out = [(kernels.gate_cumsum, dict(
        H=16, KG=1 if scalar_gate else K, BKG=1 if scalar_gate else cfg["KP"], C=m.CHUNK, HAS_G=True, HAS_SIGN=scalar_gate,
    ), 4, 1)]
    for reverse, varlen in ((False, False), (True, False), (False, True)):
        out.append((kernels.chunk_states, dict(
            H=16, K=K, V=V, BK=cfg["BKS"], BV=cfg["BVS"], C=m.CHUNK, REVERSE=reverse, HAS_H0=True,
            STORE_FINAL=True, VARLEN=varlen, PRECISION=precision, **gates,
        ), m.WARPS["states"], m.STAGES["packed_states" if varlen else "states"]))
    out.append((kernels.chunk_outputs, dict(
        chunk, BK=cfg["BK"], BV=cfg["BV"], BKD=cfg["BKD"], c=m.SUB_CHUNK,
    ), m.WARPS["output"], m.STAGES["output"]))
    for varlen in (False, True):
        out.append((kernels.chunk_backward, dict(
            chunk, BK=cfg["BK"], BV=cfg["BV"], BKD=cfg["BKD"], c=m.SUB_CHUNK, NEED_DG=True, VARLEN=varlen,
        ), m.WARPS["backward"], m.STAGES["backward"]))
    out.append((kernels.chunk_values_backward, dict(
        chunk, BK=cfg["BK"], BV=cfg["BVD"], BKD=cfg["BKD"], c=m.SUB_CHUNK,
    ), m.WARPS["values"], m.STAGES["values"]))
    out.append((kernels.recurrent, dict(
        H=16, K=K, V=V, BK=pow2(K, 1), BV=min(pow2(V, 1), 64), HAS_G=True, SCALAR_GATE=scalar_gate, HAS_SIGN=scalar_gate,
        HAS_H0=True, STORE_FINAL=True, VARLEN=True,
    ), 4, 3))
    return out


def mlstm_launches(m, K, V, dtype_name):
    """(kernel, constexprs, warps, stages) for every launch of a forward and backward, both
    input gates."""
    kernels = m.kernels
    cfg = m._launch_config(K, V)
    common = dict(H=16, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], L=cfg["L"], BT=cfg["BT"], PRECISION=launch_precision(m, dtype_name))
    out = []
    for stabilise in (True, False):
        out.append((kernels.chunk_states, dict(common, STABILISE=stabilise, HAS_H0=True), m.WARPS["states"], m.STAGES))
        out.append((kernels.chunk_outputs, dict(common, STABILISE=stabilise), m.WARPS["outputs"], m.STAGES))
    out.append((kernels.reverse_states, dict(common, HAS_DHT=True), m.WARPS["gradients"], m.STAGES))
    out.append((kernels.query_gradients, common, m.WARPS["gradients"], m.STAGES))
    for values in (False, True):
        out.append((kernels.key_gradients, dict(common, VALUES=values), m.WARPS["gradients"], m.STAGES))
    return out


LAUNCHES = {"delta": delta_launches, "gla": gla_launches, "mlstm": mlstm_launches}


def compile_sm90(kernel, constexprs, warps, stages, dtype_name):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in SCALARS:
            signature[name] = SCALARS[name]
        elif name in INDEX_POINTERS:
            signature[name] = INDEX_POINTERS[name]
        else:
            signature[name] = f"*{dtype_name}" if name in INPUTS else "*fp32"
    return triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "num_stages": stages},
    )


def machine_code(compiled) -> dict:
    """Registers and spilled bytes per thread (cuobjdump) and instruction counts (nvdisasm)."""
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", path], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([os.path.join(tools, "nvdisasm"), path], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split(":", 1) for item in usage.split() if ":" in item and item.split(":", 1)[1].isdigit())
    return {
        "registers": int(fields["REG"]),
        "spilled_bytes": int(fields["STACK"]),
        "shared_bytes": compiled.metadata.shared,
        "HGMMA": sass.count("HGMMA"),
        "HMMA": sass.count("HMMA"),
        "spill_loads": sass.count("LDL"),
    }


def has_tools() -> bool:
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    return all(os.path.exists(os.path.join(tools, t)) for t in ("cuobjdump", "nvdisasm"))


@pytest.mark.parametrize("family", ["delta", "gla", "mlstm"])
@pytest.mark.parametrize("K, dtype_name", [(128, "fp32"), (128, "bf16"), (256, "fp32"), (256, "bf16")])
def test_kernels_compile_and_fit_an_h100(modules, family, K, dtype_name):
    m = modules[family]
    launches = LAUNCHES[family](m, K, K, dtype_name)
    too_big = {}
    for kernel, constexprs, warps, stages in launches:
        compiled = compile_sm90(kernel, constexprs, warps, stages, dtype_name)
        if compiled.metadata.shared > SM90_SHARED_BYTES:
            too_big[f"{kernel.__name__} {constexprs}"] = compiled.metadata.shared
    assert not too_big, f"K = {K}, {dtype_name}: shared memory above {SM90_SHARED_BYTES} bytes: {too_big}"


@pytest.mark.parametrize("scalar_gate", [False, True])
def test_gla_whole_chunk_kernels_use_warpgroup_products_without_spills(modules, scalar_gate):
    """bfloat16, K = V = 128. With per-channel gates the backward's sub-chunk path (strong
    decays) lives in the same kernel and is allowed to spill; per-head gates have none."""
    if not has_tools():
        pytest.skip("Triton ships no cuobjdump/nvdisasm here")
    m = modules["gla"]
    for kernel, constexprs, warps, stages in gla_launches(m, 128, 128, "bf16", scalar_gate):
        name = kernel.__name__
        if name not in ("chunk_outputs", "chunk_backward", "chunk_values_backward"):
            continue
        code = machine_code(compile_sm90(kernel, constexprs, warps, stages, "bf16"))
        assert code["HGMMA"] > 0, f"{name}: no warpgroup matrix products: {code}"
        if scalar_gate or name != "chunk_backward":
            assert code["spilled_bytes"] == 0, f"{name}: spills registers: {code}"


def main(families) -> None:
    for family in families:
        m = load_compiled(FAMILIES[family])
        launches = LAUNCHES[family](m, 128, 128, "bf16")
        for kernel, constexprs, warps, stages in launches:
            code = machine_code(compile_sm90(kernel, constexprs, warps, stages, "bf16"))
            print(f"{family:6} {kernel.__name__:32} warps {warps} stages {stages} {code}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(FAMILIES))
