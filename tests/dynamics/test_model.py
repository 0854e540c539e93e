"""The DSR model: teacher forcing's equalities, free generation, the model's λ_max."""

from __future__ import annotations

import math

import pytest
import torch

from recur.dynamics import DSRModel, Forcing, largest_lyapunov_exponent
from recur.models import LMConfig

N = 3


def alrnn(M: int = 8, P: int = 2, **forcing) -> DSRModel:
    torch.manual_seed(0)
    config = LMConfig(vocab_size=0, d_model=M, n_layers=1, mixer="alrnn", mixer_options={"alrnn": {"num_relu": P}})
    return DSRModel(config, N, Forcing(**forcing)).double()


# the other latent maps, with the papers' recurrences written out
LATENT = {
    "plrnn": ({}, lambda d, z: d.b[0, 0] * z + z.relu() @ (d.R[0, 0] - torch.diag(d.R[0, 0].diagonal())).T + d.b[1, 0]),
    "dendplrnn": ({"num_bases": 3}, lambda d, z: d.b[0, 0] * z + sum(
        d.alpha[k] * (z - d.b[2 + k, 0]).relu() for k in range(3)) @ (d.R[0, 0] - torch.diag(d.R[0, 0].diagonal())).T
        + d.b[1, 0]),
    "shplrnn": ({"hidden_dim": 5, "clipped": True}, lambda d, z: d.b[0, 0, :8] * z + (
        (z @ d.R[1, 0] + d.b[0, 0, 16:]).relu() - (z @ d.R[1, 0]).relu()) @ d.R[0, 0].T + d.b[0, 0, 8:16]),
}


def latent(mixer: str, M: int = 8, **forcing) -> DSRModel:
    torch.manual_seed(0)
    config = LMConfig(vocab_size=0, d_model=M, n_layers=1, mixer=mixer, mixer_options={mixer: LATENT[mixer][0]})
    return DSRModel(config, N, Forcing(**forcing)).double()


def feedback(mixer: str = "gru", **forcing) -> DSRModel:
    torch.manual_seed(0)
    config = LMConfig(vocab_size=0, d_model=16, n_layers=2, mixer=mixer, mlp_ratio=0.0)
    model = DSRModel(config, N, Forcing(observation="linear", **forcing)).double()
    # the readout starts at zero ("no change"); make the map non-trivial
    torch.nn.init.normal_(model.readout.weight, std=0.3)
    return model


