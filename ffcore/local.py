"""Local receptive fields without weight sharing (paper 3.2, footnotes 8 and 13): each hidden unit
sees one patch of the layer below, and units at different places have their own weights.

Stored as a masked dense layer (footnote 13): a fully connected :class:`FFLinear` whose weights are
zero outside each unit's receptive field; computed locally connected (each location's inputs
gathered, one batched matrix product over locations), which measured 3-5x faster than the masked
dense products here (benchmarks/local_fields.py, docs/RESULTS.md, "Local receptive fields").

Units are ordered location-major: unit ``loc * channels + c``; locations row-major on their grid.

The footnote-8 architecture on 28 x 28 images:
  layer 1: a 4 x 4 grid with stride 6, 10 x 10 fields, 128 channels (2,048 units);
  layer 2: a 3 x 3 grid, 220 channels, each location over 2 x 2 neighbouring locations of layer 1
           (1,980 units);
  layer 3: a 2 x 2 grid, 512 channels, each over 2 x 2 neighbouring locations of layer 2 (2,048).

The CIFAR-10 layout of paper section 4 ("topographic11"): every hidden layer a 32 x 32 topographic
map with 3 units per location (3,072 units); each unit reads the 11 x 11 locations of the map
below centred on its own (363 inputs), truncated at the edges (footnote 12); in the recurrent net
also the 11 x 11 locations of the map above, or the 10 labels for the last hidden layer. Those
fields differ in size at the edges, and with only 3 units per location the masked dense products
measured 2-2.7x faster than the locally connected ones (92 vs 245 ms for the pre-activations and
weight gradient of 100 images through the first recurrent layer, 60 vs 119 ms the last; 2-core
CPU, ``benchmarks/local_fields.py --layout topographic11``), so that layout computes masked dense
(footnote 13: :func:`restrict_linear`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ffcore.layers import FFLinear, LayerConfig


def pixel_mask(image_shape: tuple[int, int], grid: int, stride: int, field: int, channels: int) -> torch.Tensor:
    """(grid * grid * channels, H * W): location (i, j) sees the field x field pixels whose top
    left corner is (i * stride, j * stride)."""
    h, w = image_shape
    if (grid - 1) * stride + field > min(h, w):
        raise ValueError(f"a {grid} x {grid} grid with stride {stride} and {field}-pixel fields does not fit "
                         f"{h} x {w} images")
    mask = torch.zeros(grid * grid, channels, h, w)
    for i in range(grid):
        for j in range(grid):
            mask[i * grid + j, :, i * stride : i * stride + field, j * stride : j * stride + field] = 1
    return mask.reshape(grid * grid * channels, h * w)


def location_mask(in_grid: int, in_channels: int, grid: int, span: int, channels: int) -> torch.Tensor:
    """(grid^2 * channels, in_grid^2 * in_channels): location (i, j) sees the span x span input
    locations (i..i+span-1, j..j+span-1), all their channels."""
    if in_grid - span + 1 != grid:
        raise ValueError(f"a {grid} x {grid} grid over {span} x {span} neighbourhoods needs a "
                         f"{grid + span - 1} x {grid + span - 1} grid below, not {in_grid} x {in_grid}")
    mask = torch.zeros(grid, grid, channels, in_grid, in_grid, in_channels)
    for i in range(grid):
        for j in range(grid):
            mask[i, j, :, i : i + span, j : j + span, :] = 1
    return mask.reshape(grid * grid * channels, in_grid * in_grid * in_channels)


def footnote8_masks(image_shape: tuple[int, int] = (28, 28)) -> list[torch.Tensor]:
    return [pixel_mask(image_shape, grid=4, stride=6, field=10, channels=128),
            location_mask(in_grid=4, in_channels=128, grid=3, span=2, channels=220),
            location_mask(in_grid=3, in_channels=220, grid=2, span=2, channels=512)]


def map_mask(below: tuple[int, int, int], channels: int, field: int, channel_major: bool = False) -> torch.Tensor:
    """(H * W * channels, H * W * C): a topographic map of ``channels`` units at every location of
    the H x W x C map below, each unit reading the ``field`` x ``field`` locations centred on its
    own, all their channels; truncated at the edges (paper footnote 12). Units and the map below
    are location-major, unless ``channel_major`` (the map below is C planes of H x W: an image)."""
    h, w, c = below
    if field < 1 or field % 2 == 0:
        raise ValueError(f"a receptive field centred on its unit needs an odd size, got {field}")
    r = field // 2
    near_rows = (torch.arange(h)[:, None] - torch.arange(h)[None, :]).abs() <= r
    near_cols = (torch.arange(w)[:, None] - torch.arange(w)[None, :]).abs() <= r
    sees = near_rows[:, None, :, None] & near_cols[None, :, None, :]  # (h, w) unit sees (h, w) below
    mask = sees[:, :, None, :, :, None].expand(h, w, channels, h, w, c)
    if channel_major:
        mask = mask.permute(0, 1, 2, 5, 3, 4)
    return mask.reshape(h * w * channels, h * w * c).float()


def _map_geometry(image_shape: tuple[int, int], input_dim: int) -> tuple[int, int, int]:
    h, w = image_shape[:2]
    if input_dim % (h * w):
        raise ValueError(f"{input_dim} inputs are not whole {h} x {w} planes")
    return h, w, input_dim // (h * w)


TOPOGRAPHIC_FIELD = 11  # paper section 4: 11 x 11 receptive fields on the 32 x 32 maps of CIFAR-10


def topographic_masks(image_shape: tuple[int, int], input_dim: int, depth: int) -> list[torch.Tensor]:
    """Bottom-up masks of ``depth`` hidden maps the size of the image, as many units per location
    as the image has channels (3,072 units on CIFAR-10), 11 x 11 fields (paper section 4)."""
    h, w, c = _map_geometry(image_shape, input_dim)
    first = map_mask((h, w, c), c, TOPOGRAPHIC_FIELD, channel_major=True)
    return [first] + [map_mask((h, w, c), c, TOPOGRAPHIC_FIELD) for _ in range(depth - 1)]


def recurrent_masks(name: str, image_shape: tuple[int, int], input_dim: int, depth: int,
                    num_classes: int) -> list[torch.Tensor]:
    """Masks of the recurrent net's layers over their inputs ``[below, above]``: the layout's
    bottom-up fields, and top-down the same fields over the map above (the masks' transposes: unit
    u reads v from above exactly when v reads u from below), or every label for the last layer."""
    if name not in RECURRENT_LAYOUTS:
        raise ValueError(f"unknown receptive-field layout {name!r} for the recurrent net; choose one of "
                         f"{', '.join(RECURRENT_LAYOUTS)}")
    up = LAYOUTS[name][0](image_shape, input_dim, depth)
    down = [m.T for m in up[1:]] + [torch.ones(up[-1].shape[0], num_classes)]
    return [torch.cat((u, d), dim=1) for u, d in zip(up, down)]


# name -> (masks of the bottom-up layers, how the FF layers compute them: "local" | "dense")
LAYOUTS = {
    "footnote8": (lambda image_shape, input_dim, depth: footnote8_masks(image_shape), "local"),
    "topographic11": (topographic_masks, "dense"),
}
RECURRENT_LAYOUTS = ("topographic11",)  # footnote 8's grids shrink layer by layer: no top-down map


def layout_masks(name: str, image_shape: tuple[int, int], input_dim: int | None = None,
                 depth: int | None = None) -> list[torch.Tensor]:
    if name not in LAYOUTS:
        raise ValueError(f"unknown receptive-field layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    h, w = image_shape[:2]
    return LAYOUTS[name][0](image_shape, input_dim or h * w, depth or 3)


def layout_compute(name: str) -> str:
    return LAYOUTS[name][1]


@torch.no_grad()
def init_masked(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Gaussian weights of std 1/sqrt(fan-in) inside the fields (O(1) pre-activations from an
    RMS-normalized input), zero outside."""
    weight.copy_(torch.randn_like(weight) / mask.sum(dim=1, keepdim=True).clamp_min(1).sqrt() * mask)


