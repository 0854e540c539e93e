"""LION: linear group RNNs over the voxels of a point cloud.

Liu et al., "LION: Linear Group RNN for 3D Object Detection in Point Clouds" (NeurIPS 2024,
arXiv:2407.18232). Points become voxels; the occupied voxels are partitioned into windows,
ordered along one axis inside each window and cut into groups of equal size; a linear RNN
(any mixer of the registry here) runs over each group as a sequence, and consecutive layers
alternate the axis (x, then y), so information crosses the lines one layer left. Per layer:

    x ← x + GELU(LN(conv3(x)))        3-D spatial feature descriptor, on occupied voxels only
    groups = window_groups(occupied, axis = x if the layer is even else y)
    x[groups] ← Block(x[groups])       the mixer and MLP over each group, [groups, K, D]

and after every pair of layers (x then y) but the last, voxel generation: in every cloud the
voxels of the highest feature response (max over channels) diffuse to their four diagonal
neighbours in the x–y plane, which join the occupied set with zero features for the next
layers' recurrences to fill (the auto-regressive property the paper relies on). The output is
the mean over occupied voxels.

Voxelisation: points in the box [-extent, extent]³ (outside points are clamped to its border)
fall in a G³ grid; each point is encoded from its coordinates and its offset from its voxel's
centre (linear, LayerNorm, GELU) and a voxel keeps the channel-wise max over its points (the
paper's dynamic voxel feature encoder). Voxels are stored densely, [B, G, G, G, D] with an
occupancy mask, which keeps every step batched for the small grids of a CPU.

Simplifications, for the reader comparing with the paper: the descriptor's sub-manifold
convolution is depthwise (3×3×3 per channel) where the paper's mixes channels too; windows
are not shifted between blocks; there is no voxel merging or expanding (down- and
up-sampling along the height); a group is padded with zeros at its end, so causal mixers
never read the padding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.parts import RMSNorm
from .block import Block
from .inputs import InputConfig
from .lm import LMConfig

# the axis each layer's groups run along, by layer parity: x (0) on even layers, y (1) on odd
AXES = (0, 1)
# the four diagonal neighbours in the x–y plane that a generating voxel fills
DIFFUSION = ((1, 1), (1, -1), (-1, 1), (-1, -1))


class Voxels(NamedTuple):
    # [B, G, G, G, D] voxel features, zero where unoccupied
    features: torch.Tensor
    # [B, G, G, G] bool
    occupied: torch.Tensor


class Groups(NamedTuple):
    # [M] indices of the occupied voxels into the flattened [B·G·G·G] grid, in sequence order
    voxels: torch.Tensor
    # [M] where each of them sits in the flattened [num_groups · group_size] slots
    slots: torch.Tensor
    num_groups: int


def window_groups(occupied: torch.Tensor, window: int, axis: int, group_size: int) -> Groups:
    """The groups of the occupied voxels of occupied [B, X, Y, Z]: windows of window³
    voxels (one cloud each), inside a window the voxels in order along `axis` (0 = x: x
    varies fastest, then y, then z; 1 = y: y fastest, then x, then z), each window's
    sequence cut into groups of group_size, the last one padded at its end."""
    B, X, Y, Z = occupied.shape
    w = window
    b, x, y, z = torch.meshgrid(*(torch.arange(n, device=occupied.device) for n in (B, X, Y, Z)), indexing="ij")
    windows = (-(-X // w), -(-Y // w), -(-Z // w))
    # the window of each voxel, then its rank inside the window along the axis
    window_id = ((b * windows[0] + x // w) * windows[1] + y // w) * windows[2] + z // w
    fast, slow = (x % w, y % w) if axis == 0 else (y % w, x % w)
    inside = ((z % w) * w + slow) * w + fast
    key = window_id * w**3 + inside
    flat_key = key.flatten()
    voxels = flat_key.masked_fill(~occupied.flatten(), torch.iinfo(torch.long).max).argsort()[: int(occupied.sum())]
    sorted_window = window_id.flatten()[voxels]
    # each window's voxels, counted, and their rank within it
    _, counts = torch.unique_consecutive(sorted_window, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(voxels), device=occupied.device) - starts.repeat_interleave(counts)
    groups_per_window = -(-counts // group_size)
    first_group = (torch.cumsum(groups_per_window, 0) - groups_per_window).repeat_interleave(counts)
    slots = (first_group + rank // group_size) * group_size + rank % group_size
    return Groups(voxels, slots, int(groups_per_window.sum()))


def generate_voxels(voxels: Voxels, ratio: float) -> Voxels:
    """Voxel generation: in each cloud, the ceil(ratio · occupied) voxels of the highest
    response (max over channels) mark their four diagonal x–y neighbours occupied, with zero
    features."""
    features, occupied = voxels
    B = occupied.shape[0]
    response = features.amax(-1).masked_fill(~occupied, float("-inf")).view(B, -1)
    count = occupied.view(B, -1).sum(1)
    rank = response.argsort(dim=1, descending=True).argsort(dim=1)
    chosen = (rank < (ratio * count).ceil()[:, None]) & occupied.view(B, -1)
    chosen = chosen.view_as(occupied)
    grown = occupied.clone()
    X, Y = occupied.shape[1:3]
    padded = F.pad(chosen, (0, 0, 1, 1, 1, 1))  # [B, X+2, Y+2, Z]
    for dx, dy in DIFFUSION:
        # the voxel at (x, y) is marked when (x - dx, y - dy) was chosen
        grown |= padded[:, 1 - dx : 1 - dx + X, 1 - dy : 1 - dy + Y]
    return Voxels(features, grown)


class VoxelInput(nn.Module):
    """points [B, N, C] (coordinates first) -> Voxels: each point encoded from its coordinates
    and offset from its voxel's centre, a voxel the channel-wise max over its points."""

    def __init__(self, config: InputConfig, d_model: int) -> None:
        super().__init__()
        if config.point_dims != 3:
            raise ValueError(f"lion voxelises 3-D points: input.point_dims must be 3; got {config.point_dims}")
        if config.features < 3:
            raise ValueError(f"lion needs 3 coordinates per point: input.features must be >= 3; got {config.features}")
        self.features, self.grid, self.extent = config.features, config.lion_voxels, config.lion_extent
        self.encoder = nn.Sequential(nn.Linear(config.features + 3, d_model), nn.LayerNorm(d_model), nn.GELU())

    def voxel_of(self, coordinates: torch.Tensor) -> torch.Tensor:
        """The voxel of each point, [B, N, 3] long (points outside the box: its border)."""
        cell = 2 * self.extent / self.grid
        return ((coordinates + self.extent) / cell).floor().long().clamp(0, self.grid - 1)

    def forward(self, points: torch.Tensor) -> Voxels:
        if points.dim() != 3 or points.shape[-1] != self.features:
            raise ValueError(f"inputs must be point sets [B, N, {self.features}]; got {list(points.shape)}")
        if not points.is_floating_point():
            raise ValueError(f"points must be floating point; got {points.dtype}")
        B, N, _ = points.shape
        G = self.grid
        dtype = self.encoder[0].weight.dtype
        points = points.to(dtype)
        cell = self.voxel_of(points[..., :3])
        centre = (cell.to(dtype) + 0.5) * (2 * self.extent / G) - self.extent
        encoded = self.encoder(torch.cat([points, points[..., :3] - centre], -1))  # [B, N, D]
        index = ((torch.arange(B, device=points.device)[:, None] * G + cell[..., 0]) * G + cell[..., 1]) * G + cell[..., 2]
        D = encoded.shape[-1]
        features = encoded.new_zeros(B * G**3, D).scatter_reduce(
            0, index.view(-1, 1).expand(-1, D), encoded.reshape(-1, D), "amax", include_self=False
        )
        occupied = torch.zeros(B * G**3, dtype=torch.bool, device=points.device)
        occupied[index.view(-1)] = True
        return Voxels(features.view(B, G, G, G, D), occupied.view(B, G, G, G))


