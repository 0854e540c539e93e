"""Associative recall against state size: causal mixers trained on Zoology's MQAR.

Zoology (Arora et al., arXiv:2312.04927) compares sequence mixers by MQAR accuracy at a
given size of recurrent state. `run_recall_bench` trains the `recall` recipe (the
task's faithful setting: vocabulary 1024, length 256, 16 key-value pairs; two layers of
one mixer, no MLP) for every requested mixer, at the given widths or at the width whose
state comes closest to a byte budget, over several seeds, under the evaluation protocol
(validation for the stopping and the choice of weights, test once at the end).
`render_recall` writes the table (mean ± std over seeds) and `plot_recall` draws test
accuracy against bytes of state. Results are kept in a JSON file beside the table, keyed
by mixer and width, so a rerun of some mixers replaces their rows and keeps the others.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

# the widths `match_state` chooses among
CANDIDATE_WIDTHS = (16, 32, 48, 64, 96, 128, 192, 256)


@dataclass
class RecallResult:
    mixer: str
    d_model: int
    # bytes of recurrent state per sequence, all layers; a growing cache at the task's length
    state_bytes: int
    growing_state: bool
    parameters: int
    # one entry per seed: {"seed", "val", "test", "steps", "chosen_step", "seconds"}
    runs: list[dict] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.mixer}@{self.d_model}"

    def mean_std(self, split: str) -> tuple[float, float]:
        values = [run[split] for run in self.runs]
        if not values:
            return math.nan, math.nan
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    @property
    def seconds(self) -> float:
        return sum(run["seconds"] for run in self.runs)


def causal_mixers() -> list[str]:
    """Registered mixers that can run a causal language model (all but bidirectional wrappers)."""
    from ..layers import MIXERS

    return sorted(name for name, cls in MIXERS.items() if cls.causal)


def _config(mixer: str, d_model: int, overrides: dict):
    from ..recipes import recipe

    # an unknown mixer or a width the mixer cannot take fails here, before any training
    return recipe("recall", {"model.mixer": mixer, "model.d_model": d_model, **overrides})


def state_bytes(mixer: str, d_model: int) -> tuple[int, bool]:
    """(bytes of state per sequence of the recipe's model, whether it grows with length)."""
    from ..layers import MIXERS
    from ..models import LM

    config = _config(mixer, d_model, {})
    model = LM(config.model)
    growing = not MIXERS[mixer].constant_state
    per_token = 1 if not growing else config.task.seq_len
    return model.state_size() * per_token, growing


def match_state(mixer: str, budget: int) -> int:
    """The width among CANDIDATE_WIDTHS whose state is closest to `budget` bytes (in ratio)."""
    best, best_gap = None, math.inf
    for width in CANDIDATE_WIDTHS:
        try:
            size, _ = state_bytes(mixer, width)
        except ValueError:
            # a width the mixer's heads do not divide
            continue
        gap = abs(math.log(size / budget))
        if gap < best_gap:
            best, best_gap = width, gap
    if best is None:
        raise ValueError(f"no width in {list(CANDIDATE_WIDTHS)} builds mixer {mixer!r}")
    return best


def recall_run(mixer: str, d_model: int, seed: int, overrides: dict) -> dict:
    """One run of the `recall` recipe with `mixer` at width `d_model` and train.seed `seed`."""
    from ..train import train

    config = _config(mixer, d_model, {**overrides, "train.seed": seed})
    result = train(config, progress=False)
    return {
        "seed": seed, "val": result.metrics["val/accuracy"], "test": result.metrics["test/accuracy"],
        "steps": result.steps, "chosen_step": result.chosen_step, "seconds": round(result.seconds, 1),
        "parameters": result.num_parameters,
    }


def load_results(path: Path) -> dict[str, RecallResult]:
    if not path.exists():
        return {}
    rows = [RecallResult(**row) for row in json.loads(path.read_text())]
    return {row.key: row for row in rows}


def save_results(path: Path, results: dict[str, RecallResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in sorted(results.values(), key=lambda r: (r.mixer, r.d_model))], indent=1) + "\n")
    tmp.replace(path)


