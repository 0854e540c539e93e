"""Seeds and sweeps: mean ± std tables, chosen by validation only."""

from __future__ import annotations

import json
import math

import pytest

from recur.cli import main
from recur.recipes import recipe
from recur.train.experiments import Row, Table, grid_combinations, render_markdown

TINY = {"train.steps": "6", "train.eval_every": "3", "train.batch_size": "8", "task.eval_examples": "16",
        "task.seq_len": "8", "model.d_model": "16"}


def test_grid_combinations_in_order():
    assert grid_combinations({"a": ["1", "2"], "b": ["x", "y"]}) == [
        {"a": "1", "b": "x"}, {"a": "1", "b": "y"}, {"a": "2", "b": "x"}, {"a": "2", "b": "y"},
    ]
    assert grid_combinations({}) == [{}]


def test_the_choice_reads_validation_only():
    def runs(val, test):
        return [{"seed": s, "metrics": {"val/mse": v, "test/mse": t}, "steps": 1, "seconds": 1, "chosen_step": 1}
                for s, (v, t) in enumerate(zip(val, test, strict=True))]

    # b has the better test figures but the worse validation ones: a is chosen
    a = Row("a", {}, runs([0.1, 0.2], [0.9, 0.8]))
    b = Row("b", {}, runs([0.3, 0.4], [0.0, 0.0]))
    table = Table("val/mse", "test/mse", False, "cmd", [a, b])
    assert table.chosen() is a
    mean, std = a.mean_std("val/mse")
    assert mean == pytest.approx(0.15) and std == pytest.approx(math.sqrt(0.005))
    text = render_markdown(table, "t")
    assert "| a **(chosen by validation)** | 2 | 0.1500 ± 0.0707 | 0.8500 ± 0.0707 |" in text


def test_the_tables_give_the_extra_test_splits_figure():
    runs = [{"seed": s, "metrics": {"val/accuracy": 0.5, "test/accuracy": 0.4, "test_1024/accuracy": a,
                                    "test_1024/loss": 1.0, "test_4096/accuracy": b},
             "steps": 1, "seconds": 1, "chosen_step": 1} for s, (a, b) in enumerate([(0.3, 0.2), (0.1, 0.0)])]
    text = render_markdown(Table("val/accuracy", "test/accuracy", True, "cmd", [Row("r", {}, runs)]), "t")
    lines = text.splitlines()
    assert "| configuration | seeds | val/accuracy | test/accuracy | test_1024/accuracy | test_4096/accuracy | steps | seconds |" in lines
    assert "| r | 2 | 0.5000 ± 0.0000 | 0.4000 ± 0.0000 | 0.2000 ± 0.1414 | 0.1000 ± 0.1414 | 1 | 1 |" in lines
    assert "| r | 1 | 0.5000 | 0.4000 | 0.1000 | 0.0000 | 1 | 1 |" in lines
    # every table row has as many cells as its header
    tables = [line for line in lines if line.startswith("|")]
    assert {line.count("|") for line in tables[:3]} == {9} and {line.count("|") for line in tables[3:]} == {9}


def test_train_seeds_and_sweep_write_tables(tmp_path, capsys):
    overrides = [arg for key, value in TINY.items() for arg in (f"--{key}", value)]
    assert main(["train", "--recipe", "adding", "--seeds", "2", "--no-progress", "--run-dir", str(tmp_path / "s"), *overrides]) == 0
    data = json.loads((tmp_path / "s" / "seeds.json").read_text())
    assert [run["seed"] for run in data["rows"][0]["runs"]] == [0, 1]
    assert (tmp_path / "s" / "seed_1" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "s" / "seeds.md").read_text().count("| (recipe) |") == 3
    code = main(["sweep", "--recipe", "adding", "--grid", "model.mixer=gru,lstm", "--seeds", "2", "--no-progress",
                 "--run-dir", str(tmp_path / "w"), *overrides])
    assert code == 0
    sweep = json.loads((tmp_path / "w" / "sweep.json").read_text())
    assert [row["configuration"] for row in sweep["rows"]] == ["model.mixer=gru", "model.mixer=lstm"]
    assert sweep["chosen"] in ("model.mixer=gru", "model.mixer=lstm")
    assert (tmp_path / "w" / "sweep.png").is_file()
    # a bad grid key fails before any run
    assert main(["sweep", "--recipe", "adding", "--grid", "model.mixr=gru", "--run-dir", str(tmp_path / "x")]) == 2
    assert "did you mean 'model.mixer'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert recipe("adding").train.seed == 0


def test_a_stopped_seeds_call_continues_where_it_stopped(tmp_path, capsys):
    overrides = [arg for key, value in TINY.items() for arg in (f"--{key}", value)]
    folder = tmp_path / "s"
    assert main(["train", "--recipe", "adding", "--seeds", "3", "--no-progress", "--run-dir", str(folder), *overrides]) == 0
    whole = json.loads((folder / "seeds.json").read_text())
    # as if the call had stopped inside seed 1 after its first checkpoint and before seed 2
    finished = (folder / "seed_0" / "result.json").read_text()
    (folder / "seed_1" / "result.json").unlink()
    import shutil

    shutil.rmtree(folder / "seed_2")
    (folder / "seeds.json").unlink()
    capsys.readouterr()
    assert main(["train", "--run-dir", str(folder), "--resume", "--seeds", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "seed 0:" in out and "seed 2:" in out
    again = json.loads((folder / "seeds.json").read_text())
    # seed 0 was read back untouched; seeds 1 and 2 trained the same config to the same figures
    assert (folder / "seed_0" / "result.json").read_text() == finished
    assert [run["seed"] for run in again["rows"][0]["runs"]] == [0, 1, 2]
    for before, after in zip(whole["rows"][0]["runs"], again["rows"][0]["runs"], strict=True):
        assert after["metrics"] == pytest.approx(before["metrics"], rel=1e-5)
    # the table still names the command that made the folder
    assert again["command"] == whole["command"] and "--recipe adding" in again["command"]
    # a fresh call refuses the folder, and a resume refuses one without seeds
    assert main(["train", "--recipe", "adding", "--seeds", "3", "--run-dir", str(folder), *overrides]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--run-dir", str(tmp_path / "none"), "--resume", "--seeds", "3"]) == 2
    assert "no seed_<N> folders" in capsys.readouterr().err
