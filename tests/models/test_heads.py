"""Input adapters and heads around the generic backbone."""

from __future__ import annotations

import pytest
import torch

from recur.models import HeadConfig, InputConfig, LMConfig, SequenceModel
from recur.models.heads import multiclass_hinge
from recur.models.inputs import morton_codes, scan_order

CONFIG = LMConfig(vocab_size=17, d_model=32, n_layers=1, mixer="gla")


def model(head: HeadConfig, input: InputConfig | None = None, config: LMConfig = CONFIG) -> SequenceModel:
    torch.manual_seed(0)
    return SequenceModel(config, input or InputConfig(kind="tokens"), head)


def test_multiclass_hinge_by_hand():
    scores = torch.tensor([[2.0, 1.5, -1.0], [0.0, 3.0, 0.5]])
    labels = torch.tensor([0, 2])
    # example 0: 1 + 1.5 - 2 = 0.5; example 1: 1 + 3 - 0.5 = 3.5
    assert multiclass_hinge(scores, labels) == pytest.approx((0.5 + 3.5) / 2)
    assert multiclass_hinge(scores, labels, squared=True) == pytest.approx((0.25 + 12.25) / 2)
    # a margin met by every example costs nothing
    assert multiclass_hinge(torch.tensor([[5.0, 1.0]]), torch.tensor([0])) == 0


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge", "squared_hinge"])
@pytest.mark.parametrize("pooling", ["last", "mean", "cls"])
def test_classifier_shapes_and_gradients(loss, pooling):
    net = model(HeadConfig(kind="classify", num_outputs=10, pooling=pooling, loss=loss))
    ids = torch.randint(0, 17, (4, 12))
    out = net(ids, labels=torch.randint(0, 10, (4,)))
    assert out.logits.shape == (4, 10) and out.loss.dim() == 0
    out.loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_last_pooling_reads_the_final_position_causally():
    net = model(HeadConfig(kind="classify", num_outputs=3)).eval()
    ids = torch.randint(0, 17, (2, 10))
    full = net(ids).logits
    # the last position's output does not depend on how the sequence is split
    state = net(ids[:, :6]).state
    tail = net(ids[:, 6:], state).logits
    assert torch.allclose(full, tail, atol=1e-5)


def test_regressor_mse_gaussian_and_errors():
    net = model(HeadConfig(kind="regress", num_outputs=2, pooling="mean"))
    ids = torch.randint(0, 17, (3, 8))
    targets = torch.randn(3, 2)
    out = net(ids, labels=targets)
    assert float(out.loss.detach()) == pytest.approx(float(((out.logits - targets) ** 2).mean().detach()), rel=1e-6)
    with pytest.raises(ValueError, match=r"labels has shape \[3\]; expected \[3, 2\]"):
        net(ids, labels=torch.randn(3))
    with pytest.raises(ValueError, match="head.pooling must be one of"):
        HeadConfig(kind="regress", num_outputs=1, pooling="max")
    with pytest.raises(ValueError, match="head.loss must be one of"):
        HeadConfig(kind="classify", num_outputs=3, loss="svm")
    with pytest.raises(ValueError, match="head.loss for a 'classify' head must be one of"):
        model(HeadConfig(kind="classify", num_outputs=3, loss="mse"))
    gaussian = model(HeadConfig(kind="regress", num_outputs=2, loss="gaussian_nll"))
    out = gaussian(ids, labels=targets)
    assert out.variance.shape == (3, 2) and bool((out.variance > 0).all())
    expected = torch.nn.functional.gaussian_nll_loss(out.logits, targets, out.variance, full=True)
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_per_step_regression_on_vectors_ignores_nan_targets_and_steps():
    net = model(HeadConfig(kind="step_regress", num_outputs=3), InputConfig(kind="vectors", features=2)).eval()
    x = torch.randn(2, 9, 2)
    targets = torch.randn(2, 9, 3)
    targets[0, :4] = float("nan")
    out = net(x, labels=targets)
    assert out.logits.shape == (2, 9, 3) and torch.isfinite(out.loss)
    scored = ~torch.isnan(targets)
    expected = ((out.logits - targets.nan_to_num()) ** 2 * scored).sum() / scored.sum()
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    # step by step equals the forward
    state, outputs = None, []
    for t in range(9):
        y, state = net.step(x[:, t], state)
        outputs.append(y)
    assert torch.allclose(torch.stack(outputs, 1), out.logits, atol=1e-5)


