"""Model benchmarks: whole models of a recipe, one mixer at a time, in one process.

Each model is the one `recur train --recipe R --model.mixer M` trains: the recipe's config
with the mixer (and the model's own overrides) applied, built by the training code and fed
one batch of the task's training split. `run_model_bench` times forward+backward of the
training loss (one warm-up call, then the median of `repeat`) and measures the activations
autograd saves for backward; `render_models` writes the markdown table, each row's speed
taken against the first model at the same settings.

A model is written `MIXER[:KEY=VALUE]...`: a KEY without a dot is an option of the mixer
(`plstm:mode=P` sets model.mixer_options.plstm.mode), a dotted KEY any run override
(`vit_attention:input.position_embedding=true`, the ViT baseline).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..registry import did_you_mean
from .measure import load_average, saved_for_backward_bytes, time_calls
from .ops import machine_description

# one --set combination: the (key, value) overrides it applies
Setting = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ModelSpec:
    """One model of the benchmark: its label as written, its mixer and its own overrides."""

    label: str
    mixer: str
    overrides: tuple[tuple[str, str], ...] = ()


@dataclass
class ModelBenchRun:
    """What `run_model_bench` measured: one row per setting and model, what one example is
    ("images", "sequences"), the keys the settings set, and the 1-minute load average at the
    start and end (None where unknown)."""

    recipe: str
    rows: list[dict]
    unit: str
    keys: list[str]
    load: tuple[float, float] | None = None


def parse_model(item: str) -> ModelSpec:
    """`MIXER[:KEY=VALUE]...` as a ModelSpec; a ValueError naming --mixers where the mixer is
    unknown or an override is not KEY=VALUE."""
    from ..layers import MIXERS
    from ..layers.grid import GRID_MIXERS

    mixer, *options = item.split(":")
    known = {*MIXERS, *GRID_MIXERS}
    if mixer not in known:
        raise ValueError(f"--mixers: unknown mixer {mixer!r}{did_you_mean(mixer, known)} Known: {sorted(MIXERS)}; "
                         f"grid mixers: {sorted(GRID_MIXERS)}")
    overrides = []
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--mixers {item}: expected MIXER[:KEY=VALUE]...; got {option!r} after the mixer")
        overrides.append((key if "." in key else f"model.mixer_options.{mixer}.{key}", value))
    return ModelSpec(item, mixer, tuple(overrides))


def parse_settings(items: list[str]) -> list[Setting]:
    """Every combination of the values of `KEY=V1,V2,...` items (the first key varies
    slowest); one empty combination when there are none."""
    keys, values = [], []
    for item in items:
        key, sep, listed = item.partition("=")
        choices = [v for v in listed.split(",") if v]
        if not sep or not key or not choices:
            raise ValueError(f"--set takes KEY=V1,V2,...; got {item!r}")
        keys.append(key.removeprefix("--"))
        values.append(choices)
    return [tuple(zip(keys, combination, strict=True)) for combination in itertools.product(*values)]


def model_config(recipe_name: str, spec: ModelSpec, setting: Setting = ()):
    """The RunConfig of `recur train --recipe R <setting> --model.mixer M <spec's overrides>`;
    a ValueError naming the argument (--recipe, --set, --mixers) that is wrong."""
    from ..recipes import RECIPES, recipe

    if recipe_name not in RECIPES:
        raise ValueError(f"--recipe: unknown recipe {recipe_name!r}{did_you_mean(recipe_name, RECIPES)} "
                         f"Known: {sorted(RECIPES)}")
    try:
        recipe(recipe_name, list(setting))
    except ValueError as error:
        raise ValueError(f"--set {' '.join(f'{k}={v}' for k, v in setting)}: {error}") from None
    try:
        return recipe(recipe_name, [*setting, ("model.mixer", spec.mixer), *spec.overrides])
    except ValueError as error:
        raise ValueError(f"--mixers {spec.label}: {error}") from None


def measure_model(config, batch: int | None, repeat: int, device: torch.device) -> dict:
    """{parameters, batch, seconds, cpu_seconds, memory_bytes, unit} of one training forward+backward of
    `config`'s model on one batch of its task's training split (`batch` examples; default
    one micro-batch of the run)."""
    from ..train.loop import auxiliary_loss, batch_arguments, batch_generator, build_task_and_model

    tc = config.train
    task, model = build_task_and_model(config)
    model = model.to(device).train()
    size = batch if batch is not None else tc.batch_size // tc.grad_accum
    data = task.train_batch(size, batch_generator(tc.seed, 0), 0)
    inputs = data["inputs"].to(device)
    arguments = batch_arguments(data, slice(None), device)
    # the precision the run trains in (recur.train.loop: bf16 autocast on CUDA by default)
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")

    def loss() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            return model(inputs, **arguments).loss + auxiliary_loss(model)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss().backward()

    seconds, cpu_seconds = time_calls(step, device, repeat=repeat, warmup=1)
    memory = saved_for_backward_bytes(loss, exclude=list(model.parameters()))
    model.zero_grad(set_to_none=True)
    unit = "images" if task.input == "image" else "sequences"
    return {"parameters": model.num_parameters(), "batch": size, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "memory_bytes": memory, "unit": unit}


def run_model_bench(
    recipe_name: str,
    models: list[str],
    settings: list[str] | None = None,
    *,
    batch: int | None = None,
    repeat: int = 3,
    device: torch.device | str = "cpu",
    progress: Callable[[str], None] = print,
) -> ModelBenchRun:
    """Rows of {setting, model, parameters, batch, seconds, cpu_seconds, per_second, speed,
    cpu_speed, memory_bytes} for every `settings` combination (`KEY=V1,V2` items) and every
    model of `models` (`MIXER[:KEY=VALUE]...`), in that order. `speed` is the first model's
    wall time at the same setting over the row's (above 1: faster), `cpu_speed` the same in
    CPU time. Every config is built, and so checked, before the first timing."""
    for name, value in (("--batch", batch), ("--repeat", repeat)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if not models:
        raise ValueError("--mixers: name at least one model")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but CUDA is not available")
    specs = [parse_model(item) for item in models]
    combinations = parse_settings(settings or [])
    configs = [[model_config(recipe_name, spec, setting) for spec in specs] for setting in combinations]
    load_start = load_average()
    rows, unit = [], "sequences"
    for setting, setting_configs in zip(combinations, configs, strict=True):
        first = first_cpu = None
        for spec, config in zip(specs, setting_configs, strict=True):
            measured = measure_model(config, batch, repeat, device)
            unit = measured.pop("unit")
            first = measured["seconds"] if first is None else first
            first_cpu = measured["cpu_seconds"] if first_cpu is None else first_cpu
            row = {"setting": dict(setting), "model": spec.label, **measured,
                   "per_second": measured["batch"] / measured["seconds"], "speed": first / measured["seconds"],
                   "cpu_speed": first_cpu / measured["cpu_seconds"]}
            rows.append(row)
            where = " ".join(f"{k}={v}" for k, v in setting)
            progress(f"{where + ' ' if where else ''}{spec.label}: {row['seconds'] * 1e3:.1f} ms "
                     f"({row['cpu_seconds'] * 1e3:.1f} ms CPU) per batch of "
                     f"{row['batch']}, {row['per_second']:.1f} {unit}/s, {row['speed']:.2f}× the first, "
                     f"{row['memory_bytes'] / 2**20:.1f} MiB saved for backward")
    load_end = load_average()
    load = (load_start, load_end) if load_start is not None and load_end is not None else None
    keys = [key for key, _ in combinations[0]]
    return ModelBenchRun(recipe_name, rows, unit, keys, load)


def render_models(run: ModelBenchRun, command: str, device: torch.device | str = "cpu") -> str:
    """The markdown of a run: title, machine, command, what the columns mean, the table."""
    device = torch.device(device)
    memory = "bytes of the activations autograd saves for backward (parameters not counted)"
    if device.type == "cuda":
        memory += ", in the bf16 autocast the run trains in"
    columns = [*run.keys, "model", "parameters", "batch", "ms per batch", "CPU ms per batch", f"{run.unit}/s",
               "speed vs first", "CPU time speed vs first", "saved for backward (MiB)"]
    lines = [
        f"# Model benchmark: recipe {run.recipe}",
        "",
        f"Machine: {machine_description(device, run.load)}.",
        f"Command: `{command}`.",
        "",
        f"Each row is the model `recur train --recipe {run.recipe}` builds with the row's mixer and overrides, "
        "timed on one batch of the task's training split: forward and backward of the training loss, one warm-up "
        "call, then the median of the wall time and, over the same calls, of the process's CPU time (all threads; "
        "on a CPU shared with other jobs it leaves out the time spent waiting for a core). Speed: the first "
        "model's time at the same settings over the row's, measured in the same process (above 1: faster). "
        f"Memory: {memory}.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---:|" * len(run.keys) + "---|" + "---:|" * (len(columns) - len(run.keys) - 1),
    ]
    for r in run.rows:
        cells = [
            *(str(r["setting"][key]) for key in run.keys), f"`{r['model']}`", f"{r['parameters']:,}",
            str(r["batch"]), f"{r['seconds'] * 1e3:.1f}", f"{r['cpu_seconds'] * 1e3:.1f}", f"{r['per_second']:.1f}",
            f"{r['speed']:.2f}×", f"{r['cpu_speed']:.2f}×", f"{r['memory_bytes'] / 2**20:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
