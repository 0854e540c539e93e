"""The `recur` command: train | sweep | eval | generate | export | plot | bench | list.

`recur train` with no arguments trains the default recipe. Any run setting is a typed
dotted override: `recur train --recipe mqar --model.mixer gla --train.steps 2000`.
Unknown or ill-typed keys stop the command before any work, naming the key, the
expected type and close matches.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from . import __version__


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit status 2."""


def _dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise argparse.ArgumentTypeError(f"dtype must be one of {sorted(dtypes)}; got {name!r}")
    return dtypes[name]


def _lookup(registry, name: str, option: str):
    """`registry[name]`, or a UsageError that names the option and close matches."""
    try:
        return registry[name]
    except KeyError as error:
        raise UsageError(f"{option}: {error}") from None


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    device = torch.device(args.device)
    if args.threads is not None:
        if args.threads <= 0:
            print(f"error: --threads must be positive; got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.family != "all":
        _lookup(bench.OP_BENCHES, args.family, "--family")
    families = sorted(bench.OP_BENCHES) if args.family == "all" else [args.family]
    name = f"{'gpu' if device.type == 'cuda' else 'cpu'}-ops.md"
    if args.update_benchmarks:
        out = Path("benchmarks") / name
    elif args.out:
        out = Path(args.out)
    else:
        out = Path("runs") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}" / name
    if args.dtype is None:
        args.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for family in families:
        run = bench.run_op_bench(
            family, args.T, device, args.dtype, args.repeat, args.max_naive_T, progress=print
        )
        command = (
            f"recur bench ops --family {family} --device {device.type} "
            f"--dtype {str(args.dtype).removeprefix('torch.')} --T {' '.join(map(str, args.T))}"
            + (f" --threads {args.threads}" if args.threads is not None else "")
        )
        section = bench.render_section(family, run, device, args.dtype, command)
        bench.write_section(out, family, section, f"Op benchmarks ({device.type})")
        print(section)
    print(f"wrote {out}")
    return 0


def cmd_bench_recall(args: argparse.Namespace) -> int:
    from .bench.recall import (
        causal_mixers,
        match_state,
        plot_recall,
        render_recall,
        run_recall_bench,
    )
    from .layers import MIXERS

    known = causal_mixers()
    mixers = known if args.mixers == ["all"] else args.mixers
    for name in mixers:
        if not _lookup(MIXERS, name, "--mixers").causal:
            print(f"error: --mixers: {name!r} is not a causal mixer; known: {known}", file=sys.stderr)
            return 2
    checks = [("--steps", args.steps), ("--threads", args.threads), ("--seeds", args.seeds), ("--jobs", args.jobs),
              *(("--d-model", d) for d in args.d_model)]
    if args.state_bytes is not None:
        checks.append(("--state-bytes", args.state_bytes))
    for name, value in checks:
        if value <= 0:
            print(f"error: {name} must be positive; got {value}", file=sys.stderr)
            return 2
    overrides = {"train.steps": args.steps, "train.threads": args.threads}
    if args.state_bytes is not None:
        jobs = [(name, match_state(name, args.state_bytes)) for name in mixers]
    else:
        jobs = [(name, d) for name in mixers for d in args.d_model]
    out = Path(args.out)
    data = out.with_suffix(".json")
    results = run_recall_bench(jobs, args.seeds, overrides, data, workers=args.jobs)
    widths = f"--state-bytes {args.state_bytes}" if args.state_bytes is not None else f"--d-model {' '.join(map(str, args.d_model))}"
    command = f"recur bench recall --mixers {' '.join(args.mixers)} {widths} --seeds {args.seeds} --steps {args.steps}"
    out.write_text(render_recall(results, command, overrides))
    written = [out, data]
    try:
        written.append(plot_recall(results, out.with_suffix(".png")))
    except ImportError:
        pass
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_bench_models(args: argparse.Namespace) -> int:
    from .bench.models import render_models, run_model_bench

    if args.threads is not None:
        if args.threads <= 0:
            raise UsageError(f"--threads must be positive; got {args.threads}")
        torch.set_num_threads(args.threads)
    run = run_model_bench(args.recipe, args.mixers, args.set, batch=args.batch, repeat=args.repeat, device=args.device)
    out = Path(args.out) if args.out else Path("runs") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}" / "models.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_models(run, _command_line(args), args.device))
    print(f"wrote {out}")
    return 0


