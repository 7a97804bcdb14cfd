"""G-Blending (Wang, Tran & Feiszli, "What Makes Training Multi-modal Classification Networks Hard?", CVPR 2020).

What the method does (no official code is public; BASELINES.md B.6, BalanceBenchmark's `GBlending_trainer`):
the loss is a weighted sum of the fused head's and the unimodal heads' cross-entropies, with weights
w_k proportional to G_k / O_k^2, normalised to sum 1, re-estimated every "super-epoch" on a held-out split:
G_k is the drop of head k's validation loss over the super-epoch (generalisation) and O_k the change of its
validation-minus-train loss gap (overfitting). BalanceBenchmark's "online" variant trains a copy of the model
for a super-epoch per head to measure G and O and uses |G| / O^2.

What this implementation does (the paper's online variant, on the run's own model):

* Heads k = fused, then each modality m with its unimodal logits f_m (split head for concat, each branch for
  sum, the other modalities' features zeroed for FiLM / gated) instead of separately trained unimodal
  networks. Loss = w_fused CE(f) + sum_m w_m CE(f_m) (`method.unimodal_weight` is not used).
* At the start of every epoch e with e % `gblending.super_epoch` == 0 the train and validation losses of every
  head are evaluated over the whole splits, in eval mode without gradients (the split is `state.splits.val`,
  made by `data.n_val`; a run without one raises a ConfigError naming `data.n_val`). From the second such
  evaluation on, with "prev" the previous one:
      G_k = L_val,prev - L_val,now,   O_k = (L_val,now - L_train,now) - (L_val,prev - L_train,prev),
      w_k = max(G_k, 0) / max(O_k^2, 1e-12), normalised to sum 1.
  Training starts with equal weights 1/(M+1). Deviations: a head whose validation loss went *up* gets weight
  0 (BalanceBenchmark takes |G|, which would reward it), O^2 is floored at 1e-12 to stay finite, and if no
  head improved the previous weights are kept.
* `method.regulate`: in an epoch where regulation is not active for modality m, its unimodal loss gets weight
  0 and its share goes to the fused loss (the weights still sum to 1); with no modality active the loss is
  plain CE(f), i.e. joint training. The weights themselves are still re-estimated on schedule.
* The weights and the last evaluation live in state_dict, so a resumed run keeps them; the evaluation is
  never repeated for an epoch that was already evaluated.

Tr F: one ordinary backward of the weighted loss; the meter measures its per-sample gradients.

Logged per epoch: `alpha` {m} the weight w_m of CE(f_m) used this epoch (None where inactive), `reg_frac` {m}
1.0 where it was used, `regulated_frac` 1.0 if any; `gblending_w_fused`; at evaluation epochs
`gblending_train_loss` / `gblending_val_loss` {head} and, at re-estimations, `gblending_G` / `gblending_O`
{head} (heads: "fused" and the modalities).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError
from ..models import Output
from .base import EpochState, Method, regulation_active

FUSED = "fused"
O2_FLOOR = 1e-12


def blend_weights(prev: dict[str, tuple[float, float]], now: dict[str, tuple[float, float]],
                  old: dict[str, float]) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(weights, G, O) from the (train, val) losses per head at the start and the end of a super-epoch.

    w_k = max(G_k, 0) / max(O_k^2, 1e-12), normalised; `old` is kept when no head's validation loss dropped."""
    g = {k: prev[k][1] - now[k][1] for k in now}
    o = {k: (now[k][1] - now[k][0]) - (prev[k][1] - prev[k][0]) for k in now}
    raw = {k: max(g[k], 0.0) / max(o[k] ** 2, O2_FLOOR) for k in now}
    total = sum(raw.values())
    weights = {k: r / total for k, r in raw.items()} if total > 0 else dict(old)
    return weights, g, o


