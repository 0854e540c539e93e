"""Op benchmarks: each form of a family against its naive loop, in one process.

A family registers a case builder with `@register_op_bench("gla", shapes)`; `run_op_bench`
times forward and forward+backward of every form and writes ratios to the naive form
(and the autograd memory) into the family's section of `benchmarks/<device>-ops.md`.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..registry import Registry
from .measure import cuda_peak_bytes, saved_for_backward_bytes, time_call


@dataclass
class OpCase:
    """One form of an op on one input: `run()` returns the output tensor to backprop."""

    form: str
    run: Callable[[], torch.Tensor]
    inputs: list[torch.Tensor]


@dataclass(frozen=True)
class OpBench:
    """A family's benchmark: `build(T=, device=, dtype=)` returns its cases, the first one
    the baseline; `shapes` is one line saying what shapes and gates the cases use."""

    build: Callable[..., list[OpCase]]
    shapes: str


OP_BENCHES: Registry[OpBench] = Registry("op benchmark")


def sdpa_case(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> OpCase:
    """torch's causal scaled-dot-product attention on the shapes of q, k, v [B, T, H, D]
    (leaves of its own, [B, H, T, D] as SDPA takes them): the softmax-attention reference
    of the GPU comparisons."""
    import torch.nn.functional as F

    qs, ks, vs = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
    return OpCase("torch SDPA causal", lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=True), [qs, ks, vs])


def register_op_bench(family: str, shapes: str):
    """Decorator on a case builder: `@register_op_bench("gla", "B=4, H=16, ...")`."""

    def decorate(build):
        OP_BENCHES.register(family, OpBench(build, shapes))
        return build

    return decorate


def _forward_backward(case: OpCase) -> Callable[[], None]:
    def run():
        for x in case.inputs:
            x.grad = None
        case.run().float().sum().backward()

    return run


def run_op_bench(
    family: str,
    lengths: list[int],
    device: torch.device,
    dtype: torch.dtype,
    repeat: int,
    skip_baseline_above: int,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """Rows of {T, form, fwd_s, fwdbwd_s, memory_bytes, fwd_ratio, fwdbwd_ratio}."""
    build = OP_BENCHES[family].build
    rows = []
    for T in lengths:
        cases = build(T=T, device=device, dtype=dtype)
        baseline = {}
        for i, case in enumerate(cases):
            if case.form.startswith("naive") and T > skip_baseline_above:
                progress(f"{family} T={T} {case.form}: skipped (T > {skip_baseline_above})")
                continue
            # the first call compiles kernels (Triton, on CUDA) and warms allocators
            first = time_call(_forward_backward(case), device, repeat=1, warmup=0)
            with torch.no_grad():
                fwd = time_call(case.run, device, repeat=repeat)
            fwdbwd = time_call(_forward_backward(case), device, repeat=repeat)
            if device.type == "cuda":
                memory = cuda_peak_bytes(_forward_backward(case), device)
            else:
                memory = saved_for_backward_bytes(case.run)
            if i == 0:
                baseline = {"fwd": fwd, "fwdbwd": fwdbwd}
            row = {
                "T": T, "form": case.form, "first_s": first, "fwd_s": fwd, "fwdbwd_s": fwdbwd, "memory_bytes": memory,
                "fwd_ratio": baseline["fwd"] / fwd if baseline else None,
                "fwdbwd_ratio": baseline["fwdbwd"] / fwdbwd if baseline else None,
            }
            rows.append(row)
            progress(
                f"{family} T={T} {case.form}: first call {first:.2f} s, fwd {fwd * 1e3:.1f} ms, "
                f"fwd+bwd {fwdbwd * 1e3:.1f} ms, "
                f"memory {memory / 2**20:.1f} MiB"
            )
    return rows


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        try:
            import triton

            kernels = f", triton {triton.__version__}"
        except ImportError:
            kernels = ""
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}{kernels}"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )


def render_section(family: str, rows: list[dict], device: torch.device, dtype: torch.dtype, command: str) -> str:
    lines = [
        f"<!-- family:{family} -->",
        f"## {family}",
        "",
        f"Machine: {machine_description(device)}. dtype {str(dtype).removeprefix('torch.')}. "
        f"{OP_BENCHES[family].shapes}",
        f"Command: `{command}`. Ratios are the first form's time over each form's time, "
        "measured in the same process (higher is faster). Memory: bytes autograd saves for "
        "backward" + (" (peak allocated on CUDA)." if device.type == "cuda" else ".")
        + " First call: the first forward+backward, which includes kernel compilation.",
        "",
        "| T | form | forward (ms) | fwd+bwd (ms) | speed-up fwd | speed-up fwd+bwd | memory (MiB) | first call (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = lambda x: "—" if x is None else f"{x:.1f}×"  # noqa: E731
        lines.append(
            f"| {r['T']} | {r['form']} | {r['fwd_s'] * 1e3:.1f} | {r['fwdbwd_s'] * 1e3:.1f} | "
            f"{ratio(r['fwd_ratio'])} | {ratio(r['fwdbwd_ratio'])} | {r['memory_bytes'] / 2**20:.1f} | "
            f"{r['first_s']:.2f} |"
        )
    lines.append(f"<!-- end:{family} -->")
    return "\n".join(lines) + "\n"


def write_section(path: Path, family: str, section: str, title: str) -> None:
    """Replaces the family's section of the results file, keeping the other families'."""
    text = path.read_text() if path.exists() else f"# {title}\n\n"
    pattern = re.compile(rf"<!-- family:{re.escape(family)} -->.*?<!-- end:{re.escape(family)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
