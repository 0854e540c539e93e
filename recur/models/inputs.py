"""Input adapters: what turns a task's inputs into the backbone's [B, T, D] sequence.

- `TokenInput`: token ids [B, T] through an embedding.
- `VectorInput`: real-valued vectors [B, T, C] through a linear map or a small MLP, after
  normalisation with statistics stored in the model (so a saved model carries them).
- `ImageInput`: images [B, C, H, W] cut into p×p patches (p = 1: pixels), each patch a token,
  in a scan order: "row" (raster), "snake" (boustrophedon rows), "column", "bidirectional"
  (row order, then the same tokens reversed) or "four" (rows and columns, each both ways).
  Multi-directional scans feed every direction to one causal stack one after the other, so
  the later directions read the earlier ones; pooling reads the end. For a backbone with a
  grid mixer the patches keep their 2-D layout instead, [B, H/p, W/p, D], and the scan
  order is not used.
- `PointInput`: point sets [B, N, C] (coordinates first) ordered along a space-filling
  curve (Morton / z-order), or by one axis, then encoded per point. With
  `point_model = "lion"` points become voxels instead (`recur.models.lion.VoxelInput`).

Each adapter has `forward(x) -> [B, T, D]`; those that make one token per time step also
have `step(x_t) -> [B, D]` for step-by-step decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

INPUT_KINDS = ("tokens", "vectors", "image", "points")
ENCODERS = ("linear", "mlp")
SCANS = ("row", "snake", "column", "bidirectional", "four")
POINT_ORDERS = ("morton", "x", "none")
POINT_MODELS = ("sequence", "lion")


@dataclass(kw_only=True)
class InputConfig:
    """How inputs become tokens. The task fills in the sizes it knows (vocab, features,
    image shape); the rest are choices."""

    # "tokens", "vectors", "image" or "points"; set by the task
    kind: str = "tokens"
    # vectors and points: input features per step (per point); set by the task
    features: int = 0
    # vectors and points: "linear" or "mlp" (one hidden layer of d_model, GELU)
    encoder: str = "linear"
    # vectors: normalise with the training split's per-feature mean and std
    normalize: bool = True
    # image: channels, height, width (set by the task), patch size and scan order
    channels: int = 0
    height: int = 0
    width: int = 0
    patch: int = 1
    scan: str = "row"
    # image: add a learned position embedding per token (for attention, which has none;
    # a ViT is `vit_attention` with it); resampled bicubically for images of another size
    position_embedding: bool = False
    # points: "morton" (z-order of the coordinates), "x" (sorted by the first coordinate), "none"
    point_order: str = "morton"
    # points: how many leading features are coordinates (the rest are per-point features)
    point_dims: int = 3
    # points: "sequence" (one token per point, in point_order, through the backbone) or
    # "lion" (voxels in windows, each layer's mixer run per group along x, then y:
    # recur.models.lion)
    point_model: str = "sequence"
    # lion: voxels per axis over the box [-lion_extent, lion_extent]^3, voxels per window
    # side (0 = the whole grid), voxels per group, and the fraction of each cloud's voxels
    # that generate new ones after every x-y pair of layers (0 = no voxel generation)
    lion_voxels: int = 12
    lion_extent: float = 1.5
    lion_window: int = 0
    lion_group: int = 64
    lion_generation: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"input.kind must be one of {list(INPUT_KINDS)}; got {self.kind!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"input.encoder must be one of {list(ENCODERS)}; got {self.encoder!r}")
        if self.scan not in SCANS:
            raise ValueError(f"input.scan must be one of {list(SCANS)}; got {self.scan!r}")
        if self.point_order not in POINT_ORDERS:
            raise ValueError(f"input.point_order must be one of {list(POINT_ORDERS)}; got {self.point_order!r}")
        if self.point_model not in POINT_MODELS:
            raise ValueError(f"input.point_model must be one of {list(POINT_MODELS)}; got {self.point_model!r}")
        for name in ("lion_voxels", "lion_group"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"input.{name} must be a positive int; got {value!r}")
        if not isinstance(self.lion_window, int) or self.lion_window < 0:
            raise ValueError(f"input.lion_window must be a non-negative int (0 = the whole grid); got {self.lion_window!r}")
        if not self.lion_extent > 0:
            raise ValueError(f"input.lion_extent must be positive; got {self.lion_extent!r}")
        if not 0 <= self.lion_generation <= 1:
            raise ValueError(f"input.lion_generation must be in [0, 1]; got {self.lion_generation!r}")
        for name in ("features", "channels", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"input.{name} must be a non-negative int; got {value!r}")
        if not isinstance(self.patch, int) or self.patch <= 0:
            raise ValueError(f"input.patch must be a positive int; got {self.patch!r}")
        if self.kind == "image" and self.height and (self.height % self.patch or self.width % self.patch):
            raise ValueError(
                f"input.patch = {self.patch} must divide the image's height and width; got {self.height}×{self.width}"
            )


def _encoder(kind: str, features: int, d_model: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(features, d_model)
    return nn.Sequential(nn.Linear(features, d_model), nn.GELU(), nn.Linear(d_model, d_model))


class TokenInput(nn.Module):
    """ids [B, T] -> embeddings [B, T, D]."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        if not isinstance(vocab_size, int) or vocab_size <= 0:
            raise ValueError(f"vocab_size must be a positive int for token inputs; got {vocab_size!r}")
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"inputs must be token ids [B, T] (int64); got {list(ids.shape)} {ids.dtype}")
        return self.embedding(ids)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)


