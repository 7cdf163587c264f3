"""Feed-forward FF networks: supervised (label in the input, paper 3.3) and unsupervised
(hybrid-image negatives, paper 3.2), with a linear softmax readout.

Both share one training step: make positive and negative inputs, then let every layer take its
local update on the detached activities of the layer below. Only the making of the data differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ffcore.centering import CenteredInput
from ffcore.goodness import direction, goodness
from ffcore.layers import FFLinear, LayerConfig, LayerStackConfig
from ffcore.negatives import (
    all_label_inputs,
    embed_label,
    hybrid_images,
    wrong_labels_hard,
    wrong_labels_uniform,
)
from ffcore.readout import LinearReadout

MODES = ("supervised", "unsupervised")
NEGATIVES = {"supervised": ("hard", "uniform"), "unsupervised": ("hybrid",)}


@dataclass(frozen=True)
class MLPConfig(LayerStackConfig):
    """Architecture and learning settings of an FF multi-layer perceptron."""

    input_dim: int = 784
    num_classes: int = 10
    widths: tuple[int, ...] = (2000, 2000, 2000, 2000)
    mode: str = "supervised"
    negatives: str = "hard"  # supervised: "hard" | "uniform"; unsupervised: "hybrid"
    image_shape: tuple[int, int] | None = (28, 28)  # needed by hybrid images
    hybrid_blur_steps: int = 6
    layer: LayerConfig = field(default_factory=LayerConfig)
    threshold_scale: float = 1.0
    threshold_pyramid: float = 0.0
    goodness_layers: tuple[int, ...] | None = None  # label-goodness classifier; None: all but the first
    readout_layers: tuple[int, ...] | None = None  # None: all but the first (supervised), last three (unsup.)
    readout_lr: float = 1e-2
    readout_weight_decay: float = 3e-3
    # Local receptive fields without weight sharing (ffcore.local; "footnote8": the paper's
    # footnote-8 layout, widths 2048, 1980, 2048 on 28 x 28 images); None: fully connected.
    receptive_fields: str | None = None
    # Subtract a running per-input mean before the first layer (ffcore.centering says why). A
    # checkpoint from before centering loads with a zero mean, which leaves its inputs unchanged.
    center_input: bool = True
    center_horizon: int = 10_000

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(self.image_shape))
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} not in {list(MODES)}")
        if self.negatives not in NEGATIVES[self.mode]:
            raise ValueError(f"{self.mode} FF takes negatives in {list(NEGATIVES[self.mode])}, not {self.negatives!r}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive sizes, got {self.widths}")
        if self.mode == "unsupervised" and self.image_shape is None:
            raise ValueError("unsupervised FF makes hybrid images: set image_shape")
        if self.image_shape is not None:
            planes, rest = divmod(self.input_dim, self.image_shape[0] * self.image_shape[1])
            # several planes (colour channels) only where no hybrid images are made of them
            if rest or not planes or (planes > 1 and self.mode == "unsupervised"):
                raise ValueError(f"image_shape {self.image_shape} does not hold input_dim {self.input_dim}")
        if self.receptive_fields is not None:
            if self.image_shape is None:
                raise ValueError("local receptive fields need image_shape")
            shapes = [tuple(m.shape) for m in self.field_masks()]
            if tuple(s[0] for s in shapes) != self.widths or shapes[0][1] != self.input_dim:
                raise ValueError(f"receptive fields {self.receptive_fields!r} make layers of "
                                 f"{[s[0] for s in shapes]} units over {shapes[0][1]} inputs; "
                                 f"widths are {list(self.widths)}, input_dim {self.input_dim}")
        for name in ("goodness_layers", "readout_layers"):
            chosen = getattr(self, name)
            if chosen is not None:
                chosen = tuple(int(i) for i in chosen)
                object.__setattr__(self, name, chosen)
                bad = [i for i in chosen if not 0 <= i < len(self.widths)]
                if bad or not chosen:
                    raise ValueError(f"{name} {chosen} must name layers in 0..{len(self.widths) - 1}")

    def field_masks(self) -> list | None:
        """The layers' 0/1 receptive-field masks (ffcore.local), or None: fully connected."""
        if self.receptive_fields is None:
            return None
        from ffcore.local import layout_masks

        return layout_masks(self.receptive_fields, self.image_shape, self.input_dim, len(self.widths))

    def _default_layers(self, n_last: int | None) -> tuple[int, ...]:
        n = len(self.widths)
        first = max(0, n - n_last) if n_last else (1 if n > 1 else 0)
        return tuple(range(first, n))

    @property
    def goodness_layer_ids(self) -> tuple[int, ...]:
        return self.goodness_layers or self._default_layers(None)

    @property
    def readout_layer_ids(self) -> tuple[int, ...]:
        if self.readout_layers:
            return self.readout_layers
        return self._default_layers(3 if self.mode == "unsupervised" else None)



