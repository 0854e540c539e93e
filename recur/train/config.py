"""The typed run configuration and its dotted overrides.

A run is one `RunConfig`: the task (a task's typed config; its name picks the task), the
model's backbone (`recur.models.LMConfig`), how inputs become tokens (`InputConfig`), the
head (`HeadConfig`), the decoder of encoder–decoder tasks (`Seq2SeqConfig`) and the
training options. What the task decides (its vocabulary, input kind and sizes, head kind,
number of outputs) is filled in from the task and cannot be overridden. Recipes (`recur.recipes`) are functions returning a
RunConfig; the command line changes it with typed dotted overrides such as
`--model.mixer gla --train.steps 2000 --task.num_kv_pairs 16`, checked against the field
types before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ..layers import option_types
from ..models import HeadConfig, InputConfig, LMConfig, Seq2SeqConfig
from ..registry import UnknownName, did_you_mean
from ..tasks import TASKS, TaskConfig, get_task

PRECISIONS = ("auto", "fp32", "bf16")
# the fields a task fills in, per section: overrides cannot set them
TASK_FIELDS = {
    "model": ("vocab_size",),
    "input": ("kind", "features", "channels", "height", "width"),
    "head": ("kind", "num_outputs", "horizon"),
}
SECTIONS = ("task", "model", "input", "head", "seq2seq", "train", "privacy")
PRIVACY_METHODS = ("none", "dp_sgd", "input")


@dataclass(kw_only=True)
class TrainConfig:
    steps: int = 1000
    # examples per optimiser step (all processes together), split into grad_accum micro-batches
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 3e-3
    # cosine decay from lr to lr * min_lr_ratio after a linear warmup
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    # decoupled (AdamW); never applied to biases, norms, or groups a mixer marks no_decay
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    # clip the global gradient norm (0 = off)
    grad_clip: float = 1.0
    # learning-rate multiplier of the parameters a mixer puts in its "ssm" group
    ssm_lr_scale: float = 1.0
    eval_every: int = 100
    # stop early once the task's validation metric reaches this value (None = run all steps)
    target: float | None = None
    # the weights the run ends with, and the test split is evaluated on: "best" (the
    # evaluation with the best validation metric) or "last"
    select: str = "best"
    seed: int = 0
    # "auto" = cuda when available, else cpu
    device: str = "auto"
    # "auto" = bf16 autocast on cuda, fp32 elsewhere
    precision: str = "auto"
    compile: bool = False
    log_every: int = 10
    # save a checkpoint every N steps (0 = at every evaluation, every eval_every steps), at
    # the end and on an interrupt, keeping the newest keep_checkpoints
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    tensorboard: bool = False
    # "adamw", or "radam" (rectified Adam, decoupled decay; the AL-RNN paper's)
    optimizer: str = "adamw"
    # after the warmup: "cosine" to lr * min_lr_ratio, or "exponential" (geometric) to it
    schedule: str = "cosine"
    # torch CPU threads (0 = from the machine: its idle CPUs, at most 4; see loop.cpu_threads)
    threads: int = 0
    # with several processes: "ddp" (replicated weights) or "fsdp" (FSDP2, sharded)
    distributed: str = "ddp"

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "grad_accum", "eval_every", "log_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be positive; got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0; got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"train.batch_size = {self.batch_size} must be divisible by train.grad_accum = {self.grad_accum}"
            )
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive; got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")
        if self.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"train.distributed must be 'ddp' or 'fsdp'; got {self.distributed!r}")
        if self.optimizer not in ("adamw", "radam"):
            raise ValueError(f"train.optimizer must be 'adamw' or 'radam'; got {self.optimizer!r}")
        if self.schedule not in ("cosine", "exponential"):
            raise ValueError(f"train.schedule must be 'cosine' or 'exponential'; got {self.schedule!r}")
        if self.select not in ("best", "last"):
            raise ValueError(f"train.select must be 'best' or 'last'; got {self.select!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {list(PRECISIONS)}; got {self.precision!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be in [0, 1); got {getattr(self, name)}")


@dataclass(kw_only=True)
class PrivacyConfig:
    """Differentially private training (recur.train.privacy, docs/privacy.md): "dp_sgd"
    clips each example's gradient and adds Gaussian noise; "input" adds Laplace noise to
    the training inputs once, before any training. Either way the run trains on a fixed
    private set of `dataset_size` training examples, drawn once from the seed."""

    # "none", "dp_sgd" or "input"
    method: str = "none"
    # examples in the private training set; DP-SGD samples each with rate batch_size / dataset_size
    dataset_size: int = 10_000
    # DP-SGD: the noise's standard deviation over max_grad_norm (σ), or None with target_epsilon
    noise_multiplier: float | None = None
    # DP-SGD: the ε the run must reach at delta after train.steps steps; σ is solved for it
    target_epsilon: float | None = None
    delta: float = 1e-5
    # DP-SGD: every example's gradient is scaled to at most this L2 norm (C)
    max_grad_norm: float = 1.0
    # "rdp" (Rényi DP of the sampled Gaussian, built in) or "prv" (Opacus's PRV accountant)
    accountant: str = "rdp"
    # per-example gradients: "vmap" (torch.func), "loop" (one backward per example) or
    # "auto" (vmap where the model's ops allow it, else loop)
    per_sample: str = "auto"
    # input perturbation: ε of the Laplace mechanism on each input value, after clipping
    # the values to input_bounds (the sensitivity is their width)
    input_epsilon: float = 1.0
    input_bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.method not in PRIVACY_METHODS:
            raise ValueError(f"privacy.method must be one of {list(PRIVACY_METHODS)}; got {self.method!r}")
        if self.dataset_size <= 0:
            raise ValueError(f"privacy.dataset_size must be positive; got {self.dataset_size}")
        if self.method == "dp_sgd" and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "privacy.method 'dp_sgd' needs exactly one of privacy.noise_multiplier and privacy.target_epsilon; "
                f"got noise_multiplier={self.noise_multiplier}, target_epsilon={self.target_epsilon}"
            )
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise ValueError(f"privacy.noise_multiplier must be >= 0; got {self.noise_multiplier}")
        for name in ("target_epsilon", "max_grad_norm", "input_epsilon"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"privacy.{name} must be positive; got {value}")
        if not 0 < self.delta < 1:
            raise ValueError(f"privacy.delta must be in (0, 1); got {self.delta}")
        if self.accountant not in ("rdp", "prv"):
            raise ValueError(f"privacy.accountant must be 'rdp' or 'prv'; got {self.accountant!r}")
        if self.per_sample not in ("auto", "vmap", "loop"):
            raise ValueError(f"privacy.per_sample must be 'auto', 'vmap' or 'loop'; got {self.per_sample!r}")
        low, high = self.input_bounds
        if not low < high:
            raise ValueError(f"privacy.input_bounds must be (low, high) with low < high; got {self.input_bounds}")


@dataclass(kw_only=True)
class RunConfig:
    task: TaskConfig
    model: LMConfig
    input: InputConfig = field(default_factory=InputConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    seq2seq: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        task = get_task(self.task_name)(self.task)
        # what the task decides, the model always matches
        channels, height, width = task.image_shape
        self.model = dataclasses.replace(self.model, vocab_size=task.vocab_size)
        self.input = dataclasses.replace(
            self.input, kind=task.input, features=task.features, channels=channels, height=height, width=width
        )
        if task.head != "seq2seq":
            self.head = dataclasses.replace(self.head, kind=task.head, num_outputs=task.num_outputs, horizon=task.horizon)
            try:
                self.head.check_loss()
            except ValueError as error:
                raise ValueError(f"task {self.task_name!r} needs a {task.head!r} head: {error}") from None

    @property
    def task_name(self) -> str:
        for name, cls in TASKS.items():
            if type(self.task) is cls.Config:
                return name
        raise ValueError(f"task config {type(self.task).__name__} belongs to no registered task")


def to_dict(run: RunConfig) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists); `from_dict` inverts it."""
    data = dataclasses.asdict(run)
    data["task"] = {"name": run.task_name, **data["task"]}
    return data


