"""Vision models from the registry: patches on their grid for grid mixers, in a scan order
for sequence mixers, pooled (mean, last, corners) into a classifier."""

from __future__ import annotations

import pytest
import torch

from recur.layers.grid import GRID_MIXERS
from recur.models import LM, HeadConfig, InputConfig, LMConfig, SequenceModel
from recur.models.inputs import ImageInput, scan_order

IMAGE = dict(kind="image", channels=1, height=8, width=12, patch=2)


def vision_model(mixer="vig", pooling="mean", pattern=(), scan="row", n_layers=2, **input_options) -> SequenceModel:
    torch.manual_seed(0)
    config = LMConfig(vocab_size=0, d_model=32, n_layers=n_layers, mixer=mixer, pattern=pattern, mlp_ratio=2.0)
    return SequenceModel(config, InputConfig(**IMAGE, scan=scan, **input_options), HeadConfig(kind="classify", num_outputs=5, pooling=pooling))


@pytest.mark.parametrize("pooling", ["mean", "last", "corners"])
@pytest.mark.parametrize("mixer", sorted(GRID_MIXERS))
def test_grid_models_classify_and_train(mixer, pooling):
    """Any registered grid mixer builds a vision model, whoever wrote it."""
    net = vision_model(mixer, pooling)
    assert net.config.grid
    images = torch.randn(3, 1, 8, 12)
    assert net.input(images).shape == (3, 4, 6, 32)
    out = net(images, labels=torch.tensor([0, 4, 2]))
    assert out.logits.shape == (3, 5)
    out.loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, missing
    assert net.state_size() == 0


def test_grid_layout_is_the_row_scan_unflattened():
    """The grid adapter's cell (i, j) is the row scan's token i·W + j, whatever the scan option."""
    torch.manual_seed(0)
    grid = ImageInput(InputConfig(**IMAGE, scan="snake", position_embedding=True), 32, grid=True)
    torch.manual_seed(0)
    row = ImageInput(InputConfig(**IMAGE, scan="row", position_embedding=True), 32)
    images = torch.randn(2, 1, 8, 12)
    assert torch.equal(grid(images).flatten(1, 2), row(images))


def test_a_hybrid_of_grid_and_sequence_mixers_runs_on_the_grid():
    """Sequence mixers between grid mixers read the cells in row-major order."""
    net = vision_model(pattern=("vig", "gla"))
    out = net(torch.randn(2, 1, 8, 12), labels=torch.tensor([1, 2]))
    out.loss.backward()
    assert net.backbone.blocks[1].mixer.name == "gla"


@pytest.mark.parametrize("scan", ["row", "snake", "column", "bidirectional", "four"])
def test_corner_positions_are_the_last_visits_of_the_corner_patches(scan):
    adapter = ImageInput(InputConfig(**IMAGE, scan=scan), 8)
    order = scan_order(4, 6, scan)
    # the corner cells of a 4 × 6 patch grid, row-major
    corners = adapter.corners(4, 6)
    assert sorted(order[corners].tolist()) == [0, 5, 18, 23]
    for position in corners.tolist():
        assert (order[position + 1:] != order[position]).all()


def test_corner_pooling_reads_only_the_corners():
    net = vision_model("activator", "corners", n_layers=1)
    images = torch.randn(1, 1, 8, 12)
    changed = images.clone()
    # a pixel of patch (1, 1), not a corner: the per-patch Activator carries it nowhere else
    changed[0, 0, 2, 2] += 5.0
    assert torch.equal(net(images).logits, net(changed).logits)
    changed[0, 0, 0, 0] += 5.0
    assert not torch.equal(net(images).logits, net(changed).logits)


