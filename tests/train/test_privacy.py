"""Differentially private training: per-example gradients, clipping, the accountant, and runs."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from recur.cli import main
from recur.recipes import recipe
from recur.tasks import get_task
from recur.train import RunWarning, saved_config, train
from recur.train import accountant as accounting
from recur.train.config import PrivacyConfig
from recur.train.loop import _build, _train_step, build_model
from recur.train.privacy import clip_per_sample, per_sample_gradients, perturb_inputs

SMALL = [("task.seq_len", "10"), ("task.eval_examples", "32"), ("model.d_model", "8"), ("train.threads", "1")]
MIXERS = {
    "lstm": [("model.mixer", "lstm")],
    "gru": [("model.mixer", "gru")],
    "bidirectional_gru": [("model.mixer", "bidirectional"), ("model.mixer_options.bidirectional.mixer", "gru")],
}


def _model_and_batch(overrides, n=5):
    config = recipe("adding", [*SMALL, *overrides])
    task = get_task(config.task_name)(config.task)
    torch.manual_seed(0)
    model = build_model(config, task).double()
    batch = task.sample(n, torch.Generator().manual_seed(1))
    return model, batch["inputs"].double(), {"labels": batch["labels"].double()}


@pytest.mark.parametrize("method", ["vmap", "loop"])
@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_per_sample_gradients_are_those_of_single_example_batches(mixer, method):
    model, inputs, extras = _model_and_batch(MIXERS[mixer])
    grads, losses = per_sample_gradients(model, inputs, extras, method)
    for i in range(len(inputs)):
        model.zero_grad()
        loss = model(inputs[i:i + 1], labels=extras["labels"][i:i + 1]).loss
        loss.backward()
        assert float(losses[i]) == pytest.approx(float(loss.detach()), rel=1e-12)
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad, rtol=1e-10, atol=1e-12, msg=f"{name}, example {i}")


def test_auto_falls_back_to_a_loop_where_vmap_cannot_run():
    # the op families check their inputs' values (finite, no faults), which vmap refuses
    model, inputs, extras = _model_and_batch([("model.mixer", "lstm"), ("model.mixer_options.lstm.impl", "naive")], n=3)
    with pytest.raises(RuntimeError, match="vmap"):
        per_sample_gradients(model, inputs, extras, "vmap")
    grads, _ = per_sample_gradients(model, inputs, extras, "loop")
    model.zero_grad()
    model(inputs[2:3], labels=extras["labels"][2:3]).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name][2], p.grad, rtol=1e-10, atol=1e-12)


def test_clipping_bounds_every_example_and_keeps_small_ones():
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.1, 0.5, 2.0, 10.0], dtype=torch.float64)
    grads = {
        "a": torch.randn(4, 3, 5, generator=generator, dtype=torch.float64) * scales[:, None, None],
        "b": torch.randn(4, 7, generator=generator, dtype=torch.float64) * scales[:, None],
    }
    max_norm = 1.0
    summed, norms = clip_per_sample(grads, max_norm)
    for i in range(4):
        alone, norm = clip_per_sample({k: g[i:i + 1] for k, g in grads.items()}, max_norm)
        clipped_norm = math.sqrt(sum(float(g.square().sum()) for g in alone.values()))
        assert clipped_norm <= max_norm * (1 + 1e-12)
        if norm[0] <= max_norm:
            # an example within the bound is left as it is
            for k in grads:
                torch.testing.assert_close(alone[k], grads[k][i], rtol=1e-12, atol=0)
        else:
            assert clipped_norm == pytest.approx(max_norm, rel=1e-9)
    assert norms.min() < max_norm < norms.max()
    full = torch.sqrt(sum(g.flatten(1).square().sum(1) for g in grads.values()))
    torch.testing.assert_close(norms, full)


def test_no_noise_and_no_clipping_trains_as_ordinary_steps():
    # sampling rate 1 puts every example of the private set in each batch, in order; a
    # bound no gradient reaches and σ = 0 leave the per-example mean, which is the batch's
    base = [*SMALL, ("model.mixer", "gru"), ("train.batch_size", "8"), ("train.grad_clip", "0.5")]
    private = recipe("adding", [*base, ("privacy.method", "dp_sgd"), ("privacy.dataset_size", "8"),
                                ("privacy.noise_multiplier", "0"), ("privacy.max_grad_norm", "1e6"),
                                ("train.grad_accum", "2")])
    plain = recipe("adding", base)
    device = torch.device("cpu")
    from recur.train import distributed

    context = distributed.Context()
    dp_run, run = _build(private, device, context, (1, "")), _build(plain, device, context, (1, ""))
    for step in range(4):
        dp_loss, _ = _train_step(dp_run, step)
        loss, _ = _train_step(run, step, dict(dp_run.private.data))
        assert dp_loss == pytest.approx(loss, rel=1e-5)
        for (name, p), q in zip(dp_run.model.named_parameters(), run.model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"{name} after step {step + 1}")
    assert dp_run.private.report()["epsilon"] == math.inf


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), [
    (1.1, 256 / 60000, 14040, 1e-5), (0.5, 0.01, 1000, 1e-5), (2.0, 0.001, 10000, 1e-6), (0.8, 0.1, 100, 1e-5),
])
def test_rdp_epsilon_matches_opacus(sigma, q, steps, delta):
    opacus = pytest.importorskip("opacus.accountants")
    reference = opacus.RDPAccountant()
    reference.history = [(sigma, q, steps)]
    with warnings.catch_warnings():
        # Opacus warns when the best order is its largest; the value is still the reference
        warnings.simplefilter("ignore")
        expected = reference.get_epsilon(delta)
    assert accounting.epsilon([(sigma, q, steps)], delta) == pytest.approx(expected, rel=1e-9)


def test_rdp_of_the_full_batch_gaussian_is_alpha_over_two_sigma_squared():
    # q = 1 is the plain Gaussian mechanism, sensitivity 1: RDP α / (2σ²) (Mironov, arXiv:1702.07476)
    assert accounting.rdp(1.0, 2.0, 5.0) == pytest.approx(5 / 8)
    # and the sampled mechanism at order 2 is log(1 + q² (e^{1/σ²} - 1))
    q, sigma = 0.01, 1.5
    assert accounting.rdp(q, sigma, 2) == pytest.approx(math.log1p(q * q * math.expm1(1 / sigma**2)), rel=1e-12)


def test_noise_for_a_target_epsilon_is_the_smallest_that_reaches_it():
    q, steps, delta = 0.0064, 500, 1e-5
    sigma = accounting.noise_for_epsilon(3.0, q, steps, delta)
    assert accounting.epsilon([(sigma, q, steps)], delta) <= 3.0
    assert accounting.epsilon([(sigma * 0.998, q, steps)], delta) > 3.0


def test_prv_is_no_looser_than_rdp():
    pytest.importorskip("opacus")
    history = [(1.0, 0.01, 1000)]
    prv, rdp = accounting.epsilon(history, 1e-5, "prv"), accounting.epsilon(history, 1e-5, "rdp")
    assert 0.5 * rdp < prv <= rdp


def test_input_perturbation_is_the_laplace_mechanism():
    config = PrivacyConfig(method="input", input_epsilon=2.0, input_bounds=(0.0, 1.0))
    inputs = torch.full((200_000,), 0.5)
    inputs[:10] = 5.0
    noisy = perturb_inputs(inputs, config, torch.Generator().manual_seed(0))
    noise = (noisy - inputs.clamp(0, 1)).double()
    # Laplace(b), b = (high - low) / ε: mean 0, mean absolute value b
    assert abs(float(noise.mean())) < 0.01
    assert float(noise.abs().mean()) == pytest.approx(0.5, rel=0.01)


def test_config_errors_name_the_option():
    with pytest.raises(ValueError, match="exactly one of privacy.noise_multiplier and privacy.target_epsilon"):
        PrivacyConfig(method="dp_sgd")
    with pytest.raises(ValueError, match="privacy.accountant must be 'rdp' or 'prv'; got 'gdp'"):
        PrivacyConfig(method="dp_sgd", noise_multiplier=1.0, accountant="gdp")
    config = recipe("adding", [*SMALL, ("privacy.method", "dp_sgd"), ("privacy.noise_multiplier", "1"),
                               ("privacy.dataset_size", "10"), ("train.steps", "1")])
    with pytest.raises(ValueError, match="train.batch_size = 64 exceeds privacy.dataset_size = 10"):
        train(config, progress=False)
    compiled = recipe("adding", [*SMALL, ("privacy.method", "dp_sgd"), ("privacy.noise_multiplier", "1"),
                                 ("train.compile", "true"), ("train.steps", "1")])
    with pytest.raises(ValueError, match="set train.compile false"):
        train(compiled, progress=False)


def test_resume_continues_the_accountant(tmp_path):
    config = recipe("adding", [*SMALL, ("model.mixer", "gru"), ("train.batch_size", "8"), ("train.steps", "6"),
                               ("train.eval_every", "3"), ("train.checkpoint_every", "2"),
                               ("privacy.method", "dp_sgd"), ("privacy.noise_multiplier", "1.0"),
                               ("privacy.dataset_size", "200")])
    whole = train(config, tmp_path / "whole", progress=False)

    class Stop(Exception):
        pass

    def stop(done, record):
        if done == 5:
            raise Stop

    with pytest.raises(Stop):
        train(config, tmp_path / "cut", progress=False, callback=stop)
    resumed = train(saved_config(tmp_path / "cut"), tmp_path / "cut", resume=True, progress=False)
    assert resumed.loss == whole.loss and resumed.metrics == whole.metrics
    assert resumed.privacy == whole.privacy and resumed.privacy["steps"] == 6
    assert resumed.privacy["epsilon"] == pytest.approx(accounting.epsilon([(1.0, 8 / 200, 6)], 1e-5))
    # more steps keep σ and the accountant counts on
    with pytest.warns(RunWarning, match="train.steps 6 → 8"):
        longer = train(saved_config(tmp_path / "cut", {"train.steps": 8}), tmp_path / "cut", resume=True, progress=False)
    assert longer.privacy["steps"] == 8 and longer.privacy["epsilon"] > whole.privacy["epsilon"]


def test_cli_trains_privately_and_reports_epsilon(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--recipe", "adding", *(f"--{k}={v}" for k, v in SMALL), "--train.steps", "5",
            "--train.eval_every", "5", "--train.batch_size", "16", "--privacy.method", "dp_sgd",
            "--privacy.target_epsilon", "3", "--privacy.dataset_size", "1000", "--run-dir", str(run), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "privacy (DP-SGD)" in out and "at δ = 1e-05" in out
    privacy = json.loads((run / "result.json").read_text())["privacy"]
    assert privacy["method"] == "dp_sgd" and privacy["steps"] == 5 and privacy["sampling"] == "poisson"
    assert 2.9 < privacy["epsilon"] <= 3.0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("epsilon" in record for record in logged)


def test_input_perturbation_run_reports_its_mechanism(tmp_path):
    config = recipe("adding", [*SMALL, ("model.mixer", "gru"), ("train.batch_size", "8"), ("train.steps", "2"),
                               ("train.eval_every", "2"), ("privacy.method", "input"), ("privacy.input_epsilon", "4"),
                               ("privacy.dataset_size", "100")])
    result = train(config, progress=False)
    assert result.privacy["mechanism"] == "laplace" and result.privacy["epsilon_per_value"] == 4.0
    assert result.privacy["values_per_example"] == 10 * 2