def from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from `to_dict` output (e.g. a checkpoint's JSON), every value type-checked."""
    data = dict(data)
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown run config sections {sorted(unknown)}; expected {', '.join(SECTIONS)}")
    task = dict(data.get("task") or {})
    name = task.pop("name", None)
    if name is None:
        raise ValueError("the run config's task section has no 'name'")
    task_cls = get_task(name).Config
    model = dict(data.get("model") or {})
    return RunConfig(
        task=build_section(task_cls, task, "task"),
        model=build_section(LMConfig, model, "model"),
        **{
            section: build_section(SECTION_TYPES[section], dict(data.get(section) or {}), section)
            for section in ("input", "head", "seq2seq", "train", "privacy")
        },
    )


# the config class of every section but the task's (which the task names)
SECTION_TYPES = {"model": LMConfig, "input": InputConfig, "head": HeadConfig, "seq2seq": Seq2SeqConfig, "train": TrainConfig,
                 "privacy": PrivacyConfig}


def build_section(cls, values: dict[str, Any], section: str):
    """`cls(**values)` with every key checked against the fields and every value coerced
    to the field's type; errors name "<section>.<key>"."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown key {section}.{key}{did_you_mean(key, names)}")
        kwargs[key] = coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def coerce(value: Any, tp, key: str) -> Any:
    """`value` (a command-line string or a JSON value) as type `tp`, or a ValueError that
    names the key, the expected type and the value."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def fail(extra: str = ""):
        return ValueError(f"{key} expects {type_name(tp)}; got {value!r}{extra}")

    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, key)
            except ValueError:
                continue
        raise fail()
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise fail(" (use true or false)")
    if tp is int:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                raise fail() from None
        raise fail()
    if tp is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail() from None
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin is tuple:
        items = value
        if isinstance(value, str):
            text = value.strip().strip("()[]")
            items = [part.strip().strip("'\"") for part in text.split(",") if part.strip()]
        if not isinstance(items, (list, tuple)):
            raise fail()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(item, args[0], key) for item in items)
        if len(items) != len(args):
            raise fail(f" ({len(args)} values, comma separated)")
        return tuple(coerce(item, a, key) for item, a in zip(items, args, strict=True))
    if origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise fail(" (a JSON object)") from None
        if not isinstance(value, dict):
            raise fail(" (a JSON object)")
        return {coerce(k, args[0], key): coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    raise ValueError(f"{key} has a type {type_name(tp)} that overrides do not support")


def override_keys(run: RunConfig | None = None, task_name: str | None = None) -> dict[str, Any]:
    """Every key an override may set, with its type (mixer options of the run's mixers
    included when a run is given)."""
    task_name = task_name or (run.task_name if run is not None else "mqar")
    keys: dict[str, Any] = {"task.name": str}
    sections = {"task": get_task(task_name).Config, **SECTION_TYPES}
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and f.name not in TASK_FIELDS.get(section, ()):
                keys[f"{section}.{f.name}"] = hints[f.name]
    if run is not None:
        for mixer in sorted(set(run.model.layer_mixers())):
            for option, tp in option_types(mixer).items():
                keys[f"model.mixer_options.{mixer}.{option}"] = tp
    return keys


def apply_overrides(run: RunConfig, overrides: dict[str, Any] | list[tuple[str, Any]]) -> RunConfig:
    """A new RunConfig with `{"train.steps": "2000", ...}` applied, every key and value
    checked first. `task.name` starts from that task's defaults; `model.mixer` without
    `model.pattern` replaces the pattern (every layer that mixer); the key
    `model.mixer_options.<mixer>.<option>` sets one option of one mixer, for every layer of
    it, or by depth: `per_layer:2,4,4` (one value per layer of that mixer) or
    `linspace:0,0.9` (evenly spaced from its first layer to its last)."""
    items = list(overrides.items() if isinstance(overrides, dict) else overrides)
    sections = {section: dataclasses.asdict(getattr(run, section)) for section in SECTIONS}
    task_name = run.task_name
    for key, value in items:
        if key == "task.name":
            task_name = coerce(value, str, key)
            get_task(task_name)
            sections["task"] = {}
    known = override_keys(task_name=task_name)
    keys = {key for key, _ in items}
    if "model.mixer" in keys and "model.pattern" not in keys:
        # naming one mixer means every layer: it replaces a recipe's hybrid pattern
        sections["model"]["pattern"] = ()
    for key, value in items:
        if key == "task.name":
            continue
        section_name, _, field_name = key.partition(".")
        if field_name in TASK_FIELDS.get(section_name, ()):
            raise ValueError(f"{key} is set by the task; change the task's options instead (e.g. task.vocab_size)")
        if key.startswith("model.mixer_options."):
            parts = key.split(".")
            if len(parts) != 4:
                raise ValueError(f"{key}: expected model.mixer_options.<mixer>.<option>")
            mixer, option = parts[2], parts[3]
            try:
                option_type = option_types(mixer)
            except UnknownName as error:
                raise ValueError(f"{key}: {error}") from None
            if option not in option_type:
                raise ValueError(f"unknown key {key}{did_you_mean(option, option_type)} Options of {mixer}: {sorted(option_type)}")
            sections["model"]["mixer_options"].setdefault(mixer, {})[option] = _option_value(value, option_type[option], key)
            continue
        if key not in known:
            raise ValueError(f"unknown key {key!r}{did_you_mean(key, known)}")
        section, name = key.split(".", 1)
        sections[section][name] = coerce(value, known[key], key)
    return RunConfig(
        task=build_section(get_task(task_name).Config, sections["task"], "task"),
        **{section: build_section(cls, sections[section], section) for section, cls in SECTION_TYPES.items()},
    )


# what a resume may change: how the run is carried out, never what it trains; train.steps
# may only grow, and the learning-rate schedule then spans the new total
RESUMABLE = {
    "train.steps": "more steps",
    "train.log_every": "logging interval",
    "train.checkpoint_every": "checkpoint interval",
    "train.keep_checkpoints": "checkpoints kept",
    "train.tensorboard": "TensorBoard on or off",
    "train.threads": "CPU threads",
    "train.device": "device",
    "train.distributed": "ddp or fsdp",
}


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"section.key[.key...]": value}."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: RunConfig, given: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs between two configs: {key: (saved, given)}."""
    before, after = _flat(to_dict(saved)), _flat(to_dict(given))
    return {key: (before.get(key), after.get(key)) for key in sorted(before.keys() | after.keys())
            if before.get(key) != after.get(key)}