class FFMLP(CenteredInput, nn.Module):
    """A stack of FF layers plus a linear softmax readout."""

    kind = "ff"

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        dims = (config.input_dim, *config.widths)
        if config.receptive_fields is not None:
            from ffcore.local import FFMasked, layout_compute, restrict_linear

            if config.mode == "supervised":
                raise ValueError("local receptive fields are for unsupervised FF (the label pixels have no place in them)")
            masks = config.field_masks()
            if layout_compute(config.receptive_fields) == "local":
                layers = [FFMasked(m, theta, config.layer) for m, theta in zip(masks, config.thresholds)]
            else:
                layers = [restrict_linear(FFLinear(m.shape[1], m.shape[0], theta, config.layer), m)
                          for m, theta in zip(masks, config.thresholds)]
            self.layers = nn.ModuleList(layers)
        else:
            self.layers = nn.ModuleList(
                FFLinear(dims[i], dims[i + 1], theta, config.layer) for i, theta in enumerate(config.thresholds)
            )
        features = sum(config.widths[i] for i in config.readout_layer_ids)
        self.readout = LinearReadout(features, config.num_classes, config.readout_lr, config.readout_weight_decay)
        self.init_centering(config.input_dim)
        # Supervised: the first layer's neutral, positive and negative passes share one product
        # (FFLinear.label_step); False takes the three passes one by one (the same update).
        self.share_first_product = True
        # Transformations between layers that are not learned and need not be differentiable
        # (paper section 6, "a black box between layers"): layer i's output passes through
        # between[i] on its way up; its goodness and the readout still see the layer's own output.
        self.between: dict[int, object] = {}

    # ---- inference -----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The input the first layer sees: centered (if configured), then the label (or the
        neutral label) written in when supervised."""
        x = self.prepare(x)
        if self.config.mode == "supervised":
            return embed_label(x, labels, self.config.num_classes)
        return x


    @torch.no_grad()
    def activities(self, inputs: torch.Tensor, keep: tuple[int, ...] | None = None,
                   first: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        """Activities before layer normalization, ``{layer: (B, N_l)}``, of the layers in ``keep``
        (all when None); the others are dropped as soon as the next layer has read them.
        ``first``: the first layer's activities, already computed (``inputs`` is then unused)."""
        ys, h = {}, inputs
        for i, layer in enumerate(self.layers):
            h = first if i == 0 and first is not None else layer(h)
            if keep is None or i in keep:
                ys[i] = h
            if i in self.between:
                h = self.between[i](h)
        return ys

    def readout_features(self, ys: dict[int, torch.Tensor]) -> torch.Tensor:
        return torch.cat([direction(ys[i]) for i in self.config.readout_layer_ids], dim=1)

    def _readout_input(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.readout_features(self.activities(inputs, self.config.readout_layer_ids))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax readout from one forward pass (neutral label when supervised): (B, C)."""
        return torch.softmax(self.readout(self._readout_input(self.encode(x))), dim=1)

    @torch.no_grad()
    def label_goodness(self, x: torch.Tensor) -> torch.Tensor:
        """Goodness accumulated over ``goodness_layers`` with each label written in: (B, C)."""
        return self.layer_label_goodness(x, self.config.goodness_layer_ids).sum(dim=0)

    @torch.no_grad()
    def layer_label_goodness(self, x: torch.Tensor, layers: tuple[int, ...] | None = None) -> torch.Tensor:
        """Each of ``layers``' goodness (all layers if None) with each label written in, from
        one pass per label: (len(layers), B, C). What each layer alone would classify with."""
        if self.config.mode != "supervised":
            raise ValueError("label goodness needs the label in the input: only supervised FF has it")
        layers = tuple(range(len(self.layers))) if layers is None else tuple(layers)
        c, b = self.config.num_classes, x.shape[0]
        ys = self.activities(all_label_inputs(self.prepare(x), c), layers)
        return torch.stack([goodness(ys[i], self.config.layer.goodness).view(c, b).T for i in layers])

    @property
    def predict_methods(self) -> tuple[str, ...]:
        return ("goodness", "softmax") if self.config.mode == "supervised" else ("softmax",)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """Predicted labels (B,). ``goodness``: try every label, best accumulated goodness
        (the better classifier, paper 3.3); ``softmax``: one pass from the neutral label."""
        method = method or self.predict_methods[0]
        if method not in self.predict_methods:
            raise ValueError(f"{self.config.mode} FF predicts with {list(self.predict_methods)}, not {method!r}")
        scores = self.label_goodness(x) if method == "goodness" else self.predict_proba(x)
        return scores.argmax(dim=1)

    # ---- learning ------------------------------------------------------------------------------
    def _negative_labels(self, probs: torch.Tensor, labels: torch.Tensor, generator) -> torch.Tensor:
        if self.config.negatives == "hard":
            return wrong_labels_hard(probs, labels, generator)
        return wrong_labels_uniform(labels, self.config.num_classes, generator)

    def train_batch(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """One FF step on a mini-batch: every layer's local update, then the readout's."""
        cfg = self.config
        self.observe_inputs(x)
        first_step = None
        if cfg.mode == "supervised" and self.share_first_product and isinstance(self.layers[0], FFLinear) \
                and self.layers[0].closed_form():
            # The neutral, positive and negative inputs differ only in the label entries: the first
            # layer's product with the image is computed once for all three (FFLinear.label_step).
            c, layer0 = cfg.num_classes, self.layers[0]
            rest = self.prepare(x)[:, c:]
            shared, size = layer0.shared_product(rest, c), layer0.rest_size(rest)
            y_neutral = layer0._act(layer0.label_pre_activation(shared, size, None, c)[0])
            neutral = self.activities(x, cfg.readout_layer_ids, first=y_neutral)
            readout_loss, logits = self.readout.train_step(self.readout_features(neutral), labels)
            neg_labels = self._negative_labels(torch.softmax(logits, dim=1), labels, generator)
            first_step = layer0.label_step(shared, rest, size, labels, neg_labels, c)
            h_pos = h_neg = None
        elif cfg.mode == "supervised":
            # One pass from the neutral label feeds the readout and picks the hard negative labels.
            neutral_features = self._readout_input(self.encode(x))
            readout_loss, logits = self.readout.train_step(neutral_features, labels)
            neg_labels = self._negative_labels(torch.softmax(logits, dim=1), labels, generator)
            h_pos, h_neg = self.encode(x, labels), self.encode(x, neg_labels)
        else:
            h_pos, h_neg = self.encode(x), self.encode(hybrid_images(x, cfg.image_shape, cfg.hybrid_blur_steps, generator))

        # Keep only what the readout reads, so memory does not grow with depth.
        keep = set(cfg.readout_layer_ids) if cfg.mode == "unsupervised" else set()
        stats, ys_pos = {}, {}
        for i, layer in enumerate(self.layers):
            step = first_step if i == 0 and first_step is not None else layer.train_step(h_pos, h_neg)
            h_pos, h_neg = step.y_pos, step.y_neg
            if i in keep:
                ys_pos[i] = step.y_pos
            if i in self.between:
                h_pos, h_neg = self.between[i](h_pos), self.between[i](h_neg)
            stats[f"loss_{i}"] = step.loss
            stats[f"g_pos_{i}"] = step.goodness_pos
            stats[f"g_neg_{i}"] = step.goodness_neg

        if cfg.mode == "unsupervised":
            # The positive pass already computed the representations the readout learns from.
            readout_loss, _ = self.readout.train_step(self.readout_features(ys_pos), labels)
        stats["loss"] = sum(stats[f"loss_{i}"] for i in range(len(self.layers)))
        stats["readout_loss"] = readout_loss
        return stats