def test_vector_statistics_are_stored_and_applied():
    net = model(HeadConfig(kind="regress", num_outputs=1), InputConfig(kind="vectors", features=2))
    x = torch.randn(4, 5, 2) * torch.tensor([10.0, 0.1]) + torch.tensor([3.0, -2.0])
    net.input.fit_statistics(x)
    assert torch.allclose(net.input.mean, x.reshape(-1, 2).mean(0), atol=1e-5)
    assert "input.mean" in net.state_dict() and "input.std" in net.state_dict()
    constant = torch.ones(2, 3, 2)
    net.input.fit_statistics(constant)
    assert bool((net.input.std == 1).all())


def test_forecast_head_predicts_the_horizon():
    net = model(HeadConfig(kind="forecast", num_outputs=2, horizon=5), InputConfig(kind="vectors", features=2))
    out = net(torch.randn(3, 16, 2), labels=torch.randn(3, 5, 2))
    assert out.logits.shape == (3, 5, 2) and out.loss.dim() == 0


@pytest.mark.parametrize("scan, tokens", [("row", 16), ("snake", 16), ("column", 16), ("bidirectional", 32), ("four", 64)])
def test_image_patches_in_scan_order(scan, tokens):
    net = model(
        HeadConfig(kind="classify", num_outputs=4),
        InputConfig(kind="image", channels=3, height=8, width=8, patch=2, scan=scan, position_embedding=True),
    )
    x = net.input(torch.randn(2, 3, 8, 8))
    assert x.shape == (2, tokens, 32)
    out = net(torch.randn(2, 3, 8, 8), labels=torch.tensor([0, 3]))
    out.loss.backward()


def test_scan_orders_by_hand():
    assert scan_order(2, 3, "row").tolist() == [0, 1, 2, 3, 4, 5]
    assert scan_order(2, 3, "snake").tolist() == [0, 1, 2, 5, 4, 3]
    assert scan_order(2, 3, "column").tolist() == [0, 3, 1, 4, 2, 5]
    assert scan_order(2, 3, "bidirectional").tolist() == [0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0]


def test_image_patch_token_is_its_pixels():
    """Patch (i, j) of the row scan is a linear map of exactly the pixels of that patch."""
    net = model(HeadConfig(kind="classify", num_outputs=2), InputConfig(kind="image", channels=1, height=4, width=4, patch=2))
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 2:4, 0:2] = 1.0  # patch (1, 0): the third token of the row scan
    tokens = net.input(image)
    bias = net.input.projection.bias
    moved = [(tokens[0, i] - bias).abs().sum() > 0 for i in range(4)]
    assert moved == [False, False, True, False]


def test_points_follow_a_morton_curve_and_any_order_of_the_set():
    codes = morton_codes(torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]]), bits=1)
    assert codes.tolist() == [[0, 3, 2, 1]]
    net = model(HeadConfig(kind="classify", num_outputs=3), InputConfig(kind="points", features=4, point_dims=3)).eval()
    points = torch.randn(2, 20, 4)
    shuffled = points[:, torch.randperm(20)]
    # the ordering makes the output independent of the order the set came in
    assert torch.allclose(net(points).logits, net(shuffled).logits, atol=1e-5)


def test_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="input.kind must be one of"):
        InputConfig(kind="audio")
    with pytest.raises(ValueError, match="input.patch = 3 must divide"):
        InputConfig(kind="image", channels=1, height=8, width=8, patch=3)
    net = model(HeadConfig(kind="classify", num_outputs=2), InputConfig(kind="vectors", features=2))
    with pytest.raises(ValueError, match=r"inputs must have shape \[B, T, 2\]"):
        net(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="language-model head needs token inputs"):
        model(HeadConfig(kind="lm"), InputConfig(kind="vectors", features=2))
