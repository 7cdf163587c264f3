"""A linear softmax readout on normalized hidden activities ("a linear classifier despite its
glaring non-linearity", paper 3.2). It learns by its own cross-entropy gradient and never
sends a derivative into the hidden layers: its input is always detached."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LinearReadout(nn.Module):
    def __init__(self, in_features: int, num_classes: int, lr: float = 1e-2, weight_decay: float = 3e-3):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes, bias=False)
        nn.init.zeros_(self.linear.weight)  # uniform predictions until it has learned something
        self.optimizer = torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) normalized activities -> (B, C) logits."""
        return self.linear(features)

    def train_step(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
        """One cross-entropy step. Returns (loss, detached logits computed before the step)."""
        logits = self(features.detach())
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item(), logits.detach()