def _first_sentence(obj) -> str:
    """The first sentence of obj's docstring, whole even when it spans lines."""
    paragraph = " ".join(line.strip() for line in (obj.__doc__ or "").strip().split("\n\n")[0].splitlines())
    match = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bal)[.!?](?=\s|$)", paragraph)
    return paragraph[: match.end()] if match else paragraph


def cmd_list(args: argparse.Namespace) -> int:
    from .layers import MIXERS

    what = args.what
    if what in ("all", "mixers"):
        print("mixers:")
        for name, cls in sorted(MIXERS.items()):
            print(f"  {name:<20} {_first_sentence(sys.modules[cls.__module__])}")
        from .layers.grid import GRID_MIXERS

        if GRID_MIXERS:
            print("grid mixers ([B, H, W, D] -> [B, H, W, D], for images):")
            for name, cls in sorted(GRID_MIXERS.items()):
                print(f"  {name:<20} {_first_sentence(sys.modules[cls.__module__])}")
    if what in ("all", "tasks"):
        from .tasks import TASKS

        print("tasks:")
        for name, cls in sorted(TASKS.items()):
            print(f"  {name:<20} {_first_sentence(cls)}")
    if what in ("all", "recipes"):
        from .recipes import RECIPES

        print("recipes:")
        for name, fn in sorted(RECIPES.items()):
            print(f"  {name:<20} {_first_sentence(fn)}")
    return 0


def parse_overrides(extra: list[str]) -> list[tuple[str, str]]:
    """`--a.b value` and `--a.b=value` pairs from the arguments argparse did not know."""
    pairs, i = [], 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise UsageError(
                f"unrecognised argument {arg!r}; run settings are dotted overrides such as "
                "--train.steps 500 (see `recur train --help`)"
            )
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        else:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise UsageError(f"override --{key} needs a value")
            value = extra[i + 1]
            i += 1
        pairs.append((key, value))
        i += 1
    return pairs


def _run_config(args: argparse.Namespace):
    """The run's config: the recipe with its overrides, or on --resume the run's own config
    with the overrides a resume may make."""
    from .recipes import recipe
    from .train.config import RESUMABLE
    from .train.loop import saved_config

    if not args.resume:
        return recipe(args.recipe or "default", parse_overrides(args.overrides))
    allowed = ", ".join(f"--{key}" for key in RESUMABLE)
    if not args.run_dir:
        raise UsageError("--resume needs --run-dir (the run to continue)")
    if args.recipe is not None:
        raise UsageError(f"--resume continues the run's own config ({args.run_dir}/config.json); drop --recipe "
                         f"(a resume may change only {allowed})")
    if args.seeds is not None:
        from .train.experiments import seeds_config

        try:
            return seeds_config(Path(args.run_dir), parse_overrides(args.overrides))[0]
        except ValueError as error:
            raise UsageError(str(error)) from None
    return saved_config(args.run_dir, parse_overrides(args.overrides))