@torch.no_grad()
def head_losses(model, dataset, device, batch_size: int = 1024) -> dict[str, tuple[float, ...]]:
    """Mean cross-entropy of the fused and of every unimodal head over `dataset`, in eval mode."""
    was_training = model.training
    model.eval()
    sums = {k: torch.zeros((), device=device, dtype=torch.float64) for k in (FUSED,) + tuple(model.modalities)}
    for batch in dataset.batches(batch_size):
        batch = batch.to(device)
        out = model(batch.inputs)
        sums[FUSED] += F.cross_entropy(out.logits, batch.labels, reduction="sum")
        for m in model.modalities:
            sums[m] += F.cross_entropy(out.unimodal[m], batch.labels, reduction="sum")
    model.train(was_training)
    return {k: float(v) / len(dataset) for k, v in sums.items()}


class GBlending(Method):
    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.super_epoch = cfg.gblending.super_epoch
        if self.super_epoch < 1:
            raise ConfigError(f"gblending.super_epoch must be at least 1, got {self.super_epoch}")
        if cfg.data.n_val <= 0:
            raise ConfigError("gblending re-estimates its loss weights on a validation split: set data.n_val > 0 "
                              "(e.g. --set data.n_val=500)")
        self.heads = (FUSED,) + tuple(self.modalities)
        self.weights = {k: 1.0 / len(self.heads) for k in self.heads}
        self.reference: dict | None = None  # {"epoch", "train": {head: loss}, "val": {head: loss}}
        self.active = {m: True for m in self.modalities}
        self.report: dict = {}
        self._use_weights()

    def _use_weights(self) -> None:
        """The weights of this epoch: inactive modalities' shares go to the fused loss."""
        used = {m: (self.weights[m] if self.active[m] else 0.0) for m in self.modalities}
        used[FUSED] = self.weights[FUSED] + sum(self.weights[m] for m in self.modalities if not self.active[m])
        self.used = used
        device = next(self.model.parameters()).device
        self.w = torch.tensor([used[k] for k in self.heads], device=device)

    def on_epoch_start(self, state: EpochState) -> None:
        splits = state.splits
        if splits is None or getattr(splits, "val", None) is None:
            raise ConfigError("gblending needs a validation split (state.splits.val): set data.n_val > 0")
        mc, wc = self.cfg.method, self.cfg.window
        self.active = {m: regulation_active(mc.regulate, state.window[m][0], state.epoch, wc.min_epoch)
                       for m in self.modalities}
        self.report = {}
        due = state.epoch % self.super_epoch == 0
        if due and (self.reference is None or self.reference["epoch"] != state.epoch):
            train = head_losses(self.model, splits.train, state.device)
            val = head_losses(self.model, splits.val, state.device)
            self.report = {"gblending_train_loss": train, "gblending_val_loss": val}
            if self.reference is not None:
                prev = {k: (self.reference["train"][k], self.reference["val"][k]) for k in self.heads}
                now = {k: (train[k], val[k]) for k in self.heads}
                self.weights, g, o = blend_weights(prev, now, self.weights)
                self.report |= {"gblending_G": g, "gblending_O": o}
            self.reference = {"epoch": state.epoch, "train": train, "val": val}
        self._use_weights()

    def loss(self, out: Output, labels: Tensor) -> Tensor:
        w = self.w.to(out.logits.dtype)
        loss = w[0] * F.cross_entropy(out.logits, labels)
        for i, m in enumerate(self.modalities, start=1):
            if self.active[m]:
                loss = loss + w[i] * F.cross_entropy(out.unimodal[m], labels)
        return loss

    def on_epoch_end(self, state: EpochState) -> dict:
        return {
            "alpha": {m: (self.used[m] if self.active[m] else None) for m in self.modalities},
            "reg_frac": {m: (1.0 if self.active[m] else 0.0) for m in self.modalities},
            "regulated_frac": 1.0 if any(self.active.values()) else 0.0,
            "gblending_w_fused": self.used[FUSED],
            "gblending_weights": dict(self.weights),
        } | self.report

    def state_dict(self) -> dict:
        return {"weights": dict(self.weights), "reference": self.reference}

    def load_state_dict(self, state: dict) -> None:
        self.weights = dict(state["weights"])
        self.reference = state.get("reference")
        self._use_weights()