def run_recall_bench(
    jobs: Iterable[tuple[str, int]],
    seeds: int,
    overrides: dict,
    data_path: Path,
    workers: int = 1,
    progress: Callable[[str], None] = print,
) -> dict[str, RecallResult]:
    """Trains every (mixer, width) job over `seeds` seeds (train.seed 0, 1, …), `workers`
    runs at a time in separate processes; each row is saved once its seeds are done."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    results = load_results(data_path)
    rows: dict[str, RecallResult] = {}
    for mixer, d_model in jobs:
        size, growing = state_bytes(mixer, d_model)
        row = RecallResult(mixer=mixer, d_model=d_model, state_bytes=size, growing_state=growing, parameters=0)
        rows[row.key] = row
    runs = [(row, seed) for row in rows.values() for seed in range(seeds)]
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="recall", unit="run", dynamic_ncols=True)
    except ImportError:
        bar = None
    # spawned workers: each run starts from a fresh interpreter, as a single run would
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending = {pool.submit(recall_run, row.mixer, row.d_model, seed, overrides): row for row, seed in runs}
        for future in as_completed(pending):
            row, record = pending[future], future.result()
            row.parameters = record.pop("parameters")
            row.runs.append(record)
            row.runs.sort(key=lambda run: run["seed"])
            if bar is not None:
                bar.update(1)
            if len(row.runs) == seeds:
                results[row.key] = row
                save_results(data_path, results)
                val, test = row.mean_std("val"), row.mean_std("test")
                progress(
                    f"{row.mixer} d_model {row.d_model}: val {val[0]:.3f} ± {val[1]:.3f}, test {test[0]:.3f} ± "
                    f"{test[1]:.3f}, state {row.state_bytes} B, {row.seconds:.0f} s"
                )
    if bar is not None:
        bar.close()
    return results


def render_recall(results: dict[str, RecallResult], command: str, overrides: dict) -> str:
    from ..recipes import recipe

    config = recipe("recall", overrides)
    task, train = config.task, config.train
    total = sum(r.seconds for r in results.values())
    lines = [
        "# Associative recall (MQAR) against state size",
        "",
        f"Task: MQAR as Zoology defines it (arXiv:2312.04927; `benchmarks/published.md`): vocabulary "
        f"{task.vocab_size}, length {task.seq_len}, {task.num_kv_pairs} key-value pairs, keys and values from "
        "disjoint halves of the vocabulary, each key queried once more at a power-law distance, loss and "
        f"accuracy on the answers only; {task.eval_examples} validation and {task.eval_examples} test "
        f"sequences, disjoint from training and from each other (chance {2 / task.vocab_size:.4f}).",
        f"Model: the `recall` recipe, {config.model.n_layers} layers of one mixer with its default options, "
        f"{'no MLP' if config.model.mlp_ratio == 0 else f'SwiGLU MLPs ({config.model.mlp_ratio})'}; AdamW lr "
        f"{train.lr}, batch {train.batch_size}, warmup {train.warmup_steps}, cosine decay over {train.steps} "
        f"steps, stop once validation accuracy reaches {train.target}; the weights of the best validation "
        "evaluation are tested once, at the end.",
        "State: bytes per sequence over all layers (float32); attention's key-value cache is "
        f"counted at length {task.seq_len}.",
        f"Machine: {platform.machine()}, 2 cores shared with other jobs, 1 thread per run, torch "
        f"{torch.__version__}. Compute: {total / 3600:.1f} CPU-hours for the rows below.",
        f"Command: `{command}`.",
        "",
        "Mean ± sample standard deviation over seeds. Rows are ordered by state size.",
        "",
        "| mixer | d_model | state (KiB) | seeds | val accuracy | test accuracy | steps | seconds per run | parameters |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results.values(), key=lambda r: (r.state_bytes, r.mixer)):
        growing = " (cache)" if r.growing_state else ""
        val, test = r.mean_std("val"), r.mean_std("test")
        steps = statistics.fmean(run["steps"] for run in r.runs)
        lines.append(
            f"| {r.mixer} | {r.d_model} | {r.state_bytes / 1024:.1f}{growing} | {len(r.runs)} | "
            f"{val[0]:.3f} ± {val[1]:.3f} | {test[0]:.3f} ± {test[1]:.3f} | {steps:.0f} | "
            f"{r.seconds / max(len(r.runs), 1):.0f} | {r.parameters:,} |"
        )
    return "\n".join(lines) + "\n"


def plot_recall(results: dict[str, RecallResult], path: Path) -> Path:
    """Test accuracy (mean ± std over seeds) against bytes of state, one point per row."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'recur[plot]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in sorted(results.values(), key=lambda r: r.state_bytes):
        mean, std = r.mean_std("test")
        ax.errorbar(r.state_bytes, mean, yerr=std, fmt="o", ms=5, capsize=3)
        ax.annotate(r.mixer, (r.state_bytes, mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="bytes of recurrent state per sequence", ylabel="test accuracy", title="MQAR recall against state size")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