def test_one_dimensional_mixers_read_a_scan_with_any_pooling():
    net = vision_model("lightnet", "corners", scan="four")
    out = net(torch.randn(2, 1, 8, 12), labels=torch.tensor([1, 2]))
    assert out.logits.shape == (2, 5) and not net.config.grid


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SequenceModel(LMConfig(vocab_size=9, d_model=32, mixer="vig"), InputConfig(kind="tokens"),
                               HeadConfig(kind="classify", num_outputs=2)), "grid mixers read a 2-D layout and need image inputs"),
        (lambda: vision_model(pooling="cls"), "head.pooling 'cls' appends a token"),
        (lambda: SequenceModel(LMConfig(vocab_size=9, d_model=32), InputConfig(kind="tokens"),
                               HeadConfig(kind="classify", num_outputs=2, pooling="corners")), "'corners' needs image inputs"),
        (lambda: LMConfig(vocab_size=0, mixer="vgi"), "unknown mixer 'vgi'; did you mean 'vig'"),
        (lambda: LM(LMConfig(vocab_size=9, d_model=32, mixer="lightnet_2d")), "a language model cannot use"),
        (lambda: LMConfig(vocab_size=0, mixer="vig", mixer_options={"vig": {"conv_size": 4}}), "conv_size must be a positive odd"),
    ],
)
def test_misuse_is_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_grid_blocks_take_no_state_and_have_no_step():
    net = vision_model()
    x = net.input(torch.randn(1, 1, 8, 12))
    with pytest.raises(ValueError, match="read whole; state must be None"):
        net.backbone(x, [{}, {}])
    with pytest.raises(ValueError, match="has no step"):
        net.backbone.blocks[0].step(torch.randn(1, 32), None)


@pytest.mark.parametrize("scan", ["row", "snake", "bidirectional"])
def test_a_constant_position_embedding_stays_constant_at_a_larger_size(scan):
    """Resampling on the patch grid: a constant embedding is resampled to itself, every token
    of the larger image gets one, and the training size is unchanged."""
    adapter = ImageInput(InputConfig(**IMAGE, scan=scan, position_embedding=True), 16)
    with torch.no_grad():
        adapter.position.copy_(torch.linspace(-1, 1, 16).expand_as(adapter.position))
    rows, cols = adapter.grid_shape
    assert torch.equal(adapter.positions(rows, cols), adapter.position)
    larger = adapter.positions(2 * rows, 2 * cols)
    assert larger.shape == (len(adapter.position) * 4, 16)
    assert torch.allclose(larger, adapter.position[:1].expand_as(larger), atol=1e-6)


def test_resampled_positions_follow_the_cells_not_the_scan():
    """The same per-cell embedding, stored in row order or in snake order, resamples to the
    same per-cell embedding at twice the size: the bookkeeping of scan orders is right."""
    row = ImageInput(InputConfig(**IMAGE, scan="row", position_embedding=True), 8)
    snake = ImageInput(InputConfig(**IMAGE, scan="snake", position_embedding=True), 8)
    rows, cols = row.grid_shape
    per_cell = torch.randn(rows * cols, 8, dtype=row.position.dtype)
    with torch.no_grad():
        row.position.copy_(per_cell[row.order])
        snake.position.copy_(per_cell[snake.order])
    cells_row = torch.empty(4 * rows * cols, 8).index_copy(0, scan_order(2 * rows, 2 * cols, "row"), row.positions(2 * rows, 2 * cols))
    cells_snake = torch.empty(4 * rows * cols, 8).index_copy(
        0, scan_order(2 * rows, 2 * cols, "snake"), snake.positions(2 * rows, 2 * cols)
    )
    assert torch.allclose(cells_row, cells_snake, atol=1e-6)


def test_a_vit_reads_images_at_twice_its_training_size():
    adapter = ImageInput(InputConfig(**IMAGE, position_embedding=True), 8)
    images = torch.randn(2, IMAGE["channels"], 2 * IMAGE["height"], 2 * IMAGE["width"], requires_grad=True)
    tokens = adapter(images)
    assert tokens.shape == (2, 4 * len(adapter.order), 8)
    tokens.sum().backward()
    assert adapter.position.grad is not None and torch.isfinite(adapter.position.grad).all()
