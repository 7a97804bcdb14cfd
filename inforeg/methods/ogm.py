"""OGM and OGM-GE: on-the-fly gradient modulation (Peng et al., CVPR 2022), with generalisation enhancement.

Official code (GeWu-Lab/OGM-GE_CVPR2022, BASELINES.md B.1), per step: loss CE(f) and one backward; scores
s_m = sum over the batch of softmax(f_m)[y] (split-head unimodal logits); ratio rho of the leader's score over
the other's; the leader's coefficient k = 1 - tanh(alpha * rho), the other's k = 1; inside the modulation
epochs every *conv weight* gradient (4-D tensors) of each encoder becomes k_m g (OGM) or k_m g + eps with
eps ~ N(0, (std(g) + 1e-8)^2), std taken on the unmodulated g (OGM-GE: noise on both encoders, the leader's
and the other's). Biases, BatchNorm and the fusion head are left alone. Then the optimizer step.

This implementation (`method.name` ogm or ogm_ge), in `after_backward` on the one ordinary backward pass:
- the loss is the loop's joint loss (CE(f), plus unimodal CEs if `method.unimodal_weight` > 0);
- scores s_m = sum over the batch of the true-class probability of `out.unimodal[m]` (what every fusion gives:
  split head for concat, branches for sum, other modalities zeroed for FiLM / gated);
- M modalities: rho_m = s_m / min_k s_k, and k_m = 1 - tanh(alpha * rho_m) for every m with rho_m > 1, else
  1. With two modalities this is exactly the official rule (the leader's rho is s_lead / s_other and the other
  has rho = 1); with three, every modality above the weakest is slowed by its own ratio to the weakest
  (BalanceBenchmark's generalisation).
- "conv weights only" becomes every weight tensor of the encoder with two or more dimensions: for the MLP
  encoders, the Linear weights (2-D); for the ResNet-18 encoders, the 4-D conv weights, exactly as the
  official code; for the transformer encoders, every weight matrix (projections, attention, feed-forward).
  Biases and normalisation parameters (1-D) are never touched.
- OGM-GE adds the Gaussian noise to the weight gradients of every encoder whose regulation is active, with
  the std of that tensor's unmodulated gradient (torch's unbiased std, as the official `.std()`), drawn
  from a generator of the method (seeded with the run's seed, saved in `state_dict`) so that a resumed run
  draws the same noise as an uninterrupted one and the global RNG stream is left as joint training has it.
- The modulation epochs are `method.regulate` (window | always | outside): modality m is modulated (and gets
  the GE noise) only in epochs where `regulation_active` holds for m. The official default modulates epochs
  0-50 of 100; `always` is the closest of the three switches.
- Everything stays on the device: no host sync per step, no per-sample loop.

Deviations: ties (rho = 1 for every modality) leave every k at 1; the official two-modal code then slows the
first ("audio") modality by 1 - tanh(alpha). Noise comes from the method's own generator rather than the
global one. The Fisher meter reads the per-sample gradients of the backward pass, i.e. *before* modulation
(there is no extra backward); the official proxy trace, read after `after_backward`, sees the modulated ones.

Logged per epoch: `alpha` {m} the mean coefficient k_m over the batches where m was slowed (None if never),
`reg_frac` {m} the fraction of batches where m was slowed, `regulated_frac` the fraction where any was,
`ogm_coef` {m} the mean k_m over all batches (1 where not slowed), `ogm_ratio` {m} the mean rho_m, and for
OGM-GE `ogm_noise_std` {m} the mean noise std over the weight tensors and the batches where noise was added.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..models import Output
from .base import EpochState, Method, regulation_active, true_class_prob


def ogm_coefficients(scores: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """(k, rho): rho_m = s_m / min_k s_k; k_m = 1 - tanh(alpha rho_m) where rho_m > 1, else 1."""
    rho = scores / scores.min().clamp_min(torch.finfo(scores.dtype).tiny)
    k = torch.where(rho > 1, 1 - torch.tanh(alpha * rho), torch.ones_like(rho))
    return k, rho


def weight_params(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weight tensors OGM modulates: two or more dimensions (Linear and conv weights), never biases."""
    return [p for p in module.parameters() if p.ndim >= 2]


class OGM(Method):
    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.alpha = cfg.ogm.alpha
        self.ge = cfg.method.name == "ogm_ge"
        self.weights = {m: weight_params(model.encoders[m]) for m in self.modalities}
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.active: dict[str, bool] = {m: False for m in self.modalities}

    def on_epoch_start(self, state: EpochState) -> None:
        mc, wc = self.cfg.method, self.cfg.window
        self.active = {m: regulation_active(mc.regulate, state.window[m][0], state.epoch, wc.min_epoch)
                       for m in self.modalities}
        first = next(self.model.parameters())
        n = len(self.modalities)
        self.mask = torch.tensor([self.active[m] for m in self.modalities], device=first.device)
        self.k_slowed, self.k_all, self.rho_sum, self.noise_sum = (
            torch.zeros(n, device=first.device, dtype=first.dtype) for _ in range(4))
        self.slowed = torch.zeros(n, device=first.device)
        self.any_slowed = torch.zeros((), device=first.device)
        self.batches = 0

    @torch.no_grad()
    def after_backward(self, out: Output, labels: Tensor, state: EpochState) -> None:
        self.batches += 1
        if not any(self.active.values()):
            self.k_all += 1
            return
        scores = torch.stack([true_class_prob(out.unimodal[m].detach(), labels).sum() for m in self.modalities])
        k, rho = ogm_coefficients(scores, self.alpha)
        k = torch.where(self.mask, k, torch.ones_like(k))
        for i, m in enumerate(self.modalities):
            if not self.active[m]:
                continue
            grads = [p.grad for p in self.weights[m] if p.grad is not None]
            if not grads:
                continue
            if self.ge:  # the noise's std is that of the unmodulated gradient
                std = torch.stack([g.std() for g in grads]) + 1e-8
                noise = [torch.randn(g.shape, generator=self.generator, device=g.device, dtype=g.dtype) * s
                         for g, s in zip(grads, std)]
                self.noise_sum[i] += std.mean()
            torch._foreach_mul_(grads, k[i])
            if self.ge:
                torch._foreach_add_(grads, noise)
        on = k < 1
        self.k_slowed += k * on
        self.k_all += k
        self.rho_sum += rho
        self.slowed += on
        self.any_slowed += on.any()

    def on_epoch_end(self, state: EpochState) -> dict:
        n = max(self.batches, 1)
        k_slowed, k_all, slowed = self.k_slowed.tolist(), self.k_all.tolist(), self.slowed.tolist()
        rho, noise = self.rho_sum.tolist(), self.noise_sum.tolist()
        mods = self.modalities
        record = {
            "alpha": {m: (a / s if s else None) for m, a, s in zip(mods, k_slowed, slowed)},
            "reg_frac": {m: s / n for m, s in zip(mods, slowed)},
            "regulated_frac": float(self.any_slowed) / n,
            "ogm_coef": {m: a / n for m, a in zip(mods, k_all)},
            "ogm_ratio": {m: (r / n if self.active[m] else None) for m, r in zip(mods, rho)},
        }
        if self.ge:
            record["ogm_noise_std"] = {m: (v / n if self.active[m] else None) for m, v in zip(mods, noise)}
        return record

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