class VectorInput(nn.Module):
    """x [B, T, C] (real-valued) -> [B, T, D]: (x − mean) / std, then the encoder.

    `mean` and `std` are buffers, saved with the model; `fit_statistics(x)` sets them from
    training data (every position of every sequence).
    """

    def __init__(self, features: int, d_model: int, encoder: str = "linear", normalize: bool = True) -> None:
        super().__init__()
        if not isinstance(features, int) or features <= 0:
            raise ValueError(f"input.features must be a positive int for vector inputs; got {features!r}")
        self.features, self.normalize = features, normalize
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        self.encoder = _encoder(encoder, features, d_model)

    @torch.no_grad()
    def fit_statistics(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1, self.features).double()
        self.mean.copy_(flat.mean(0))
        # a constant feature keeps std 1 instead of dividing by zero
        std = flat.std(0, unbiased=False)
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.features:
            raise ValueError(f"inputs must have shape [B, T, {self.features}]; got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"inputs must be floating point (real-valued vectors); got {x.dtype}")
        dtype = self.encoder_dtype()
        x = x.to(dtype)
        if self.normalize:
            x = (x - self.mean.to(dtype)) / self.std.to(dtype)
        return self.encoder(x)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x.unsqueeze(1)).squeeze(1)

    def encoder_dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype


def scan_order(rows: int, cols: int, scan: str) -> torch.Tensor:
    """The order in which a scan visits the cells of a rows×cols grid, as indices into the
    row-major flattening (directions concatenated for multi-directional scans)."""
    grid = torch.arange(rows * cols).view(rows, cols)
    row = grid.flatten()
    column = grid.t().flatten()
    if scan == "row":
        return row
    if scan == "column":
        return column
    if scan == "snake":
        snake = grid.clone()
        snake[1::2] = snake[1::2].flip(1)
        return snake.flatten()
    if scan == "bidirectional":
        return torch.cat([row, row.flip(0)])
    if scan == "four":
        return torch.cat([row, row.flip(0), column, column.flip(0)])
    raise ValueError(f"scan must be one of {list(SCANS)}; got {scan!r}")


