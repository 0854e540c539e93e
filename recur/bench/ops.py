"""Op benchmarks: each form of a family against its naive loop and against peer
implementations from other libraries, in one process.

A family registers a case builder with `@register_op_bench("gla", shapes)`; `run_op_bench`
times forward and forward+backward of every form, then of every peer that runs here (the
`bench` extra installs them), and returns ratios to the naive form, each form's ratio to
the fastest peer computing the same thing, and the autograd memory. `render_section` makes
the family's section of an `<device>-ops.md` file and `write_section` puts it there.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..registry import Registry
from .measure import cuda_peak_bytes, load_average, saved_for_backward_bytes, time_call


@dataclass
class OpCase:
    """One form of an op on one input: `run()` returns the output tensor to backprop.

    computes: what the case computes ("per-head gate", "mLSTM"); a form's "vs fastest peer"
        ratio is taken against the peers that compute the same.
    peer: the distribution a peer implementation comes from ("fla-core"); None for recur's
        own forms.
    loop: a loop over time steps, skipped above `--max-naive-T` like the naive form.
    baseline: this row and the rows after it take their speed-ups against this row (the
        first row always starts a baseline): for a table of two ops of different cost.
    """

    form: str
    run: Callable[[], torch.Tensor]
    inputs: list[torch.Tensor]
    computes: str | None = None
    peer: str | None = None
    loop: bool = False
    baseline: bool = False


@dataclass(frozen=True)
class MissingPeer:
    """A peer that does not run here, and why (a note under the family's table)."""

    form: str
    reason: str


@dataclass(frozen=True)
class OpBench:
    """A family's benchmark: `build(T=, device=, dtype=)` returns its cases (and a
    `MissingPeer` for each peer that cannot run), the first one the baseline; `shapes` is
    one line saying what shapes and gates the cases use."""

    build: Callable[..., list[OpCase | MissingPeer]]
    shapes: str


@dataclass
class OpBenchRun:
    """What `run_op_bench` measured: one row per case and T, a note per peer that did not
    run, and the 1-minute load average at the start and end (None where unknown)."""

    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float] | None = None


OP_BENCHES: Registry[OpBench] = Registry("op benchmark")


def sdpa_case(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> OpCase:
    """torch's causal scaled-dot-product attention on the shapes of q, k, v [B, T, H, D]
    (leaves of its own, [B, H, T, D] as SDPA takes them): the softmax-attention reference
    of the GPU comparisons, a peer that computes something else."""
    import torch.nn.functional as F

    qs, ks, vs = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
    return OpCase(
        "torch SDPA causal", lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=True), [qs, ks, vs],
        computes="softmax attention", peer="torch",
    )


def load_peer(target: str) -> Callable:
    """The function `target` ("module:name") of a peer library. Raises whatever its import
    raises on this machine (ImportError where it is not installed); warnings it gives while
    importing (no GPU) are silenced."""
    module, _, name = target.partition(":")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(module), name)


def peer_case(
    form: str, target: str, distribution: str, make: Callable[[Callable], tuple[Callable, list[torch.Tensor]]],
    *, computes: str, loop: bool = False,
) -> OpCase | MissingPeer:
    """The case of the peer function `target` from `distribution`: `make(fn)` returns its
    `run` and its input leaves. A `MissingPeer` saying why where `target` does not import."""
    try:
        fn = load_peer(target)
    except ModuleNotFoundError as error:
        # the peer's own package missing, or one that it imports
        absent = error.name is not None and target.split(".")[0] == error.name.split(".")[0]
        why = f"{distribution} is not installed (pip install 'recur[bench]')" if absent else _one_line(error)
        return MissingPeer(form, why)
    except Exception as error:  # a peer may fail to import on this machine in any way
        return MissingPeer(form, f"{target} does not import here: {_one_line(error)}")
    run, inputs = make(fn)
    return OpCase(form, run, inputs, computes=computes, peer=distribution, loop=loop)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


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
) -> OpBenchRun:
    """Rows of {T, form, peer, computes, first_s, fwd_s, fwdbwd_s, memory_bytes, fwd_ratio,
    fwdbwd_ratio, vs_peer_fwd, vs_peer_fwdbwd, fastest_peer}, with a note for each peer that
    did not run. A peer that raises while running becomes a note; a form of recur that
    raises stops the run."""
    build = OP_BENCHES[family].build
    rows: list[dict] = []
    notes: list[str] = []
    load_start = load_average()

    def note(text: str) -> None:
        if text not in notes:
            notes.append(text)
            progress(f"{family}: {text}")

    for T in lengths:
        cases = build(T=T, device=device, dtype=dtype)
        baseline = {}
        measured = []
        for i, case in enumerate(cases):
            if isinstance(case, MissingPeer):
                note(f"{case.form}: {case.reason}")
                continue
            if (case.loop or case.form.startswith("naive")) and T > skip_baseline_above:
                progress(f"{family} T={T} {case.form}: skipped (T > {skip_baseline_above})")
                continue
            try:
                # the first call compiles kernels (Triton, on CUDA) and warms allocators
                first = time_call(_forward_backward(case), device, repeat=1, warmup=0)
            except Exception as error:
                if case.peer is None:
                    raise
                note(f"{case.form}: failed at T = {T}: {_one_line(error)}")
                continue
            with torch.no_grad():
                fwd = time_call(case.run, device, repeat=repeat)
            fwdbwd = time_call(_forward_backward(case), device, repeat=repeat)
            if device.type == "cuda":
                memory = cuda_peak_bytes(_forward_backward(case), device)
            else:
                memory = saved_for_backward_bytes(case.run)
            if i == 0 or case.baseline:
                baseline = {"fwd": fwd, "fwdbwd": fwdbwd}
            row = {
                "T": T, "form": case.form, "peer": case.peer, "computes": case.computes,
                "first_s": first, "fwd_s": fwd, "fwdbwd_s": fwdbwd, "memory_bytes": memory,
                "fwd_ratio": baseline["fwd"] / fwd if baseline else None,
                "fwdbwd_ratio": baseline["fwdbwd"] / fwdbwd if baseline else None,
                "vs_peer_fwd": None, "vs_peer_fwdbwd": None, "fastest_peer": None,
            }
            measured.append(row)
            progress(
                f"{family} T={T} {case.form}: first call {first:.2f} s, fwd {fwd * 1e3:.1f} ms, "
                f"fwd+bwd {fwdbwd * 1e3:.1f} ms, "
                f"memory {memory / 2**20:.1f} MiB"
            )
        _compare_with_peers(measured)
        for row in measured:
            if row["vs_peer_fwdbwd"] is not None:
                progress(
                    f"{family} T={T} {row['form']}: {row['vs_peer_fwd']:.2f}× (fwd), "
                    f"{row['vs_peer_fwdbwd']:.2f}× (fwd+bwd) the speed of {row['fastest_peer']}"
                )
        rows.extend(measured)
    load_end = load_average()
    load = (load_start, load_end) if load_start is not None and load_end is not None else None
    return OpBenchRun(rows, notes, load)


