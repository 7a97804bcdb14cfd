"""InfoReg: while a modality's prime learning window is open and it leads the others, pull its encoder back
towards its start-of-epoch weights with a proximal term whose gradient is alpha_m (w_m - w_m^start).

The proximal gradient is added to the gradients of the one ordinary backward pass (no extra backward).
On a GPU there is no host sync: alpha_m is a device tensor that is 0 on batches where modality m does not
lead, and every regulated encoder gets the (then zero) pull, computed in buffers allocated once per epoch.
On the CPU, where a torch operation on a handful of numbers costs more than its arithmetic, the scores are
computed with NumPy on the logits' memory and Delta and alpha as Python floats; only the encoders with
alpha_m > 0 get the pull (adding alpha_m (w - w_start) = 0 changes no gradient), as two fused passes over
their gradients. Both paths compute the same quantities and agree within rounding (tests/test_inforeg.py).
What the step costs, against a joint step, is measured by benchmarks/step_cost.py.
"""
from __future__ import annotations

import math

import numpy as np
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


def score_gap_float(scores: list[float]) -> list[float]:
    """score_gap on Python floats."""
    gaps = []
    for s in scores:
        lower = [s - k for k in scores if k < s]
        gaps.append(sum(lower) / len(lower) if lower else 0.0)
    return gaps


def coefficients_float(delta: list[float], rule: str, beta: float,
                       official_c: tuple[float, ...] | None = None) -> list[float]:
    """coefficients on Python floats."""
    if rule == "paper":
        return [math.exp(beta * math.tanh(d)) if d > 0 else 0.0 for d in delta]
    if rule == "official":
        return [c * math.exp(math.tanh(d)) if d > 0 else 0.0 for c, d in zip(official_c, delta)]
    raise ValueError(f"unknown coefficient rule {rule!r}; known: paper, official")


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
        first = next(self.model.parameters())
        device = first.device
        self.on_cpu = device.type == "cpu"
        self.pull = {}  # the device path's pull storage: allocated on its first batch, reused for the epoch
        if self.official_c is not None:
            self.official_c = self.official_c.to(device=device, dtype=first.dtype)
        self.mask = torch.tensor([float(self.active[m]) for m in self.modalities], device=device, dtype=first.dtype)
        self.alpha_sum = torch.zeros(len(self.modalities), device=device, dtype=first.dtype)
        self.regulated = torch.zeros(len(self.modalities), device=device)  # GPU path: counts on the device
        self.any_regulated = torch.zeros((), device=device)
        self.alpha_sum_cpu = [0.0] * len(self.modalities)  # CPU path: sums and counts in Python
        self.counts = [0] * len(self.modalities)
        self.any_count = 0
        self.batches = 0

    @torch.no_grad()
    def after_backward(self, out: Output, labels: Tensor, state: EpochState) -> None:
        self.batches += 1
        if not any(self.active.values()):
            return
        if self.on_cpu:
            self._after_backward_cpu(out, labels)
            return
        n = len(self.modalities)  # true-class probabilities of every modality in one softmax and one gather
        logits = torch.stack([out.unimodal[m] for m in self.modalities])
        probs = logits.softmax(dim=2).gather(2, labels.expand(n, -1).unsqueeze(2)).squeeze(2)
        scores = probs.sum(1) if self.cfg.method.score == "sum" else probs.mean(1)
        alpha = coefficients(score_gap(scores), self.cfg.method.coefficient, self.cfg.method.beta,
                             self.official_c) * self.mask
        self.alpha_sum += alpha
        on = alpha > 0
        self.regulated += on
        self.any_regulated += on.any()
        for i, m in enumerate(self.modalities):  # grad += alpha_m (w - w_start), alpha_m = 0 when m does not lead
            if not self.active[m]:
                continue
            pull = self.pull.get(m)
            if pull is None:
                pull = self.pull[m] = [torch.empty_like(p) for p in self.params[m]]
            torch._foreach_copy_(pull, self.params[m])  # two fused launches rather than one per tensor
            torch._foreach_sub_(pull, self.start[m])
            torch._foreach_mul_(pull, alpha[i])
            torch._foreach_add_([p.grad for p in self.params[m]], pull)

    def _after_backward_cpu(self, out: Output, labels: Tensor) -> None:
        """The same step for a model on the CPU, where a torch operation on a handful of numbers costs more
        than the arithmetic: scores with NumPy on the logits' memory, Delta and alpha as Python floats, and the
        pull as two fused passes over the gradients (alpha w, then -alpha w_start) only for a leading modality."""
        mc, y, scores = self.cfg.method, labels.numpy(), []
        rows, n = np.arange(len(y)), 1 if mc.score == "sum" else len(y)
        for m in self.modalities:  # p_y = 1 / sum_j exp(z_j - z_y), in float64, in as few NumPy calls as we can
            z = out.unimodal[m].detach().numpy()
            d = np.subtract(z, z[rows, y][:, None], dtype=np.float64)
            scores.append(float((1.0 / np.exp(d, out=d).sum(1)).sum()) / n)  # the mean: sum / n, as NumPy's
        alphas = coefficients_float(score_gap_float(scores), mc.coefficient, mc.beta, mc.official_c)
        pulled = False
        for i, (m, a) in enumerate(zip(self.modalities, alphas)):
            if not (a > 0 and self.active[m]):  # also skips a NaN, as the device path's alpha > 0 does
                continue
            pulled = True
            self.alpha_sum_cpu[i] += a
            self.counts[i] += 1
            grads = [p.grad for p in self.params[m]]
            torch._foreach_add_(grads, self.params[m], alpha=a)
            torch._foreach_add_(grads, self.start[m], alpha=-a)
        self.any_count += pulled

    def on_epoch_end(self, state: EpochState) -> dict:
        n = max(self.batches, 1)
        if self.on_cpu:
            alpha_sum = self.alpha_sum_cpu
            regulated, any_regulated = [float(c) for c in self.counts], float(self.any_count)
        else:
            alpha_sum = self.alpha_sum.tolist()
            regulated, any_regulated = self.regulated.tolist(), float(self.any_regulated)
        return {
            "alpha": {m: (a / r if r else None) for m, a, r in zip(self.modalities, alpha_sum, regulated)},
            "reg_frac": {m: r / n for m, r in zip(self.modalities, regulated)},
            "regulated_frac": any_regulated / n,
        }
