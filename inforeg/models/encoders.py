"""Per-modality encoders: an MLP for feature vectors, a small transformer for sequences (ResNet-18: resnet.py)."""
from __future__ import annotations

import math

import torch
from torch import nn


class MLPEncoder(nn.Sequential):
    """in -> hidden -> out, ReLU after both layers (TEACHING.md's encoder)."""

    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = 64):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim), nn.ReLU())
        self.out_dim = out_dim


def sinusoid(steps: int, dim: int, device=None) -> torch.Tensor:
    """(steps, dim) sinusoidal positions of "Attention is all you need" (no parameters, any length)."""
    pos = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(steps, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


class TransformerEncoder(nn.Module):
    """A sequence (batch, steps, in_dim) -> (batch, out_dim): a linear projection, sinusoidal positions,
    `layers` pre-norm transformer layers (`heads` heads, no dropout), and the mean over the time steps.

    Time steps that are all zero are padding (MulT pickles pad with zeros): attention and the mean skip them."""

    def __init__(self, in_dim: int, out_dim: int = 64, hidden: int = 256, heads: int = 4, layers: int = 2):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        layer = nn.TransformerEncoderLayer(out_dim, heads, hidden, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"the transformer encoder takes sequences (batch, steps, features); got {tuple(x.shape)}")
        pad = (x == 0).all(-1)
        pad = pad & ~pad.all(1, keepdim=True)  # an all-zero sequence: attend to every step
        h = self.proj(x) + sinusoid(x.shape[1], self.out_dim, x.device)
        h = self.norm(self.layers(h, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1)