class SpatialDescriptor(nn.Module):
    """x + GELU(LN(conv3(x))) at the occupied voxels: a depthwise 3×3×3 sub-manifold
    convolution (computed at occupied voxels only, reading their occupied neighbours)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        # one weight per neighbour offset and channel, initialised like nn.Conv3d's
        self.weight = nn.Parameter(torch.empty(27, d_model).uniform_(-27**-0.5, 27**-0.5))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, voxels: Voxels) -> torch.Tensor:
        features, occupied = voxels
        B, X, Y, Z, D = features.shape
        padded = F.pad(features, (0, 0, 1, 1, 1, 1, 1, 1)).view(-1, D)  # [B·(X+2)(Y+2)(Z+2), D]
        b, x, y, z = occupied.nonzero(as_tuple=True)  # M occupied voxels
        shift = torch.arange(3, device=features.device)
        i, j, k = (a.flatten() for a in torch.meshgrid(shift, shift, shift, indexing="ij"))  # 27 offsets
        # each occupied voxel's 27 neighbours (unoccupied ones hold zeros): [27, M, D]
        index = (((b * (X + 2) + x + i[:, None]) * (Y + 2) + y + j[:, None]) * (Z + 2) + z + k[:, None])
        neighbours = padded.index_select(0, index.flatten()).view(27, -1, D)
        mixed = (neighbours * self.weight.to(features.dtype)[:, None]).sum(0) + self.bias.to(features.dtype)
        flat = features.reshape(-1, D)
        at = ((b * X + x) * Y + y) * Z + z
        return flat.index_add(0, at, F.gelu(self.norm(mixed))).view_as(features)


class LION(nn.Module):
    """The LION backbone: Voxels -> hidden [B, 1, D], the mean over occupied voxels after
    the layers (see the module docstring); `blocks` holds one Block per layer."""

    def __init__(self, config: LMConfig, input: InputConfig) -> None:
        super().__init__()
        self.window = input.lion_window or input.lion_voxels
        self.group_size, self.generation = input.lion_group, input.lion_generation
        self.descriptors = nn.ModuleList(SpatialDescriptor(config.d_model) for _ in range(config.n_layers))
        self.blocks = nn.ModuleList(
            Block(config.d_model, name, options, config.mlp_ratio, config.norm_eps, config.dropout)
            for name, options in config.layer_options()
        )
        self.norm = RMSNorm(config.d_model, config.norm_eps)

    def forward(self, voxels: Voxels, state: list | None = None) -> tuple[torch.Tensor, list]:
        if state:
            raise ValueError("LION runs whole point clouds; it takes no recurrent state")
        features, occupied = voxels
        B, D = features.shape[0], features.shape[-1]
        for layer, (descriptor, block) in enumerate(zip(self.descriptors, self.blocks, strict=True)):
            features = descriptor(Voxels(features, occupied))
            groups = window_groups(occupied, self.window, AXES[layer % 2], self.group_size)
            flat = features.reshape(-1, D)
            # the occupied voxels in sequence order, into their groups: [groups, K, D]
            grouped = flat.new_zeros(groups.num_groups * self.group_size, D).index_copy(0, groups.slots, flat[groups.voxels])
            mixed, _ = block(grouped.view(groups.num_groups, self.group_size, D))
            features = flat.index_copy(0, groups.voxels, mixed.reshape(-1, D)[groups.slots]).view_as(features)
            if self.generation > 0 and layer % 2 == 1 and layer < len(self.blocks) - 1:
                features, occupied = generate_voxels(Voxels(features, occupied), self.generation)
        hidden = self.norm(features)
        mask = occupied[..., None].to(hidden.dtype)
        pooled = (hidden * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp_min(1)
        return pooled.view(B, 1, D), []
