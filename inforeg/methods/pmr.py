"""PMR: prototypical modal rebalance (Fan et al., CVPR 2023).

Official code (fanyunfeng-bit/Modal-Imbalance-PMR, `main_Prototype_grad.py`; BASELINES.md B.3): before training
and after every epoch, the model runs in eval mode without gradient over the first all_num // 10 batches of
the (shuffled) training loader (at least one batch) and averages each modality's pooled features per class:
the prototypes c_k^m; from then on they are smoothed, c <- (1 - mu) c_new + mu c_old (mu = `momentum_coef`,
mostly 0 in the scripts). Per step: prototype logits z^m = -||h^m - c_k^m||_2 (no temperature); prototype
scores s^m = sum over the batch of softmax(z^m)[y]; rho = s^a / s^v; loss = CE(f, y) + beta_a CE(z^a, y) +
beta_v CE(z^v, y) with (beta_a, beta_v) = (0, alpha) if rho > 1, (alpha, 0) if rho < 1, (0, 0) if rho = 1:
the prototype cross-entropy (PCE) is added to the weaker modality only. The paper's entropy regulariser (PER)
is not in the official code and is not here either.

This implementation:
- prototypes are computed in `on_epoch_start` (equivalent to the official "after the previous epoch", and at
  epoch 0 to its "before training"), in eval mode and without gradient, over the first max(1, n // 10) of the
  n training batches of size `optim.batch_size`, in an order drawn from a generator seeded with (run seed,
  epoch): a random tenth each epoch, as the shuffled official loader gives, without consuming the training
  loop's own shuffling generator;
- EMA with `pmr.momentum` whenever prototypes from an earlier epoch exist (saved in `state_dict`);
- prototype logits -torch.cdist(h^m, c^m); scores s^m as above; CE(z^m, y) is added with weight `pmr.alpha`
  to every modality whose prototype score is below the best one (M modalities: every modality but the
  leader; with two this is exactly the official rule, ties included) and only in epochs where
  `regulation_active` holds for that modality (`method.regulate`);
- the rest of the loss is the loop's joint loss (CE(f), plus unimodal CEs if `method.unimodal_weight` > 0);
- features are the encoders' outputs `out.features[m]` for every fusion (the official code uses the pooled
  encoder features too); the choice of the weaker modality is made on the device (no host sync per step).

Deviations: a class absent from the first tenth would make the official prototype 0/0 = NaN; here more
batches are read until every class has been seen (the whole training set at most). The official code skips
the EMA at the start of epoch 1 (it passes the finished epoch's index, 0, to its `epoch <= 0` test); here the
EMA applies from epoch 1 on (no difference with the scripts' mu = 0). PCE is part of the one backward pass,
so the Fisher meter's Tr F includes its gradients (it is part of the training loss); the prototype passes are
forward-only and under no_grad, so the meter does not see them.

Logged per epoch: `alpha` {m} the mean PCE weight over the batches where it was added (None if never),
`reg_frac` {m} the fraction of batches where PCE was added to m, `regulated_frac` the fraction where it was
added to any, `pmr_score` {m} the mean per-sample prototype score (true-class probability of softmax(z^m)),
`pmr_loss` {m} the mean PCE (added or not), `pmr_proto_samples` how many samples the prototypes came from.
The loop's `train_loss` is the training loss, so it includes alpha times the added PCE terms.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import Output
from .base import EpochState, Method, regulation_active, true_class_prob


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """(sum of the features per class, count per class): means are sums / counts."""
    sums = torch.zeros(num_classes, features.shape[1], device=features.device, dtype=features.dtype)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes)
    return sums, counts


def prototype_order(seed: int, epoch: int) -> torch.Generator:
    """The generator that orders the epoch's prototype batches: a fresh random tenth every epoch."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def prototype_logits(features: Tensor, prototypes: Tensor) -> Tensor:
    """z[i, k] = -||h_i - c_k||_2."""
    return -torch.cdist(features, prototypes)