class FFMasked(FFLinear):
    """A fully connected FF layer restricted to local receptive fields by a fixed 0/1 mask.

    The weights are stored dense (N, D) with zeros outside the fields, so checkpoints, the
    optimizers and everything else that reads ``linear`` work unchanged; the products are computed
    locally connected: each location's inputs gathered, one batched matrix product over the
    locations, and the weight gradient only inside the fields (3-5x faster than the masked dense
    products for the footnote-8 layers on the 2-core CPU: benchmarks/local_fields.py). Gradients
    outside the fields are zero by construction, so no optimizer moves those weights."""

    def __init__(self, mask: torch.Tensor, threshold: float, config: LayerConfig):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, threshold, config)
        index, channels = location_index(mask)
        self.register_buffer("mask", mask.clone(), persistent=False)  # rebuilt from the config
        self.register_buffer("index", index, persistent=False)  # (locations, inputs per location)
        self.channels = channels
        init_masked(self.linear.weight, mask)
        self.build_optimizer()  # again, now that the fields (and so the fan-in) are known

    @property
    def fan_in(self) -> int:
        return self.index.shape[1] if hasattr(self, "index") else self.in_features

    def _local_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """(locations, channels, inputs per location) view of the dense weights' fields."""
        locations, k = self.index.shape
        w = weight.view(locations, self.channels, -1)
        return w.gather(2, self.index[:, None, :].expand(locations, self.channels, k))

    def _patches(self, x_norm: torch.Tensor) -> torch.Tensor:
        return x_norm[:, self.index].transpose(0, 1)  # (locations, B, inputs per location)

    def connect(self, x_normalized: torch.Tensor) -> torch.Tensor:
        z = torch.bmm(self._patches(x_normalized), self._local_weight(self.linear.weight).transpose(1, 2))
        return z.transpose(0, 1).reshape(len(x_normalized), -1) + self.linear.bias

    def weight_gradient(self, dz: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
        locations, k = self.index.shape
        dz_local = dz.view(len(dz), locations, self.channels).permute(1, 2, 0)  # (L, C, B)
        local = torch.bmm(dz_local, self._patches(x_norm))  # (L, C, K)
        grad = torch.zeros(locations, self.channels, self.in_features, dtype=local.dtype, device=local.device)
        grad.scatter_(2, self.index[:, None, :].expand(locations, self.channels, k), local)
        return grad.view(self.out_features, self.in_features)


def location_index(mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The inputs each location reads, (locations, K), and the channels per location, from a
    location-major mask in which every channel of a location reads the same K inputs."""
    rows = mask.bool()
    counts = rows.sum(dim=1)
    first = rows[0]
    channels = int((rows == first).all(dim=1).long().cumprod(0).sum())  # leading rows like the first
    if channels == 0 or mask.shape[0] % channels or len(set(counts.tolist())) != 1:
        raise ValueError("a receptive-field mask must be location-major, every channel of a location "
                         "reading the same number of inputs")
    per_location = rows.view(-1, channels, mask.shape[1])
    if not (per_location == per_location[:, :1]).all():
        raise ValueError("every channel of a location must read the same inputs")
    return torch.stack([loc[0].nonzero().squeeze(1) for loc in per_location]), channels


@torch.no_grad()
def restrict_linear(layer: FFLinear, mask: torch.Tensor) -> FFLinear:
    """Footnote 13: ``layer`` keeps full connectivity for its products, but only the weights inside
    ``mask`` (N, D) exist: they start as :func:`init_masked` has them and every gradient and weight
    change the layer makes is masked (``FFLinear.restrict``), so the others stay zero."""
    if tuple(mask.shape) != tuple(layer.linear.weight.shape):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit weight {tuple(layer.linear.weight.shape)}")
    layer.register_buffer("mask", mask.clone(), persistent=False)  # rebuilt from the config
    init_masked(layer.linear.weight, mask)
    layer.linear.weight.register_hook(lambda grad: grad * layer.mask)  # the autograd path
    layer.build_optimizer()  # the fan-in is now the field's
    return layer


def masked_linear(mask: torch.Tensor) -> nn.Linear:
    """The backprop twin's layer: a Linear with the same mask, applied in its forward pass."""
    out_features, in_features = mask.shape
    layer = nn.Linear(in_features, out_features)
    layer.register_buffer("mask", mask.clone(), persistent=False)
    init_masked(layer.weight, mask)
    with torch.no_grad():
        layer.bias.zero_()
    layer.weight.register_hook(lambda grad: grad * layer.mask)  # the weights outside never move
    return layer