def data(T: int = 12, B: int = 2) -> torch.Tensor:
    return torch.randn(B, T, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_alrnn_map_is_the_papers_equation():
    model = alrnn()
    z = torch.randn(4, 8, dtype=torch.float64)
    d = model.layer.directions[0]
    A, h, W = d.b[0, 0], d.b[1, 0], d.R[0, 0]
    phi = torch.cat([z[:, :-2], z[:, -2:].relu()], dim=1)
    assert torch.allclose(model.transition(z), A * z + phi @ W.T + h, atol=1e-12)


@pytest.mark.parametrize("mixer", sorted(LATENT))
def test_plrnn_maps_are_the_papers_equations(mixer):
    model = latent(mixer)
    assert model.latent
    z = torch.randn(4, 8, dtype=torch.float64)
    expected = LATENT[mixer][1](model.layer.directions[0], z)
    assert torch.allclose(model.transition(z), expected, atol=1e-12)


@pytest.mark.parametrize("build", [alrnn, *(lambda mixer=m, **f: latent(mixer, **f) for m in sorted(LATENT))],
                         ids=["alrnn", *sorted(LATENT)])
def test_forcing_every_step_is_one_step_prediction_latent(build):
    model, x = build(interval=1), data()
    out = model.train()(x, labels=x)
    # by hand: force the first N units to x_{t-1}, step once, read the first N units
    z = model.start(x[:, 0])
    expected = [z[:, :N]]
    for t in range(1, x.shape[1]):
        z = model.transition(torch.cat([x[:, t - 1], z[:, N:]], dim=1))
        expected.append(z[:, :N])
    assert torch.allclose(out.logits, torch.stack(expected, dim=1), atol=1e-12)
    assert torch.allclose(out.loss, (out.logits[:, 1:] - x[:, 1:]).square().mean())


def test_forcing_every_step_is_one_step_prediction_feedback():
    model, x = feedback(interval=1), data()
    forced = model.train()(x).logits
    # teacher forcing at every step is the parallel forward over the data
    hidden, _ = model.backbone(model.encoder(x))
    parallel = x + model.readout(hidden)
    assert torch.allclose(forced[:, 1:], parallel[:, :-1], atol=1e-10)
    assert torch.equal(forced[:, 0], x[:, 0])


@pytest.mark.parametrize("build", [alrnn, feedback], ids=["latent", "feedback"])
def test_no_forcing_is_free_generation(build):
    x = data()
    # alpha = 0 forces nothing, and so does an interval longer than the sequence
    for model in (build(interval=3, alpha=0.0), build(interval=100)):
        assert torch.allclose(model.train()(x).logits, model.generate(x[:, 0], x.shape[1]), atol=1e-10)
        # eval mode scores the free run
        assert torch.allclose(model.eval()(x).logits, model.generate(x[:, 0], x.shape[1]), atol=1e-12)


def test_sparse_forcing_resets_the_observed_units_every_tau_steps():
    model, x = alrnn(interval=4), data(T=13)
    out = model.train()(x).logits
    z = model.start(x[:, 0])
    for t in range(1, 13):
        z = model.transition(z)
        assert torch.allclose(out[:, t], z[:, :N], atol=1e-12)
        if t % 4 == 0:
            z = torch.cat([x[:, t], z[:, N:]], dim=1)


def test_generalised_forcing_mixes_and_passes_a_share_of_the_gradient():
    model, x = alrnn(interval=1, alpha=0.25), data(T=2)
    z = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    forced = model.force(z, x[:, 0], 0.25)
    assert torch.allclose(forced[:, :N], 0.25 * x[:, 0] + 0.75 * z[:, :N])
    forced[:, :N].sum().backward()
    assert torch.allclose(z.grad[:, :N], torch.full((2, N), 0.75, dtype=torch.float64))


def test_linear_observation_forcing_hits_the_data():
    model, x = alrnn(observation="linear"), data()
    z = torch.randn(2, 8, dtype=torch.float64)
    forced = model.force(z, x[:, 0], 1.0)
    assert torch.allclose(model.observe(forced), x[:, 0], atol=1e-10)
    out = model.train()(x, labels=x)
    out.loss.backward()
    assert model.readout.weight.grad.abs().sum() > 0


def test_largest_lyapunov_exponent_of_a_linear_map():
    # P = 0 and W = 0: z' = A ⊙ z + h, whose exponents are log |A_i| per step
    model = alrnn(P=0)
    d = model.layer.directions[0]
    with torch.no_grad():
        d.R.zero_()
        d.b[0, 0] = torch.linspace(0.3, 0.9, 8, dtype=torch.float64)
    # 300 steps align Q with the slowest-decaying unit ((0.81 / 0.9)^300 ~ 1e-14)
    lam = largest_lyapunov_exponent(model, data()[:, 0], steps=350, transient=5, align=300, dt=0.01)
    assert torch.allclose(lam, torch.full((2,), math.log(0.9) / 0.01, dtype=torch.float64), atol=1e-6)


def test_largest_lyapunov_exponent_of_any_mixer():
    model = feedback("gru")
    lam = largest_lyapunov_exponent(model, data()[:, 0], steps=20, transient=5)
    assert lam.shape == (2,) and torch.isfinite(lam).all()


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="needs observation 'linear'"):
        DSRModel(LMConfig(vocab_size=0, d_model=16, n_layers=1, mixer="gru"), N, Forcing())
    with pytest.raises(ValueError, match="d_model must be at least N"):
        alrnn(M=2, P=1)
    with pytest.raises(ValueError, match="forcing interval"):
        Forcing(interval=0)
    with pytest.raises(ValueError, match="alpha"):
        Forcing(alpha=1.5)
