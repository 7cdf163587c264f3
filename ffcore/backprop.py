"""The backprop baseline: the FF MLP's exact architecture (same layers, same length-only
normalization between them, same readout, same parameter count) trained end to end by
cross-entropy, so FF vs backprop tables compare learning rules, not architectures."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffcore.centering import CenteredInput
from ffcore.goodness import direction, layer_norm
from ffcore.layers import ACTIVATIONS, make_optimizer
from ffcore.mlp import MLPConfig


class BackpropMLP(CenteredInput, nn.Module):
    kind = "bp"
    predict_methods = ("softmax",)

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        dims = (config.input_dim, *config.widths)
        if config.receptive_fields is not None:  # the same connectivity as the FF net
            from ffcore.local import masked_linear

            self.layers = nn.ModuleList(masked_linear(m) for m in config.field_masks())
        else:
            self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(config.widths)))
            for layer in self.layers:
                nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))
                nn.init.zeros_(layer.bias)
        features = sum(config.widths[i] for i in config.readout_layer_ids)
        self.readout = nn.Linear(features, config.num_classes, bias=False)
        self._act = ACTIVATIONS[config.layer.activation]
        self.optimizer = make_optimizer(self.parameters(), config.layer)
        self.init_centering(config.input_dim)  # the same input as the FF net's
        self.between: dict[int, object] = {}  # as FFMLP.between; backprop needs them differentiable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, C) logits."""
        kind, ys, h = self.config.layer.goodness, [], self.prepare(x)
        for i, layer in enumerate(self.layers):
            h = self._act(layer(layer_norm(h, kind)))
            ys.append(h)
            if i in self.between:
                h = self.between[i](h)
        return self.readout(torch.cat([direction(ys[i]) for i in self.config.readout_layer_ids], dim=1))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        if method not in (None, "softmax"):
            raise ValueError(f"the backprop baseline predicts with ['softmax'], not {method!r}")
        return self(x).argmax(dim=1)

    def train_batch(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        self.observe_inputs(x)
        loss = F.cross_entropy(self(x), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}
