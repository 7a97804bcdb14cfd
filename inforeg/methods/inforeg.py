"""InfoReg: while a modality's prime learning window is open and it leads the others, pull its encoder back
towards its start-of-epoch weights with a proximal term whose gradient is alpha_m (w_m - w_m^start).

The proximal gradient is added to the gradients of the one ordinary backward pass (no extra backward).
On a GPU there is no host sync: alpha_m is a device tensor that is 0 on batches where modality m does not
lead, and every regulated encoder gets the (then zero) pull. On the CPU, where reading alpha costs nothing,
only the encoders with alpha_m > 0 get it (adding alpha_m (w - w_start) = 0 changes no gradient), which
halves the work for two modalities; the gradients are bitwise the same either way. The pull is computed in
buffers allocated once per epoch, not per batch. What remains per batch on a small model is about twenty
tiny tensor operations (the scores, Delta, alpha): benchmarks/step_cost.py measures what they cost.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..models import Output
from .base import EpochState, Method, regulation_active


def score_gap(scores: Tensor) -> Tensor:
    """Delta_m = mean of (s_m - s_k) over the modalities k that score lower than m; 0 if none."""
    diff = scores[:, None] - scores[None, :]
    lower = diff > 0
    return (diff * lower).sum(1) / lower.sum(1).clamp(min=1)


def coefficients(delta: Tensor, rule: str, beta: float, official_c: Tensor | None = None) -> Tensor:
    """alpha_m for every modality, 0 where Delta_m <= 0 (not information-sufficient).

    paper: exp(beta * tanh(Delta_m)); official: c_m * exp(tanh(Delta_m))."""
    if rule == "paper":
        alpha = torch.exp(beta * torch.tanh(delta))
    elif rule == "official":
        alpha = official_c * torch.exp(torch.tanh(delta))
    else:
        raise ValueError(f"unknown coefficient rule {rule!r}; known: paper, official")
    return alpha * (delta > 0)


class InfoReg(Method):
    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        mc = cfg.method
        self.params = {m: [p for p in model.encoders[m].parameters()] for m in self.modalities}
        self.official_c = None
        if mc.coefficient == "official":
            if len(mc.official_c) != len(self.modalities):
                raise ValueError(f"method.official_c has {len(mc.official_c)} prefactors but the run has "
                                 f"{len(self.modalities)} modalities {list(self.modalities)}")
            self.official_c = torch.tensor(mc.official_c, dtype=torch.float64)
        self.active: dict[str, bool] = {}

    def on_epoch_start(self, state: EpochState) -> None:
        mc, wc = self.cfg.method, self.cfg.window
        self.active = {m: regulation_active(mc.regulate, state.window[m][0], state.epoch, wc.min_epoch)
                       for m in self.modalities}
        self.start = {m: [p.detach().clone() for p in self.params[m]] for m in self.modalities
                      if self.active[m]}
        # the pull's storage, reused every batch: a fresh allocation per step costs page faults on the CPU
        self.pull = {m: [torch.empty_like(p) for p in self.params[m]] for m in self.start}
        first = next(self.model.parameters())
        device = first.device
        self.on_cpu = device.type == "cpu"
        if self.official_c is not None:
            self.official_c = self.official_c.to(device=device, dtype=first.dtype)
        self.mask = torch.tensor([float(self.active[m]) for m in self.modalities], device=device, dtype=first.dtype)
        self.alpha_sum = torch.zeros(len(self.modalities), device=device, dtype=first.dtype)
        self.regulated = torch.zeros(len(self.modalities), device=device)  # GPU path: counts on the device
        self.any_regulated = torch.zeros((), device=device)
        self.counts = [0] * len(self.modalities)  # CPU path: counts in Python
        self.any_count = 0
        self.batches = 0

    @torch.no_grad()
    def after_backward(self, out: Output, labels: Tensor, state: EpochState) -> None:
        self.batches += 1
        if not any(self.active.values()):
            return
        n = len(self.modalities)  # true-class probabilities of every modality in one softmax and one gather
        logits = torch.stack([out.unimodal[m] for m in self.modalities])
        probs = logits.softmax(dim=2).gather(2, labels.expand(n, -1).unsqueeze(2)).squeeze(2)
        scores = probs.sum(1) if self.cfg.method.score == "sum" else probs.mean(1)
        alpha = coefficients(score_gap(scores), self.cfg.method.coefficient, self.cfg.method.beta,
                             self.official_c) * self.mask
        self.alpha_sum += alpha
        if self.on_cpu:
            values = alpha.tolist()
            pulled = [i for i, a in enumerate(values) if a > 0]
            self.counts = [c + (a > 0) for c, a in zip(self.counts, values)]
            self.any_count += bool(pulled)
        else:
            pulled = [i for i, m in enumerate(self.modalities) if self.active[m]]
            on = alpha > 0
            self.regulated += on
            self.any_regulated += on.any()
        for i in pulled:  # grad += alpha_m (w - w_start)
            m = self.modalities[i]
            pull = self.pull[m]
            if self.on_cpu:  # one pass per tensor
                for p, p0, buf in zip(self.params[m], self.start[m], pull):
                    torch.sub(p, p0, out=buf)
            else:  # two fused launches rather than one per tensor
                torch._foreach_copy_(pull, self.params[m])
                torch._foreach_sub_(pull, self.start[m])
            torch._foreach_mul_(pull, alpha[i])
            torch._foreach_add_([p.grad for p in self.params[m]], pull)

    def on_epoch_end(self, state: EpochState) -> dict:
        n = max(self.batches, 1)
        alpha_sum = self.alpha_sum.tolist()
        if self.on_cpu:
            regulated, any_regulated = [float(c) for c in self.counts], float(self.any_count)
        else:
            regulated, any_regulated = self.regulated.tolist(), float(self.any_regulated)
        return {
            "alpha": {m: (a / r if r else None) for m, a, r in zip(self.modalities, alpha_sum, regulated)},
            "reg_frac": {m: r / n for m, r in zip(self.modalities, regulated)},
            "regulated_frac": any_regulated / n,
        }
