"""Per-modality encoders."""
from __future__ import annotations

from torch import nn


class MLPEncoder(nn.Sequential):
    """in -> hidden -> out, ReLU after both layers (TEACHING.md's encoder)."""

    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = 64):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim), nn.ReLU())
        self.out_dim = out_dim