def cmd_train(args: argparse.Namespace) -> int:
    from .train import summary, to_dict, train
    from .train.loop import NothingToResume

    if args.nproc < 1:
        raise UsageError(f"--nproc must be a positive int; got {args.nproc}")
    config = _run_config(args)
    if not args.resume:
        args.recipe = args.recipe or "default"
    if args.print_config:
        print(json.dumps(to_dict(config), indent=2))
        return 0
    tc = config.train
    if tc.batch_size % (tc.grad_accum * args.nproc):
        raise UsageError(f"train.batch_size = {tc.batch_size} must be divisible by train.grad_accum × --nproc = "
                         f"{tc.grad_accum} × {args.nproc}")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / f"{args.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.seeds is not None:
        return _train_seeds(args, config, run_dir)
    main_process = os.environ.get("RANK", "0") == "0"
    if main_process:
        what = "--resume" if args.resume else f"--recipe {args.recipe}"
        print(f"recur train {what}: task {config.task_name}, "
              f"model {config.model.describe()}, run dir {run_dir}", flush=True)
    try:
        result = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    except NothingToResume as done:
        if main_process:
            print(done)
        return 0
    if not main_process:
        return 0
    print(render_summary(summary(result)))
    png = run_dir / "curves.png"
    try:
        from .train.plot import plot_attractors, plot_run

        plot_run(run_dir, png)
        print(f"plot: {png}")
        if config.task_name == "dynamics":
            print(f"plot: {plot_attractors(run_dir)}")
    except ImportError as error:
        print(f"no plot ({error})")
    print(f"run dir: {run_dir}")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as it was given (the arguments main() parsed), quoted for a shell."""
    return "recur " + shlex.join(args.argv)


# the command that made a --seeds folder, kept in it so a resumed call's table names it
SEEDS_COMMAND = "command.txt"


def _train_seeds(args: argparse.Namespace, config, run_dir: Path) -> int:
    """`recur train --seeds N`: N runs of the recipe, one table and plot of mean ± std.
    With --resume, continues the folder a stopped call left (finished seeds are read back)."""
    from .tasks import get_task
    from .train.experiments import run_seeds, seeds_table, write_table
    from .train.loop import Interrupted

    if args.nproc > 1:
        raise UsageError("--seeds runs single-process runs; drop --nproc")
    if args.seeds <= 0:
        raise UsageError(f"--seeds must be a positive int; got {args.seeds}")
    command_file = run_dir / SEEDS_COMMAND
    if args.resume:
        command = command_file.read_text().strip() if command_file.is_file() else _command_line(args)
        what = "--resume"
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UsageError(f"{run_dir} is not empty; pick another --run-dir (or continue it with --resume)")
        command, what = _command_line(args), f"--recipe {args.recipe}"
        run_dir.mkdir(parents=True, exist_ok=True)
        command_file.write_text(command + "\n")
    print(f"recur train {what} --seeds {args.seeds}: task {config.task_name}, run dir {run_dir}", flush=True)
    metric = get_task(config.task_name).metric
    test_metric = "test/" + metric.split("/", 1)[1]

    def report(seed, record):
        figures = record["metrics"]
        print(f"seed {seed}: {metric} {figures[metric]:.4f}, {test_metric} {figures[test_metric]:.4f} "
              f"(step {record['chosen_step']} of {record['steps']})", flush=True)

    try:
        records = run_seeds(config, args.seeds, run_dir, progress=not args.no_progress, on_run=report,
                            resume=args.resume)
    except Interrupted as stop:
        raise Interrupted(f"{stop}\nall {args.seeds} seeds continue with: recur train --run-dir {run_dir} --resume "
                          f"--seeds {args.seeds}", stop.step, stop.signum) from None
    table = seeds_table(config, records, command)
    recipe_named = command.split("--recipe ", 1)[1].split()[0] if "--recipe " in command else config.task_name
    written = write_table(table, config, run_dir, "seeds", f"{args.recipe or recipe_named}: {args.seeds} seeds")
    print(Path(written[0]).read_text())
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """`recur sweep`: every combination of --grid values over --seeds seeds; the table marks
    the configuration with the best validation mean and gives its test figures."""
    from .recipes import recipe
    from .train.experiments import grid_combinations, run_sweep, write_table

    grid: dict[str, list[str]] = {}
    for item in args.grid:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise UsageError(f"--grid takes KEY=V1,V2,...; got {item!r}")
        grid[key.removeprefix("--")] = [v for v in values.split(",") if v]
    config = recipe(args.recipe, parse_overrides(args.overrides))
    if args.seeds <= 0:
        raise UsageError(f"--seeds must be a positive int; got {args.seeds}")
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / f"sweep-{args.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} is not empty; pick another --run-dir")
    print(f"recur sweep --recipe {args.recipe}: {len(grid_combinations(grid))} configurations × {args.seeds} seeds, "
          f"run dir {run_dir}", flush=True)
    table = run_sweep(config, grid, args.seeds, run_dir, _command_line(args), progress=not args.no_progress)
    written = write_table(table, config, run_dir, "sweep", f"{args.recipe}: sweep")
    print(Path(written[0]).read_text())
    print("wrote " + ", ".join(map(str, written)))
    return 0


def render_summary(s: dict) -> str:
    rows = [
        ("task", s["task"]),
        ("model", s["model"]),
        ("parameters", f"{s['parameters']:,}"),
        ("state size", f"{s['state_bytes_per_sequence']:,} bytes per sequence"
                       + (" (attention caches: per token)" if s.get("growing_state") else "")),
        ("steps", f"{s['steps']}{' (target reached, stopped early)' if s['stopped_early'] else ''}"),
        ("time", f"{s['seconds']:.1f} s"),
        ("CPU threads", f"{s['threads']} ({s['threads_rule']})"),
        ("final train loss", f"{s['final_loss']:.4f}"),
        ("chosen weights", f"step {s['chosen_step']} (train.select {s['select']})"),
        (s["metric"], f"{s['value']:.4f}"),
        (s["test_metric"], f"{s['test_value']:.4f}"),
    ]
    rows += [(k, f"{v:.4f}") for k, v in s["metrics"].items() if k not in (s["metric"], s["test_metric"])]
    privacy = s.get("privacy")
    if privacy and privacy["method"] == "dp_sgd":
        rows.append(("privacy (DP-SGD)", f"ε = {privacy['epsilon']:.3g} at δ = {privacy['delta']:g} "
                                         f"(σ = {privacy['noise_multiplier']:.3g}, {privacy['accountant']})"))
    elif privacy:
        rows.append(("privacy (inputs)", f"ε = {privacy['epsilon_per_value']:g} per value (Laplace)"))
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{k:<{width}} | {v}" for k, v in rows), line])


def _launch(args: argparse.Namespace) -> int:
    """Re-runs this command under torchrun with --nproc processes."""
    argv = list(args.argv)
    if "--nproc" in argv:
        i = argv.index("--nproc")
        del argv[i:i + 2]
    argv = [a for a in argv if not a.startswith("--nproc=")]
    if not args.run_dir:
        # every process must write to the same run dir
        argv += ["--run-dir", str(Path("runs") / f"{args.recipe}-{time.strftime('%Y%m%d-%H%M%S')}")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "recur.cli", *argv]
    return subprocess.call(command)


def cmd_eval(args: argparse.Namespace) -> int:
    from .train import load_run
    from .train.loop import eval_sets, evaluate, resolve_device

    run = load_run(args.run)
    config, task, model = run.config, run.task, run.model
    if args.overrides:
        from .train import apply_overrides

        pairs = parse_overrides(args.overrides)
        bad = [k for k, _ in pairs if not k.startswith("task.") or k == "task.name"]
        if bad:
            raise UsageError(f"eval takes task overrides only (e.g. --task.test_lengths 40,512); got {bad}")
        config = apply_overrides(config, pairs)
        task = type(task)(config.task)
    device = resolve_device(config.train.device)
    model.to(device)
    metrics = evaluate(model, task, eval_sets(task, config), config.train.batch_size, device, _no_autocast)
    for key, value in metrics.items():
        print(f"{key:<40} {value:.4f}")
    return 0


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


def cmd_generate(args: argparse.Namespace) -> int:
    from .train import load_run

    run = load_run(args.run)
    config, task, model = run.config, run.task, run.model
    if task.head != "lm":
        raise UsageError(f"generate needs a language-model task; {config.task_name!r} is a {task.head} task")
    byte_level = config.task_name == "lm"
    if byte_level:
        prompt = list(args.prompt.encode("utf-8"))
    else:
        try:
            prompt = [int(t) for t in args.prompt.replace(",", " ").split()]
        except ValueError:
            raise UsageError(f"--prompt for task {config.task_name!r} is token ids separated by spaces; got {args.prompt!r}") from None
    if not prompt:
        raise UsageError("--prompt is empty")
    if max(prompt) >= task.vocab_size or min(prompt) < 0:
        raise UsageError(f"--prompt tokens must be in [0, {task.vocab_size}); got {prompt}")
    generator = torch.Generator().manual_seed(args.seed)
    out = model.eval().generate(torch.tensor([prompt]), args.max_new_tokens, temperature=args.temperature, generator=generator)
    tokens = out[0].tolist()
    if byte_level:
        print(bytes(tokens).decode("utf-8", errors="replace"))
    else:
        print(" ".join(map(str, tokens)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .models import LM
    from .train import load_run

    run = load_run(args.run)
    if not isinstance(run.model, LM):
        raise UsageError(
            f"export --hf needs a language-model run; task {run.config.task_name!r} is a {run.task.head} task "
            f"(its model is a {type(run.model).__name__})"
        )
    out = Path(args.hf)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--hf {out} already exists and is not an empty folder; pick another")
    from .hf import RecurForCausalLM

    RecurForCausalLM.from_recur(run.model).save_pretrained(out)
    print(f"wrote {out} (step {run.step} of {args.run}); load it with `import recur.hf` and "
          f"AutoModelForCausalLM.from_pretrained({str(out)!r}), or pass trust_remote_code=True instead of the import")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .train.plot import plot_attractors, plot_run

    out = plot_run(args.run, args.out)
    print(f"wrote {out}")
    config = Path(args.run) / "config.json"
    if config.is_file() and json.loads(config.read_text())["task"]["name"] == "dynamics":
        # a reconstruction is judged by its attractor: the true and the generated one side by side
        print(f"wrote {plot_attractors(args.run)}")
    return 0


TRAIN_EPILOG = """\
overrides (typed, checked before any work; `recur train --print-config` shows them all):
  --task.name mqar --task.num_kv_pairs 16     the task and its options
  --model.mixer gla --model.d_model 128        the model (recur.models.LMConfig)
  --model.pattern mamba2,attention             a hybrid, one mixer name per layer, repeating
  --model.mixer_options.gla.num_heads 2        one option of one mixer
  --train.steps 2000 --train.lr 1e-3           the trainer (recur.train.TrainConfig)
  --head.loss hinge                            classification head (cross_entropy, hinge, squared_hinge)