class ImageInput(nn.Module):
    """images [B, C, H, W] -> patch tokens [B, T, D] in the configured scan order, or on
    the patch grid [B, H/p, W/p, D] with `grid=True` (for grid mixers).

    A patch of p×p pixels is one token (a linear map of its C·p² values); T is
    (H/p)·(W/p) times the number of directions the scan makes. `corners(rows, cols)` gives
    the positions, in the output's sequence (the grid's row-major cells), of the four
    corner patches, each at the last visit of the scan: what corner pooling reads.
    """

    def __init__(self, config: InputConfig, d_model: int, grid: bool = False) -> None:
        super().__init__()
        C, H, W, p = config.channels, config.height, config.width, config.patch
        if min(C, H, W) <= 0:
            raise ValueError(f"input.channels, height and width must be set for images; got {C}, {H}, {W}")
        # on a grid the cells stay in row-major order: no scan
        scan = "row" if grid else config.scan
        self.channels, self.height, self.width, self.patch, self.scan = C, H, W, p, scan
        self.grid_shape = (H // p, W // p)
        self.grid = grid
        self.register_buffer("order", scan_order(*self.grid_shape, scan), persistent=False)
        self.projection = nn.Linear(C * p * p, d_model)
        self.position = nn.Parameter(torch.zeros(len(self.order), d_model)) if config.position_embedding else None
        if self.position is not None:
            nn.init.normal_(self.position, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images of the configured size, or of any other whose sides the patch divides (an
        extrapolation test at a larger size): the scan then covers the larger grid of patches."""
        p = self.patch
        if images.dim() != 4 or images.shape[1] != self.channels or images.shape[2] % p or images.shape[3] % p:
            raise ValueError(
                f"inputs must be images [B, {self.channels}, H, W] with H and W multiples of the patch {p} "
                f"(trained on {self.height}×{self.width}); got {list(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point; got {images.dtype}")
        B, _, H, W = images.shape
        order = self.order
        if (H // p, W // p) != self.grid_shape:
            order = scan_order(H // p, W // p, self.scan).to(images.device)
        # [B, C, H/p, p, W/p, p] -> [B, (H/p)(W/p), C·p·p], row-major over patches
        patches = images.unflatten(2, (-1, p)).unflatten(4, (-1, p)).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, self.channels * p * p)
        tokens = self.projection(patches.to(self.projection.weight.dtype))[:, order]
        tokens = tokens if self.position is None else tokens + self.positions(H // p, W // p)
        return tokens.unflatten(1, (H // p, W // p)) if self.grid else tokens

    def positions(self, rows: int, cols: int) -> torch.Tensor:
        """The learned position embedding [T, D] for a rows×cols grid of patches: as trained
        at the training size; at another size resampled bicubically on the patch grid, as
        ViTs are at a new resolution, each direction of the scan on its own grid."""
        if (rows, cols) == self.grid_shape:
            return self.position
        trained_rows, trained_cols = self.grid_shape
        cells, new_cells, D = trained_rows * trained_cols, rows * cols, self.position.shape[-1]
        new_order = scan_order(rows, cols, self.scan).to(self.position.device)
        resampled = []
        for direction in range(len(self.order) // cells):
            visits = slice(direction * cells, (direction + 1) * cells)
            # this direction's embeddings put back on the grid: row-major cells [cells, D]
            on_grid = self.position.new_zeros(cells, D).index_copy(0, self.order[visits], self.position[visits])
            image = on_grid.T.reshape(1, D, trained_rows, trained_cols)
            larger = F.interpolate(image, size=(rows, cols), mode="bicubic", align_corners=False)
            on_new_grid = larger.reshape(D, new_cells).T
            resampled.append(on_new_grid[new_order[direction * new_cells:(direction + 1) * new_cells]])
        return torch.cat(resampled)

    def corners(self, rows: int, cols: int) -> torch.Tensor:
        """The last position of each corner patch of a rows×cols patch grid in the output's
        sequence: [4] (top left, top right, bottom left, bottom right)."""
        order = self.order if (rows, cols) == self.grid_shape else scan_order(rows, cols, self.scan).to(self.order.device)
        visits = torch.arange(len(order), device=order.device)
        corner_cells = [0, cols - 1, (rows - 1) * cols, rows * cols - 1]
        return torch.stack([visits[order == cell].max() for cell in corner_cells])


def morton_codes(coordinates: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """Z-order codes of points [B, N, d]: each coordinate scaled to [0, 2^bits) within its
    own cloud, then the bits interleaved. Nearby points get nearby codes."""
    low = coordinates.amin(1, keepdim=True)
    span = (coordinates.amax(1, keepdim=True) - low).clamp_min(1e-12)
    cells = ((coordinates - low) / span * (2**bits - 1)).round().long()
    d = coordinates.shape[-1]
    codes = torch.zeros(coordinates.shape[:2], dtype=torch.long, device=coordinates.device)
    for bit in range(bits):
        for axis in range(d):
            codes |= ((cells[..., axis] >> bit) & 1) << (bit * d + axis)
    return codes


class PointInput(nn.Module):
    """point sets [B, N, C] (the first `point_dims` features are coordinates) -> [B, N, D],
    the points ordered along a Morton curve (or the first axis) so that the sequence walks
    through space."""

    def __init__(self, config: InputConfig, d_model: int) -> None:
        super().__init__()
        if config.features <= 0 or not 0 < config.point_dims <= config.features:
            raise ValueError(
                f"points need input.features >= input.point_dims > 0; got features {config.features}, "
                f"point_dims {config.point_dims}"
            )
        self.features, self.point_dims, self.order = config.features, config.point_dims, config.point_order
        self.encoder = _encoder(config.encoder, config.features, d_model)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.dim() != 3 or points.shape[-1] != self.features:
            raise ValueError(f"inputs must be point sets [B, N, {self.features}]; got {list(points.shape)}")
        if not points.is_floating_point():
            raise ValueError(f"points must be floating point; got {points.dtype}")
        if self.order != "none":
            coordinates = points[..., : self.point_dims]
            key = morton_codes(coordinates) if self.order == "morton" else coordinates[..., 0]
            index = key.argsort(dim=1, stable=True)
            points = points.gather(1, index[..., None].expand_as(points))
        return self.encoder(points.to(self.encoder_dtype()))

    def encoder_dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype


def build_input(config: InputConfig, d_model: int, vocab_size: int, grid: bool = False) -> nn.Module:
    """The adapter `config.kind` names; `grid`: images keep their 2-D patch layout."""
    if config.kind == "tokens":
        return TokenInput(vocab_size, d_model)
    if config.kind == "vectors":
        return VectorInput(config.features, d_model, config.encoder, config.normalize)
    if config.kind == "image":
        return ImageInput(config, d_model, grid)
    return PointInput(config, d_model)
