"""The one interface every balancing method implements, and the state the training loop hands it.

The loop calls, in this order: `on_epoch_start`, then per batch `loss` (before backward) and
`after_backward` (gradient changes: modulation, proximal terms), then `on_epoch_end` (its return value is
merged into the epoch's history). A method never reads files and the loop knows nothing of any method.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import MultimodalModel, Output


@dataclass
class EpochState:
    epoch: int
    history: list[dict]  # the finished epochs' records
    window: dict[str, tuple[bool, float]]  # per modality: (window open, the rule's statistic)
    splits: object = None  # the run's data.Splits (train / test / val), for methods that need held-out data
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


def regulation_active(mode: str, window_open: bool, epoch: int, min_epoch: int) -> bool:
    """Whether regulation may act this epoch: `window` (only in the prime learning window), `always`, or
    `outside` (only once the window has closed; epochs before `min_epoch` are in neither)."""
    if mode == "window":
        return window_open
    if mode == "always":
        return True
    if mode == "outside":
        return not window_open and epoch >= min_epoch
    raise ValueError(f"unknown regulate mode {mode!r}; known: window, always, outside")


class Method:
    """Joint training: cross-entropy of the fused logits, plus `unimodal_weight` times the unimodal
    cross-entropies (joint*). Subclasses add their hooks."""

    def __init__(self, cfg, model: MultimodalModel):
        self.cfg = cfg
        self.model = model
        self.modalities = model.modalities
        self.unimodal_weight = cfg.method.unimodal_weight

    def on_epoch_start(self, state: EpochState) -> None:
        pass

    def loss(self, out: Output, labels: Tensor) -> Tensor:
        loss = F.cross_entropy(out.logits, labels)
        if self.unimodal_weight:
            loss = loss + self.unimodal_weight * sum(F.cross_entropy(out.unimodal[m], labels)
                                                     for m in self.modalities)
        return loss

    @torch.no_grad()
    def after_backward(self, out: Output, labels: Tensor, state: EpochState) -> None:
        pass

    def on_epoch_end(self, state: EpochState) -> dict:
        return {}

    def state_dict(self) -> dict:
        """What must survive a restart between epochs (most methods: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def true_class_prob(logits: Tensor, labels: Tensor) -> Tensor:
    """Softmax probability of the true class, per sample."""
    return logits.softmax(dim=1).gather(1, labels[:, None])[:, 0]