resume (Ctrl-C saves a checkpoint and prints this command):
  recur train --run-dir RUN --resume                    the run's own config, to its end
  recur train --run-dir RUN --resume --train.steps N    more steps (only train.* keys on how it runs)
  recur train --run-dir RUN --resume --seeds N          a --seeds folder: finished seeds read back, the rest go on
"""


EVAL_EPILOG = """\
task overrides (the only ones eval takes; the model is the run's):
  --task.test_lengths 256,512       longer test sequences (tasks that have them)
  --task.eval_examples 1024         bigger held-out sets
  --task.seq_len 128                another length (lm, mqar, ...)
`recur train --recipe R --print-config` lists a task's keys; task.name cannot change.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recur", description="Recurrent sequence models: train, evaluate, benchmark.")
    parser.add_argument("--version", action="version", version=f"recur {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a recipe (the default one without arguments)", epilog=TRAIN_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--recipe", default=None, help="named run (recur list recipes; default: default)")
    train.add_argument("--run-dir", default=None, help="where checkpoints, metrics and the plot go (default runs/<recipe>-<time>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir, with its own config, from its newest intact checkpoint")
    train.add_argument("--nproc", type=int, default=1, help="processes (DDP, or FSDP2 with --train.distributed fsdp)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--print-config", action="store_true", help="print the run config as JSON and exit")
    train.add_argument("--seeds", type=int, default=None,
                       help="N runs with train.seed, +1, …; writes RUN_DIR/seeds.md, .json, .png (mean ± std)")
    train.set_defaults(func=cmd_train)

    sweep = sub.add_parser("sweep", help="a grid of overrides × seeds, one table (chosen by validation)",
                           epilog="example: recur sweep --recipe parity --grid model.mixer=deltanet,gla "
                           "--grid train.lr=1e-3,3e-3 --seeds 3")
    sweep.add_argument("--recipe", default="default", help="named run (recur list recipes)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="an override and its values (repeat)")
    sweep.add_argument("--seeds", type=int, default=3, help="seeds per configuration")
    sweep.add_argument("--run-dir", default=None, help="folder of the runs and the table (default runs/sweep-<recipe>-<time>)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bars")
    sweep.set_defaults(func=cmd_sweep)

    ev = sub.add_parser("eval", help="evaluate a run's weights on its validation and test sets", epilog=EVAL_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("run", help="run dir (its chosen weights, else its newest checkpoint) or checkpoint dir")
    ev.set_defaults(func=cmd_eval)

    gen = sub.add_parser("generate", help="continue a prompt with a trained language model")
    gen.add_argument("run", help="run dir (its chosen weights, else its newest checkpoint) or checkpoint dir")
    gen.add_argument("--prompt", required=True, help="text (task lm) or token ids separated by spaces")
    gen.add_argument("--max-new-tokens", type=int, default=100)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=cmd_generate)

    export = sub.add_parser("export", help="write a language-model run as a Hugging Face folder",
                            epilog="example: recur export runs/lm --hf lm-hf (config.json, model.safetensors, "
                            "modeling_recur.py; needs transformers)")
    export.add_argument("run", help="run dir (its chosen weights, else its newest checkpoint) or checkpoint dir")
    export.add_argument("--hf", required=True, metavar="OUT", help="the folder to write (new or empty)")
    export.set_defaults(func=cmd_export)

    plot = sub.add_parser("plot", help="draw a run's loss and metric curves to PNG")
    plot.add_argument("run", help="run dir (with metrics.jsonl)")
    plot.add_argument("--out", default=None, help="PNG path (default RUN/curves.png)")
    plot.set_defaults(func=cmd_plot)

    bench = sub.add_parser("bench", help="speed and memory benchmarks")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    ops = bench_sub.add_parser("ops", help="op forms against their naive loop and peer libraries")
    ops.add_argument("--family", default="gla", help="op family, or 'all'")
    ops.add_argument("--device", default="cpu", help="cpu or cuda")
    ops.add_argument("--dtype", type=_dtype, default=None, help="default: bfloat16 on cuda (the published GPU comparisons), float32 on cpu")
    ops.add_argument("--T", type=int, nargs="+", default=[512, 2048, 8192], help="sequence lengths")
    ops.add_argument("--repeat", type=int, default=3)
    ops.add_argument("--max-naive-T", type=int, default=8192, help="skip the naive loop above this length")
    ops.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    where = ops.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="results file (default runs/bench-<time>/<device>-ops.md)")
    where.add_argument("--update-benchmarks", action="store_true",
                       help="replace the families' sections of the published benchmarks/<device>-ops.md instead")
    ops.set_defaults(func=cmd_bench)

    recall = bench_sub.add_parser("recall", help="MQAR accuracy against state size, one mixer at a time")
    recall.add_argument("--mixers", nargs="+", default=["all"], help="mixer names, or 'all' (every causal mixer)")
    recall.add_argument("--d-model", type=int, nargs="+", default=[64], help="model widths")
    recall.add_argument("--state-bytes", type=int, default=None,
                        help="instead of --d-model: each mixer at the width whose state is closest to this many bytes")
    recall.add_argument("--seeds", type=int, default=3, help="runs per mixer and width (mean ± std)")
    recall.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    recall.add_argument("--steps", type=int, default=4000, help="most training steps per run (stops at 0.99 validation accuracy)")
    recall.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    recall.add_argument("--out", default="benchmarks/recall.md", help="table (results kept in the same name .json)")
    recall.set_defaults(func=cmd_bench_recall)

    models = bench_sub.add_parser("models", help="whole models of a recipe, one mixer at a time: time and memory",
                                  epilog="example: recur bench models --recipe arrow_pointing --mixers mamba2 plstm "
                                  "plstm:mode=P vit_attention:input.position_embedding=true --set task.resolution=32,64")
    models.add_argument("--recipe", required=True, help="the recipe whose model is timed (recur list recipes)")
    models.add_argument("--mixers", nargs="+", required=True, metavar="MIXER[:KEY=VALUE]",
                        help="models, the first the reference; KEY a mixer option (mode=P) or a run override")
    models.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                        help="an override and its values; every model at each value (repeat: every combination)")
    models.add_argument("--batch", type=int, default=None, help="examples per batch (default: the recipe's micro-batch)")
    models.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    models.add_argument("--repeat", type=int, default=3, help="timed calls after one warm-up (median)")
    models.add_argument("--device", default="cpu", help="cpu or cuda")
    models.add_argument("--out", default=None, help="markdown table (default runs/bench-<time>/models.md)")
    models.set_defaults(func=cmd_bench_models)

    lister = sub.add_parser("list", help="list the registered mixers, tasks and recipes")
    lister.add_argument("what", nargs="?", default="all", choices=("all", "mixers", "tasks", "recipes"))
    lister.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    args.argv = argv
    if args.command in ("train", "eval", "sweep"):
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .train.checkpoint import CheckpointError, RunWarning
    from .train.loop import Interrupted

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, *rest, **kwargs):
            if issubclass(category, RunWarning):
                print(f"warning: {message}", file=sys.stderr)
            else:
                shown(message, category, *rest, **kwargs)

        warnings.showwarning = show
        try:
            return args.func(args)
        except Interrupted as stop:
            if os.environ.get("RANK", "0") == "0":
                print(stop, file=sys.stderr)
            return 128 + stop.signum
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        # what the user or the machine did wrong (a bad value, a damaged or busy run folder,
        # a full disk, a diverging run), said in one line; anything else is a bug and keeps
        # its traceback
        except (UsageError, ValueError, CheckpointError, OSError, ImportError, FloatingPointError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    raise SystemExit(main())
