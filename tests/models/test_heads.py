"""Classification and regression heads over the generic backbone."""

from __future__ import annotations

import pytest
import torch

from recur.models import LMConfig
from recur.models.heads import SequenceClassifier, SequenceRegressor, multiclass_hinge

CONFIG = LMConfig(vocab_size=17, d_model=32, n_layers=1, mixer="gla")


def test_multiclass_hinge_by_hand():
    scores = torch.tensor([[2.0, 1.5, -1.0], [0.0, 3.0, 0.5]])
    labels = torch.tensor([0, 2])
    # example 0: 1 + 1.5 - 2 = 0.5; example 1: 1 + 3 - 0.5 = 3.5
    assert multiclass_hinge(scores, labels) == pytest.approx((0.5 + 3.5) / 2)
    assert multiclass_hinge(scores, labels, squared=True) == pytest.approx((0.25 + 12.25) / 2)
    # a margin met by every example costs nothing
    assert multiclass_hinge(torch.tensor([[5.0, 1.0]]), torch.tensor([0])) == 0


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge", "squared_hinge"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_shapes_and_gradients(loss, pooling):
    model = SequenceClassifier(CONFIG, num_classes=10, pooling=pooling, loss=loss)
    ids = torch.randint(0, 17, (4, 12))
    labels = torch.randint(0, 10, (4,))
    out = model(ids, labels=labels)
    assert out.logits.shape == (4, 10) and out.loss.dim() == 0
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_last_pooling_reads_the_final_position_causally():
    model = SequenceClassifier(CONFIG, num_classes=3, pooling="last").eval()
    ids = torch.randint(0, 17, (2, 10))
    full = model(ids).logits
    # the last position's output does not depend on how the sequence is split
    _, state = model.pooled(ids[:, :6], None)
    tail, _ = model.pooled(ids[:, 6:], state)
    assert torch.allclose(full, tail, atol=1e-5)


def test_regressor_mse_and_errors():
    model = SequenceRegressor(CONFIG, num_outputs=2, pooling="mean")
    ids = torch.randint(0, 17, (3, 8))
    targets = torch.randn(3, 2)
    out = model(ids, labels=targets)
    assert float(out.loss.detach()) == pytest.approx(float(((out.logits - targets) ** 2).mean().detach()), rel=1e-6)
    with pytest.raises(ValueError, match=r"labels has shape \[3\]; expected \[3, 2\]"):
        model(ids, labels=torch.randn(3))
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceRegressor(CONFIG, 1, pooling="max")
    with pytest.raises(ValueError, match="classification loss must be one of"):
        SequenceClassifier(CONFIG, 3, loss="svm")
