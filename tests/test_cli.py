"""The `recur` command: its options (pinned), errors before work, and a tiny run end to end."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recur.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--recipe", "mqar", "--task.vocab_size", "32", "--task.seq_len", "16", "--task.num_kv_pairs", "2",
    "--task.eval_examples", "64", "--model.d_model", "32", "--model.n_layers", "1", "--model.pattern", "gla",
    "--train.steps", "6", "--train.eval_every", "3", "--train.batch_size", "16", "--train.threads", "1",
]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_top_level_options_are_pinned():
    parser = build_parser()
    assert _options(parser) == {"-h", "--help", "--version"}
    commands = _subparsers(parser)
    assert set(commands) == {"train", "sweep", "eval", "generate", "export", "plot", "bench", "list"}
    assert _options(commands["train"]) == {
        "-h", "--help", "--recipe", "--run-dir", "--resume", "--nproc", "--no-progress", "--print-config", "--seeds",
    }
    assert _options(commands["generate"]) == {"-h", "--help", "--prompt", "--max-new-tokens", "--temperature", "--seed"}
    assert _options(commands["export"]) == {"-h", "--help", "--hf"}
    assert _options(commands["eval"]) == {"-h", "--help"}
    assert set(_subparsers(commands["bench"])) == {"ops", "recall", "models"}


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("mixers:", "gla", "tasks:", "mqar", "parity", "recipes:", "default"):
        assert word in out
    assert main(["list", "tasks"]) == 0
    assert "mixers:" not in capsys.readouterr().out
    # whole first sentences, even when a docstring wraps one over several lines
    assert main(["list", "recipes"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["mod_arith_lstm"].endswith("at lengths 40-256 (benchmarks/rnn-extrapolation.md).")
    assert lines["digits_s4d"].endswith("(S4D-Lin, N = 64).")
    assert main(["list"]) == 0
    entries = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    cut = [line.split()[0] for line in entries if not line.endswith((".", "!", "?"))]
    assert not cut, f"descriptions that stop mid-sentence: {cut}"


def test_eval_help_names_its_task_overrides(capsys):
    # eval's overrides are not argparse options: its help says which it takes
    try:
        main(["eval", "--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    assert "task overrides" in out and "--task.test_lengths" in out


def test_a_layer_size_error_names_the_run_keys(capsys):
    assert main(["train", "--model.d_model", "63"]) == 2
    err = capsys.readouterr().err
    assert "expand * d_model = 126" in err
    assert "change model.d_model, model.mixer_options.mamba2.expand or model.mixer_options.mamba2.head_dim" in err


def test_print_config_applies_overrides(capsys):
    assert main(["train", "--print-config", "--train.steps", "7", "--task.num_kv_pairs=2"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["train"]["steps"] == 7 and config["task"]["num_kv_pairs"] == 2 and config["task"]["name"] == "mqar"
    # the default model is a mamba2+attention hybrid: the config names its mixers once, in the pattern
    assert config["model"]["pattern"] == ["mamba2", "attention"] and config["model"]["mixer"] == ""
    assert main(["train", "--print-config", "--model.mixer", "gla"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["mixer"] == "gla" and model["pattern"] == []


def test_bad_input_fails_before_work_with_a_clear_message(capsys, tmp_path):
    cases = [
        (["train", "--train.stepz", "5"], "unknown key 'train.stepz'; did you mean 'train.steps'"),
        (["train", "--train.steps", "five"], "train.steps expects int; got 'five'"),
        (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["train", "--recipe", "mqr"], "unknown recipe 'mqr'; did you mean 'mqar'"),
        (["train", "--model.mixer", "glaa"], "unknown mixer 'glaa'; did you mean 'gla'"),
        (["train", "--task.name", "parit"], "unknown task 'parit'; did you mean 'parity'"),
        (["bench", "ops", "--family", "glaa"], "--family: unknown op benchmark 'glaa'; did you mean 'gla'"),
        (["bench", "recall", "--mixers", "glaa"], "--mixers: unknown mixer 'glaa'; did you mean 'gla'"),
        (["train", "--task.vocab_size", "6"], "vocab_size = 6 is too small for num_kv_pairs = 4"),
        (["train", "--steps", "5"], "unrecognised argument '--steps'"),
        (["train", "--train.steps"], "override --train.steps needs a value"),
        (["train", "--resume"], "--resume needs --run-dir"),
        (["train", "--recipe", "lm", "--task.path", str(tmp_path / "missing.txt")], "missing.txt' does not exist"),
        (["eval", str(tmp_path)], "no checkpoint in"),
        (["export", str(tmp_path / "missing"), "--hf", str(tmp_path / "hf")], "missing does not exist"),
        (["plot", str(tmp_path)], "metrics.jsonl does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert err.startswith("error: ")
    assert not (Path("runs").exists() and any(Path("runs").glob("nope*")))


def test_train_eval_generate_plot(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for word in ("parameters", "state size", "steps", "val/accuracy", "curves.png"):
        assert word in out
    assert (run / "curves.png").stat().st_size > 10_000
    assert main(["train", *TINY, "--run-dir", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err

    assert main(["eval", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("val/accuracy"))
    assert float(line.split()[1]) == round(result["metrics"]["val/accuracy"], 4)

    assert main(["generate", str(run), "--prompt", "3 20 5", "--max-new-tokens", "4", "--temperature", "0"]) == 0
    tokens = capsys.readouterr().out.split()
    assert tokens[:3] == ["3", "20", "5"] and len(tokens) == 7
    assert main(["generate", str(run), "--prompt", "3 99"]) == 2
    assert "must be in [0, 32)" in capsys.readouterr().err

    assert main(["plot", str(run), "--out", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").exists()


def test_runs_with_no_stdin_under_ci(tmp_path):
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "recur.cli", "train", *TINY, "--run-dir", str(tmp_path / "ci")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "val/accuracy" in done.stdout and (tmp_path / "ci" / "curves.png").exists()


def test_lm_generate_text_and_eval_overrides(tmp_path, capsys):
    run = tmp_path / "lm"
    argv = ["train", "--recipe", "lm", "--task.seq_len", "16", "--task.eval_examples", "8", "--model.d_model", "32",
            "--model.n_layers", "1", "--train.steps", "2", "--train.eval_every", "2", "--train.batch_size", "4",
            "--train.threads", "1", "--run-dir", str(run), "--no-progress"]
    assert main(argv) == 0
    assert "val/bits_per_byte" in capsys.readouterr().out
    assert main(["generate", str(run), "--prompt", "The for", "--max-new-tokens", "5", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("The for")
    assert main(["eval", str(run), "--task.seq_len", "32"]) == 0
    assert "val/bits_per_byte" in capsys.readouterr().out
    assert main(["eval", str(run), "--train.steps", "3"]) == 2
    assert "eval takes task overrides only" in capsys.readouterr().err


def test_export_writes_a_hugging_face_folder(tmp_path, capsys):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from tests.train.test_runs import saved_run

    model = saved_run(tmp_path / "run").eval()
    out = tmp_path / "hf"
    assert main(["export", str(tmp_path / "run"), "--hf", str(out)]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "modeling_recur.py"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["lm"]["mixer"] == "" and config["lm"]["pattern"] == ["mamba2", "attention"]
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 32, (2, 5))
    assert torch.equal(loaded.generate(ids, max_new_tokens=3, do_sample=False), model.generate(ids, 3, temperature=0))

    assert main(["export", str(tmp_path / "run"), "--hf", str(out)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    saved_run(tmp_path / "adding", "adding", {})
    assert main(["export", str(tmp_path / "adding"), "--hf", str(tmp_path / "hf2")]) == 2
    assert "needs a language-model run; task 'adding' is a regress task" in capsys.readouterr().err
    assert not (tmp_path / "hf2").exists()


def test_bench_ops_writes_ratios_and_first_call(tmp_path, capsys):
    out = tmp_path / "ops.md"
    argv = ["bench", "ops", "--family", "gla", "--T", "16", "--repeat", "1", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    table = out.read_text()
    assert "<!-- family:gla -->" in table and "first call (s)" in table
    rows = [line for line in table.splitlines() if line.startswith("| 16 |")]
    assert [row.split(" | ")[1] for row in rows][:2] == ["naive (per-channel gate)", "chunk (per-channel gate)"]
    assert rows[0].split(" | ")[5] == "1.0×"


def test_bench_ops_writes_to_its_run_unless_asked_to_update_the_published_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "ops", "--family", "delta_product", "--T", "8", "--repeat", "1", "--threads", "1"]
    assert main(argv) == 0
    written = list(Path("runs").glob("bench-*/cpu-ops.md"))
    assert len(written) == 1 and "<!-- family:delta_product -->" in written[0].read_text()
    assert not Path("benchmarks").exists()
    assert f"wrote {written[0]}" in capsys.readouterr().out
    assert main([*argv, "--update-benchmarks"]) == 0
    assert "<!-- family:delta_product -->" in Path("benchmarks/cpu-ops.md").read_text()
    assert "wrote benchmarks/cpu-ops.md" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*argv, "--update-benchmarks", "--out", "elsewhere.md"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_bench_ops_rnn_times_torch_lstm_beside_the_forms(tmp_path):
    out = tmp_path / "ops.md"
    argv = ["bench", "ops", "--family", "rnn", "--T", "8", "--repeat", "1", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    rows = {row[1]: row for row in (line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| 8 |"))}
    # the columns "vs fastest peer" fwd and fwd+bwd
    assert rows["torch.nn.LSTM"][6:8] == ["peer", "peer"]
    for form in ("naive (lstm)", "sequential (lstm)"):
        assert all(ratio.endswith("×") and float(ratio[:-1]) > 0 for ratio in rows[form][6:8])
    assert "Peers: torch " in out.read_text()


def test_bench_recall_keeps_earlier_rows(tmp_path, capsys):
    out = tmp_path / "recall.md"
    common = ["bench", "recall", "--d-model", "16", "--steps", "1", "--seeds", "1", "--out", str(out)]
    assert main([*common, "--mixers", "gla", "lstm"]) == 0
    assert main([*common, "--mixers", "lstm"]) == 0
    table = out.read_text()
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| gla") or line.startswith("| lstm")]
    assert sorted(row[0].strip("| ") for row in rows) == ["gla", "lstm"]
    assert all(0 <= float(row[4].split(" ± ")[0]) <= 1 and 0 <= float(row[5].split(" ± ")[0]) <= 1 for row in rows)
    assert json.loads(out.with_suffix(".json").read_text())[0]["mixer"] == "gla"
    assert out.with_suffix(".png").is_file()
    assert main([*common, "--mixers", "bidirectional"]) == 2
    assert "not a causal mixer" in capsys.readouterr().err


def test_recall_widths_matched_to_a_state_budget():
    from recur.bench.recall import match_state, state_bytes

    for mixer in ("gla", "lstm", "deltanet"):
        width = match_state(mixer, 16 * 1024)
        size, _ = state_bytes(mixer, width)
        # no candidate width lands closer to the budget
        assert size > 0 and width in (16, 32, 48, 64, 96, 128, 192, 256)


def test_sdpa_case_is_causal_attention_on_the_same_shapes():
    from recur.bench.ops import sdpa_case

    q, k, v = (torch.randn(2, 5, 3, 4) for _ in range(3))
    case = sdpa_case(q, k, v)
    o = case.run()
    scores = torch.einsum("bthd,bshd->bhts", q, k) / 2 + torch.full((5, 5), float("-inf")).triu(1)
    expected = torch.einsum("bhts,bshd->bhtd", scores.softmax(-1), v)
    assert o.shape == (2, 3, 5, 4)
    torch.testing.assert_close(o, expected, rtol=1e-5, atol=1e-6)
    assert all(x.requires_grad and x.is_leaf for x in case.inputs)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _nan_loss(monkeypatch, tmp_path):
    import recur.train.loop

    monkeypatch.setattr(recur.train.loop, "auxiliary_loss", lambda model: float("nan"))
    return ["train", *TINY, "--run-dir", str(tmp_path / "nan"), "--no-progress"]


def _full_disk(monkeypatch, tmp_path):
    import errno

    import safetensors.torch

    def full_disk(tensors, filename, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    return ["train", *TINY, "--run-dir", str(tmp_path / "full"), "--no-progress"]


def _other_size(monkeypatch, tmp_path):
    from tests.train.test_run_folder import rewrite

    run = tmp_path / "other"
    assert main(["train", *TINY, "--run-dir", str(run), "--no-progress"]) == 0
    rewrite(run / "model", "state.json", lambda info: info["config"]["model"].update(d_model=64))
    return ["eval", str(run)]


@pytest.mark.parametrize("setup, message", [
    (lambda mp, tmp: ["train", *TINY, "--nproc", "-1"], "error: --nproc must be a positive int; got -1"),
    (lambda mp, tmp: ["train", *TINY, "--nproc", "3"],
     "error: train.batch_size = 16 must be divisible by train.grad_accum × --nproc = 1 × 3"),
    (_nan_loss, "error: training loss became nan at step 1"),
    (_full_disk, "error: could not save the checkpoint of step 3 in "),
    (_other_size, "embedding.weight has shape [32, 32]; the run's config gives [32, 64]"),
], ids=["negative-nproc", "batch-by-nproc", "nan-loss", "disk-full", "eval-model-size"])
def test_run_failures_are_one_line(setup, message, monkeypatch, tmp_path, capsys):
    argv = setup(monkeypatch, tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    assert message in _one_line_error(capsys)


def test_ctrl_c_saves_and_a_resume_continues_the_run_as_it_was(tmp_path, capsys):
    from recur.train.checkpoint import checkpoint_dirs
    from recur.train.logging import read_metrics
    from tests.train.test_run_folder import files

    run = tmp_path / "run"
    argv = [*TINY, "--train.steps", "100", "--train.eval_every", "50", "--train.log_every", "1", "--run-dir", str(run)]
    child = subprocess.Popen([sys.executable, "-m", "recur.cli", "train", *argv, "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    metrics = run / "metrics.jsonl"
    while child.poll() is None and not (metrics.exists() and len(read_metrics(metrics)) >= 3):
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=300)
    step = int(checkpoint_dirs(run)[-1].name.removeprefix("step_"))
    assert child.returncode == 130 and 3 <= step < 100, err
    assert err.splitlines() == [f"interrupted at step {step}; continue with: recur train --run-dir {run} --resume"]
    config = (run / "config.json").read_text()

    # the run's own config: no recipe to repeat, no override to forget
    assert main(["train", "--run-dir", str(run), "--resume", "--recipe", "mqar"]) == 2
    assert "drop --recipe" in _one_line_error(capsys)
    assert main(["train", "--run-dir", str(run), "--resume", "--train.lr", "0.1"]) == 2
    assert "changes train.lr (saved 0.003, given 0.1)" in _one_line_error(capsys)
    assert main(["train", "--run-dir", str(run), "--resume", "--no-progress"]) == 0
    assert "steps            | 100\n" in capsys.readouterr().out
    assert json.loads((run / "result.json").read_text())["steps"] == 100
    assert (run / "config.json").read_text() == config

    # finished: a resume says so and changes nothing
    before = files(run)
    assert main(["train", "--run-dir", str(run), "--resume"]) == 0
    assert "nothing to resume: the run trained all its 100 steps" in capsys.readouterr().out
    assert files(run) == before


@pytest.mark.parametrize("name,metric", [("arrow_pointing", "test_2x/accuracy"), ("point_shapes", "test/accuracy")])
def test_vision_recipes_train_five_steps(name, metric, tmp_path, capsys):
    argv = ["train", "--recipe", name, "--train.steps", "5", "--train.batch_size", "8", "--task.eval_examples", "16",
            "--train.threads", "1", "--run-dir", str(tmp_path / name), "--no-progress"]
    assert main(argv) == 0
    assert metric in capsys.readouterr().out


@pytest.mark.parametrize("name", ["niah", "mqar_memory"])
def test_memory_retrieval_recipes_train_five_steps_and_test_at_4096(name, tmp_path, capsys):
    argv = ["train", "--recipe", name, "--train.steps", "5", "--train.batch_size", "8", "--task.eval_examples", "8",
            "--model.d_model", "16", "--train.threads", "1", "--run-dir", str(tmp_path / name), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert all(f"{split}/accuracy" in out for split in ("val", "test", "test_1024", "test_4096"))


@pytest.mark.parametrize("mixer", ["lightnet_2d", "vig", "activator", "lightnet"])
def test_train_digits_2d_with_grid_and_sequence_mixers(mixer, tmp_path, capsys):
    """A grid mixer in model.mixer runs the backbone on the patch grid; a sequence mixer reads
    the recipe's scan. Both train, save and evaluate."""
    run = tmp_path / mixer
    argv = ["train", "--recipe", "digits_2d", "--model.mixer", mixer, "--model.d_model", "32", "--train.steps", "5",
            "--train.eval_every", "5", "--train.batch_size", "16", "--train.threads", "1", "--head.pooling", "corners",
            "--run-dir", str(run), "--no-progress"]
    assert main(argv) == 0
    assert "test/accuracy" in capsys.readouterr().out
    assert main(["eval", str(run)]) == 0


def test_a_grid_mixer_reads_the_twice_larger_test_grid(tmp_path, capsys):
    """arrow_pointing tests at twice the training resolution: a grid mixer reads the larger grid."""
    argv = ["train", "--recipe", "arrow_pointing", "--model.mixer", "lightnet_2d", "--model.d_model", "32",
            "--train.steps", "5", "--train.batch_size", "8", "--task.eval_examples", "16", "--train.threads", "1",
            "--head.pooling", "corners", "--run-dir", str(tmp_path / "arrow"), "--no-progress"]
    assert main(argv) == 0
    assert "test_2x/accuracy" in capsys.readouterr().out