class PMR(Method):
    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.alpha, self.momentum = cfg.pmr.alpha, cfg.pmr.momentum
        self.prototypes: dict[str, Tensor] | None = None
        self.active: dict[str, bool] = {m: False for m in self.modalities}

    @torch.no_grad()
    def compute_prototypes(self, state: EpochState) -> dict[str, Tensor]:
        """Class means of each modality's features over the first tenth of the epoch's training batches."""
        train, num_classes = state.splits.train, state.splits.num_classes
        bs = self.cfg.optim.batch_size
        n_batches = max(1, -(-len(train) // bs) // 10)
        order = prototype_order(self.cfg.seed, state.epoch)
        was_training = self.model.training
        self.model.eval()
        sums = {m: 0 for m in self.modalities}
        counts = 0
        for i, batch in enumerate(train.batches(bs, order)):
            if i >= n_batches and bool((counts > 0).all()):
                break
            batch = batch.to(state.device)
            out = self.model(batch.inputs)
            for m in self.modalities:
                s, c = class_means(out.features[m], batch.labels, num_classes)
                sums[m] = sums[m] + s
            counts = counts + c
        self.model.train(was_training)
        self.proto_samples = int(counts.sum())
        return {m: sums[m] / counts.clamp_min(1)[:, None].to(sums[m].dtype) for m in self.modalities}

    def on_epoch_start(self, state: EpochState) -> None:
        mc, wc = self.cfg.method, self.cfg.window
        self.active = {m: regulation_active(mc.regulate, state.window[m][0], state.epoch, wc.min_epoch)
                       for m in self.modalities}
        new = self.compute_prototypes(state)
        if self.prototypes is not None and self.momentum:
            new = {m: (1 - self.momentum) * new[m] + self.momentum * self.prototypes[m].to(new[m])
                   for m in self.modalities}
        self.prototypes = new
        first = next(self.model.parameters())
        n = len(self.modalities)
        self.mask = torch.tensor([self.active[m] for m in self.modalities], device=first.device)
        self.added = torch.zeros(n, device=first.device)
        self.any_added = torch.zeros((), device=first.device)
        self.score_sum = torch.zeros(n, device=first.device, dtype=first.dtype)
        self.loss_sum = torch.zeros(n, device=first.device, dtype=first.dtype)
        self.batches = 0

    def loss(self, out: Output, labels: Tensor) -> Tensor:
        loss = super().loss(out, labels)
        if self.prototypes is None:  # outside the training loop (no epoch started): joint training
            return loss
        logits = [prototype_logits(out.features[m], self.prototypes[m]) for m in self.modalities]
        pce = torch.stack([F.cross_entropy(z, labels) for z in logits])
        with torch.no_grad():
            scores = torch.stack([true_class_prob(z, labels).sum() for z in logits])
            weaker = (scores < scores.max()) & self.mask
            self.added += weaker
            self.any_added += weaker.any()
            self.score_sum += scores / len(labels)
            self.loss_sum += pce.detach()
            self.batches += 1
        return loss + self.alpha * (pce * weaker).sum()

    def on_epoch_end(self, state: EpochState) -> dict:
        n = max(self.batches, 1)
        mods = self.modalities
        added = self.added.tolist()
        return {
            "alpha": {m: (self.alpha if a else None) for m, a in zip(mods, added)},
            "reg_frac": {m: a / n for m, a in zip(mods, added)},
            "regulated_frac": float(self.any_added) / n,
            "pmr_score": {m: s / n for m, s in zip(mods, self.score_sum.tolist())},
            "pmr_loss": {m: v / n for m, v in zip(mods, self.loss_sum.tolist())},
            "pmr_proto_samples": self.proto_samples,
        }

    def state_dict(self) -> dict:
        if self.prototypes is None:
            return {}
        return {"prototypes": {m: p.detach().cpu() for m, p in self.prototypes.items()}}

    def load_state_dict(self, state: dict) -> None:
        if "prototypes" in state:
            device = next(self.model.parameters()).device
            self.prototypes = {m: p.to(device) for m, p in state["prototypes"].items()}
