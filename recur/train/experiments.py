"""Several runs, one table: seeds of one configuration, and sweeps over a grid of overrides.

`run_seeds(config, seeds, run_dir)` trains `seeds` runs that differ only in `train.seed`
(`resume=True` continues the folder's seeds: a finished one is read back, a stopped one
continues from its checkpoint, a missing one starts); `run_sweep(config, grid, seeds,
run_dir)` does that for every combination of a grid of
dotted overrides. Each writes a table (Markdown and JSON: mean ± sample standard
deviation over the seeds of the validation and test figures, with every run listed) and
a plot. A sweep chooses its configuration by the validation mean alone and reports that
configuration's test figures beside it: the test split never takes part in a choice.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import RunConfig, apply_overrides, check_resume, from_dict, to_dict
from .loop import NothingToResume, TrainResult, train


@dataclass
class Row:
    """One configuration over its seeds."""

    name: str
    overrides: dict[str, str]
    runs: list[dict[str, Any]] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [run["metrics"][key] for run in self.runs if key in run["metrics"]]

    def mean_std(self, key: str) -> tuple[float, float]:
        values = self.values(key)
        if not values:
            return math.nan, math.nan
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class Table:
    """The rows of a seeds run or a sweep, what they measured and how to make them again."""

    metric: str
    test_metric: str
    higher_is_better: bool
    command: str
    rows: list[Row]

    def chosen(self) -> Row:
        """The row with the best validation mean (the only figure a choice may read)."""
        def key(row: Row) -> float:
            mean = row.mean_std(self.metric)[0]
            return -math.inf if math.isnan(mean) else (mean if self.higher_is_better else -mean)

        return max(self.rows, key=key)


def _run_record(result: TrainResult, seed: int) -> dict[str, Any]:
    return {
        "seed": seed, "metrics": result.metrics, "steps": result.steps, "chosen_step": result.chosen_step,
        "stopped_early": result.stopped_early, "seconds": round(result.seconds, 1),
        "parameters": result.num_parameters, "state_bytes": result.state_size,
    }


def _finished_record(config: RunConfig, folder: Path, seed: int) -> dict[str, Any]:
    """The record of a finished run read back from its folder, after checking that the
    folder trained `config` (changed at most where a resume may change it)."""
    saved = from_dict(json.loads((folder / "config.json").read_text()))
    check_resume(saved, config, str(folder / "config.json"))
    result = json.loads((folder / "result.json").read_text())
    return {
        "seed": seed, "metrics": result["metrics"], "steps": result["steps"], "chosen_step": result["chosen_step"],
        "stopped_early": result["stopped_early"], "seconds": result["seconds"],
        "parameters": result["parameters"], "state_bytes": result["state_bytes_per_sequence"],
    }


def run_seeds(
    config: RunConfig, seeds: int, run_dir: Path | None, progress: bool = True,
    on_run: Callable[[int, dict[str, Any]], None] | None = None, resume: bool = False,
) -> list[dict[str, Any]]:
    """`seeds` runs of `config` with train.seed, train.seed + 1, …; one record per run.
    `resume=True` continues a folder a stopped call left: each seed's run is read back when
    it finished, continued from its newest checkpoint when it stopped, started when absent."""
    if not isinstance(seeds, int) or seeds <= 0:
        raise ValueError(f"seeds must be a positive int; got {seeds!r}")
    if resume and run_dir is None:
        raise ValueError("resume=True needs run_dir (the folder of the seeds to continue)")
    records = []
    for i in range(seeds):
        seed = config.train.seed + i
        run_config = replace(config, train=replace(config.train, seed=seed))
        folder = None if run_dir is None else run_dir / f"seed_{seed}"
        started = resume and folder.is_dir() and any(folder.iterdir())
        try:
            record = _run_record(train(run_config, folder, resume=started, progress=progress), seed)
        except NothingToResume:
            record = _finished_record(run_config, folder, seed)
        records.append(record)
        if on_run is not None:
            on_run(seed, record)
    return records


def seeds_config(run_dir: Path, overrides: dict[str, Any] | list[tuple[str, Any]] | None = None) -> tuple[RunConfig, int]:
    """The config of the seeds in `run_dir` (its lowest seed's, with `overrides` a resume may
    make) and how many seed folders it holds; a ValueError when it holds none."""
    from .loop import saved_config

    found = sorted(
        int(path.name.removeprefix("seed_")) for path in run_dir.glob("seed_*")
        if path.is_dir() and path.name.removeprefix("seed_").isdigit()
    )
    if not found:
        raise ValueError(f"{run_dir} holds no seed_<N> folders to continue")
    config = saved_config(run_dir / f"seed_{found[0]}", overrides)
    return config, len(found)


def grid_combinations(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, in order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def run_sweep(
    config: RunConfig, grid: dict[str, list[str]], seeds: int, run_dir: Path | None, command: str,
    progress: bool = True,
) -> Table:
    """Every combination of `grid` (dotted overrides of `config`) over `seeds` seeds."""
    combinations = grid_combinations(grid)
    # every combination is checked before any run starts
    configs = [apply_overrides(config, combo) for combo in combinations]
    rows = []
    for combo, run_config in zip(combinations, configs, strict=True):
        name = ", ".join(f"{k}={v}" for k, v in combo.items()) or "(recipe)"
        folder = None if run_dir is None else run_dir / _folder_name(combo)
        rows.append(Row(name, combo, run_seeds(run_config, seeds, folder, progress)))
    return _table(config, command, rows)


def seeds_table(config: RunConfig, records: list[dict[str, Any]], command: str) -> Table:
    return _table(config, command, [Row("(recipe)", {}, records)])


def _table(config: RunConfig, command: str, rows: list[Row]) -> Table:
    from ..tasks import get_task

    task = get_task(config.task_name)
    test_metric = "test/" + task.metric.split("/", 1)[1]
    return Table(task.metric, test_metric, task.higher_is_better, command, rows)


def _folder_name(combo: dict[str, str]) -> str:
    text = "_".join(f"{k.split('.')[-1]}={v}" for k, v in combo.items()) or "recipe"
    return "".join(c if c.isalnum() or c in "=._-" else "-" for c in text)


def _fmt(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def render_markdown(table: Table, title: str) -> str:
    """The table: one row per configuration (mean ± std over seeds), the chosen one marked,
    then every run."""
    better = "higher" if table.higher_is_better else "lower"
    # the same figure on the task's extra test splits (test_1024/accuracy, ...), in the runs' order
    extra = list(dict.fromkeys(
        key for row in table.rows for run in row.runs for key in run["metrics"]
        if key.startswith("test_") and key.split("/", 1)[1] == table.metric.split("/", 1)[1]
    ))
    extra_header, extra_rule = "".join(f" {key} |" for key in extra), "---:|" * len(extra)
    lines = [
        f"# {title}", "",
        f"Command: `{table.command}`", "",
        f"Mean ± sample standard deviation over seeds. The configuration is chosen by `{table.metric}` "
        f"({better} is better) alone; `{table.test_metric}` is read once per run, at its end, on the weights "
        "its validation figures chose.", "",
        f"| configuration | seeds | {table.metric} | {table.test_metric} |{extra_header} steps | seconds |",
        "|---|---:|---:|---:|" + extra_rule + "---:|---:|",
    ]
    chosen = table.chosen() if len(table.rows) > 1 else None
    for row in table.rows:
        steps = statistics.fmean(r["steps"] for r in row.runs)
        seconds = statistics.fmean(r["seconds"] for r in row.runs)
        mark = " **(chosen by validation)**" if row is chosen else ""
        lines.append(
            f"| {row.name}{mark} | {len(row.runs)} | {_fmt(*row.mean_std(table.metric))} | "
            f"{_fmt(*row.mean_std(table.test_metric))} |{''.join(f' {_fmt(*row.mean_std(key))} |' for key in extra)}"
            f" {steps:.0f} | {seconds:.0f} |"
        )
    lines += ["", "Every run:", "",
              f"| configuration | seed | {table.metric} | {table.test_metric} |{extra_header} chosen step | steps |",
              "|---|---:|---:|---:|" + extra_rule + "---:|---:|"]
    for row in table.rows:
        for run in row.runs:
            metrics = run["metrics"]
            lines.append(
                f"| {row.name} | {run['seed']} | {metrics.get(table.metric, math.nan):.4f} | "
                f"{metrics.get(table.test_metric, math.nan):.4f} |"
                f"{''.join(f' {metrics.get(key, math.nan):.4f} |' for key in extra)}"
                f" {run['chosen_step']} | {run['steps']} |"
            )
    return "\n".join(lines) + "\n"


def render_json(table: Table, config: RunConfig) -> dict[str, Any]:
    return {
        "command": table.command, "metric": table.metric, "test_metric": table.test_metric,
        "higher_is_better": table.higher_is_better, "config": to_dict(config),
        "chosen": table.chosen().name if len(table.rows) > 1 else None,
        "rows": [
            {
                "configuration": row.name, "overrides": row.overrides,
                "val_mean_std": row.mean_std(table.metric), "test_mean_std": row.mean_std(table.test_metric),
                "runs": row.runs,
            }
            for row in table.rows
        ],
    }


def plot_table(table: Table, path: Path) -> Path:
    """Every run's validation and test figure per configuration, with the means."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'recur[plot]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(table.rows) + 2), 4))
    for offset, key, color in ((-0.15, table.metric, "tab:blue"), (0.15, table.test_metric, "tab:orange")):
        for i, row in enumerate(table.rows):
            values = row.values(key)
            ax.scatter([i + offset] * len(values), values, color=color, s=18, alpha=0.7,
                       label=key if i == 0 else None)
            if values:
                mean, std = row.mean_std(key)
                ax.errorbar(i + offset, mean, yerr=std, color=color, fmt="_", ms=16, capsize=4)
    ax.set_xticks(range(len(table.rows)), [row.name for row in table.rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(table.metric.split("/", 1)[1])
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_table(table: Table, config: RunConfig, folder: Path, name: str, title: str) -> list[Path]:
    """<name>.md, <name>.json and (with matplotlib) <name>.png in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / f"{name}.md", folder / f"{name}.json"]
    written[0].write_text(render_markdown(table, title))
    written[1].write_text(json.dumps(render_json(table, config), indent=2))
    try:
        written.append(plot_table(table, folder / f"{name}.png"))
    except ImportError:
        pass
    return written