def check_resume(saved: RunConfig, given: RunConfig, where: str) -> dict[str, tuple[Any, Any]]:
    """The changes `given` makes to the config a run was saved with (`where` names it),
    after checking each is one a resume may make (RESUMABLE); a ValueError names those
    that are not."""
    changes = config_changes(saved, given)
    refused = [f"{key} (saved {old!r}, given {new!r})" for key, (old, new) in changes.items() if key not in RESUMABLE]
    if refused:
        allowed = ", ".join(f"{key} ({why})" for key, why in RESUMABLE.items())
        raise ValueError(
            f"a resume continues the config of {where}, but this one changes {'; '.join(refused[:4])}"
            f"{f' and {len(refused) - 4} more' if len(refused) > 4 else ''}. A resume may change only: {allowed}"
        )
    if "train.steps" in changes and given.train.steps < saved.train.steps:
        raise ValueError(
            f"train.steps = {given.train.steps} is below the {saved.train.steps} steps of {where}; "
            "a resume can only add steps"
        )
    return changes


def _option_value(value: Any, tp, key: str) -> Any:
    """A mixer option's value: one for every layer, or `per_layer:a,b,...` / `linspace:a,b`."""
    if isinstance(value, str) and value.split(":", 1)[0] in ("per_layer", "linspace"):
        rule, _, items = value.partition(":")
        parts = [coerce(item.strip(), float if rule == "linspace" else tp, key) for item in items.split(",") if item.strip()]
        return {rule: parts}
    return coerce(value, tp, key)
