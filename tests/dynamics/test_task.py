"""The dynamics task under the trainer: data split in time, recipes, `recur train/eval/plot`."""

from __future__ import annotations

import json

import pytest
import torch

from recur.cli import main
from recur.recipes import recipe
from recur.tasks import build_task
from recur.train import train

SMALL = {
    "task.train_length": 3000, "task.val_length": 800, "task.test_length": 800, "task.eval_length": 600,
    "task.transient": 100, "task.vpt_horizon": 200, "task.prediction_starts": 10, "task.lyapunov_steps": 150,
}


def test_splits_are_consecutive_blocks_of_one_standardised_trajectory():
    task = build_task("dynamics", train_length=3000, val_length=800, test_length=800, eval_length=600, transient=100,
                      vpt_horizon=200, batch_noise=0.0)
    blocks = task.blocks
    assert [len(blocks[s]) for s in ("train", "val", "test")] == [3000, 800, 800]
    assert torch.allclose(blocks["train"].mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(blocks["train"].std(0), torch.ones(3), atol=1e-4)
    # consecutive samples of one flow: the val block continues the train block
    step = (blocks["train"][1:] - blocks["train"][:-1]).norm(dim=1).max()
    assert (blocks["val"][0] - blocks["train"][-1]).norm() <= 1.5 * step
    train = task.sample(4, torch.Generator().manual_seed(0), "train")
    assert train["inputs"].shape == (4, 200, 3) and torch.equal(train["inputs"], train["labels"])
    val = task.sample(2, torch.Generator().manual_seed(0), "val")["inputs"]
    assert torch.equal(val[0], blocks["val"][:600]) and torch.equal(val[1], blocks["val"][200:])


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="task.system"):
        build_task("dynamics", system="lorenz")
    with pytest.raises(ValueError, match="task.eval_length"):
        build_task("dynamics", eval_length=10_000)


@pytest.mark.parametrize("name", ["lorenz63_alrnn", "rossler_alrnn", "lorenz63_plrnn", "lorenz63_dendplrnn", "lorenz63_shplrnn"])
def test_recipes_train_and_report_the_measures(name):
    result = train(recipe(name, {**SMALL, "train.steps": 5, "train.eval_every": 5, "train.threads": 1}), progress=False)
    for split in ("val", "test"):
        for measure in ("d_stsp", "d_h", "lambda_max", "pe_20", "vpt"):
            assert f"{split}/{measure}" in result.metrics


def test_any_mixer_trains_by_feedback():
    overrides = {**SMALL, "train.steps": 3, "train.eval_every": 3, "train.threads": 1, "model.mixer": "gru",
                 "model.d_model": 16, "task.observation": "linear", "task.seq_len": 32, "task.forcing_interval": 4}
    result = train(recipe("lorenz63_alrnn", overrides), progress=False)
    assert result.metrics["test/lambda_max"] == result.metrics["test/lambda_max"]


def test_cli_train_eval_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    args = [f"--{key}={value}" for key, value in SMALL.items()]
    assert main(["train", "--recipe", "lorenz63_alrnn", "--train.steps", "5", "--run-dir", str(run), "--no-progress",
                 *args]) == 0
    printed = capsys.readouterr().out
    assert "test/d_stsp" in printed and "test/d_h" in printed and "test/lambda_max" in printed
    assert main(["eval", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "test/d_stsp" in printed and "val/lambda_max" in printed
    assert main(["plot", str(run)]) == 0
    assert (run / "attractors.png").stat().st_size > 10_000
    assert json.loads((run / "result.json").read_text())["metric"] == "val/d_stsp"


PLAIN_RHN = {"model.mixer_options.rhn_hybrid.gating": "none", "model.mixer_options.rhn_hybrid.attention_window": 0}


@pytest.mark.parametrize(("name", "variant"), [("lorenz96_rhn", {}), ("lorenz96_rhn", PLAIN_RHN), ("ks_rhn", {})])
def test_rhn_hybrid_recipes_forecast(name, variant):
    overrides = {**SMALL, **variant, "train.steps": 3, "train.eval_every": 3, "train.threads": 1, "task.seq_len": 32,
                 "task.lyapunov_steps": 20}
    result = train(recipe(name, overrides), progress=False)
    assert result.metrics["test/vpt"] >= 0 and result.metrics["test/d_stsp"] == result.metrics["test/d_stsp"]