def _compare_with_peers(rows: list[dict]) -> None:
    """Sets each of recur's rows' speed relative to the fastest peer that computes the same
    (that peer's time over the row's: above 1, recur's form is faster)."""
    for row in rows:
        peers = [p for p in rows if p["peer"] is not None and p["computes"] == row["computes"]]
        if row["peer"] is not None or row["computes"] is None or not peers:
            continue
        fastest = min(peers, key=lambda p: p["fwdbwd_s"])
        row["vs_peer_fwd"] = min(p["fwd_s"] for p in peers) / row["fwd_s"]
        row["vs_peer_fwdbwd"] = fastest["fwdbwd_s"] / row["fwdbwd_s"]
        row["fastest_peer"] = fastest["form"]


def machine_description(device: torch.device, load: tuple[float, float] | None = None) -> str:
    if device.type == "cuda":
        try:
            import triton

            kernels = f", triton {triton.__version__}"
        except ImportError:
            kernels = ""
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}{kernels}"
    text = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if load is not None:
        text += f", load average {load[0]:.1f} at the start and {load[1]:.1f} at the end (1 minute; {os.cpu_count()} cores)"
    return text


def _versions(rows: list[dict]) -> str:
    found = []
    for distribution in dict.fromkeys(r["peer"] for r in rows if r.get("peer")):
        try:
            found.append(f"{distribution} {importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(distribution)
    return ", ".join(found)


def render_section(
    family: str, run: OpBenchRun | list[dict], device: torch.device, dtype: torch.dtype, command: str,
) -> str:
    """The family's section: its machine, command, table and notes, between markers that
    `write_section` finds again."""
    run = run if isinstance(run, OpBenchRun) else OpBenchRun(list(run))
    versions = _versions(run.rows)
    lines = [
        f"<!-- family:{family} -->",
        f"## {family}",
        "",
        f"Machine: {machine_description(device, run.load)}. dtype {str(dtype).removeprefix('torch.')}. "
        f"{OP_BENCHES[family].shapes}",
        f"Command: `{command}`. Ratios are the first form's time over each form's time, "
        "measured in the same process (higher is faster); \"vs fastest peer\" is the time of the fastest "
        "peer that computes the same over the form's time (above 1: recur's form is faster). Memory: "
        "bytes autograd saves for backward" + (" (peak allocated on CUDA)." if device.type == "cuda" else ".")
        + " First call: the first forward+backward, which includes kernel compilation."
        + (f" Peers: {versions}." if versions else ""),
        "",
        "| T | form | forward (ms) | fwd+bwd (ms) | speed-up fwd | speed-up fwd+bwd "
        "| vs fastest peer fwd | vs fastest peer fwd+bwd | memory (MiB) | first call (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run.rows:
        lines.append(
            f"| {r['T']} | {r['form']} | {r['fwd_s'] * 1e3:.1f} | {r['fwdbwd_s'] * 1e3:.1f} | "
            f"{_ratio(r['fwd_ratio'], 1)} | {_ratio(r['fwdbwd_ratio'], 1)} | {_versus(r, 'vs_peer_fwd')} | "
            f"{_versus(r, 'vs_peer_fwdbwd')} | {r['memory_bytes'] / 2**20:.1f} | {r['first_s']:.2f} |"
        )
    if run.notes:
        lines.append("")
        lines.extend(f"Not measured: {text}" + ("" if text.endswith(".") else ".") for text in run.notes)
    lines.append(f"<!-- end:{family} -->")
    return "\n".join(lines) + "\n"


def _ratio(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}×"


def _versus(row: dict, key: str) -> str:
    return "peer" if row.get("peer") else _ratio(row.get(key), 2)


def write_section(path: Path, family: str, section: str, title: str) -> None:
    """Replaces the family's section of the results file, keeping the other families'."""
    text = path.read_text() if path.exists() else f"# {title}\n\n"
    pattern = re.compile(rf"<!-- family:{re.escape(family)} -->.*?<!-- end:{re.escape(family)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
