"""Greedy: re-balancing steps for the modality that learns slower (Wu et al., ICML 2022).

Official code (nyukat/greedy_multimodal_learning, callback `Bias_Mitigation_Strong`; BASELINES.md B.6): the
network is a mid-fusion net whose branches exchange information through MMTM blocks. After every backward
pass outside re-balancing, it adds, per modality m, ||g||^2 / ||theta||^2 (squared gradient norm over squared
weight norm, summed over the tensors of a group) of the "main" parameters (m's own branch) and of the "bypass"
parameters (the MMTM layers feeding m; the shared squeeze layer counts for both) to running sums M_main_m and
M_bypass_m that are never reset. Conditional learning speed BDR_m = log10(M_bypass_m / M_main_m); imbalance
d = BDR_0 - BDR_1. From the second epoch on, when |d| > epsilon (0.001), the next `curation_windowsize` (5)
batches are re-balancing steps for the modality with the larger BDR (caring_modality = 0 if d > 0): its MMTM
scale is replaced by a running average, so its branch no longer receives the other modality's information
and must learn from its own input; all parameters are still updated. Then back to normal steps.

This implementation: our late-fusion models have no MMTM block, hence no bypass path. So:
- learning speed of modality m: S_m = sum over the run's normal (not re-balancing) batches of
  ||g_m||^2 / ||theta_m||^2 over all parameters (weights and biases) of encoder m, accumulated over the whole
  run as in the official code (saved in `state_dict`). With equal bypass terms the official d reduces to
  log10 S_1 - log10 S_0, so the caring modality is the one whose own branch learns slower: the official rule
  without the term log10(M_bypass_0 / M_bypass_1) that our models do not have.
- M modalities: imbalance = log10 max_m S_m - log10 min_m S_m; the slowest modality is the one re-balanced.
- when the imbalance exceeds `greedy.threshold` after a normal batch, the next `greedy.window` batches are
  re-balancing steps: the gradients of every other (faster) encoder are zeroed, so only the slower encoder
  and the fusion head learn from those batches. This replaces cutting the cross-modal MMTM flow, which does
  not exist here; the intent is the same (the slower modality is made to learn from its own input).
- no re-balancing before `greedy.start_epoch` (official: its second epoch); the speeds are accumulated from
  the first batch, as in the official code.
- `method.regulate`: a faster encoder is frozen only in epochs where `regulation_active` holds for it, and
  re-balancing is triggered only in epochs where it holds for some modality.
- everything stays on the device (the trigger, the countdown and the slow modality are device tensors): no
  host sync per step, where the official code calls `.item()` on every parameter after every batch.

Deviations: no bypass term (above); the re-balancing step zeroes the faster encoders' gradients instead of
replacing an MMTM scale, and with momentum SGD a zeroed encoder still moves by its decaying momentum (and by
weight decay, if any) during those steps. The Fisher meter reads the backward pass's per-sample gradients
before the zeroing (there is no extra backward); the official proxy trace sees the zeroed ones.

Logged per epoch: `reg_frac` {m} the fraction of batches on which m's encoder was frozen, `regulated_frac`
the fraction of re-balancing batches (something frozen), `greedy_slow_frac` {m} the fraction of batches that
were re-balancing steps for m, `greedy_speed` {m} log10 S_m at the end of the epoch, `greedy_imbalance` the
imbalance then.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..models import Output
from .base import EpochState, Method, regulation_active


def learning_speed_ratio(grads: list[Tensor], params: list[Tensor]) -> Tensor:
    """||g||^2 / ||theta||^2 over a group of tensors (the official per-batch increment)."""
    g2 = torch.stack(torch._foreach_norm(grads)).square().sum()
    w2 = torch.stack(torch._foreach_norm(params)).square().sum()
    return g2 / w2.clamp_min(torch.finfo(w2.dtype).tiny)


def imbalance(speed: Tensor) -> Tensor:
    """log10 of the fastest accumulated speed over the slowest."""
    log_speed = speed.clamp_min(torch.finfo(speed.dtype).tiny).log10()
    return log_speed.max() - log_speed.min()


class Greedy(Method):
    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        gc = cfg.greedy
        self.threshold, self.window, self.start_epoch = gc.threshold, gc.window, gc.start_epoch
        self.params = {m: list(model.encoders[m].parameters()) for m in self.modalities}
        device = next(model.parameters()).device
        n = len(self.modalities)
        self.index = torch.arange(n, device=device)
        self.speed = torch.zeros(n, device=device, dtype=torch.float64)  # S_m, accumulated over the run
        self.remaining = torch.zeros((), device=device, dtype=torch.long)  # re-balancing steps still to do
        self.slow = torch.zeros((), device=device, dtype=torch.long)  # the modality they are for
        self.active: dict[str, bool] = {m: False for m in self.modalities}

    def on_epoch_start(self, state: EpochState) -> None:
        mc, wc = self.cfg.method, self.cfg.window
        self.active = {m: state.epoch >= self.start_epoch
                       and regulation_active(mc.regulate, state.window[m][0], state.epoch, wc.min_epoch)
                       for m in self.modalities}
        device = self.speed.device
        self.mask = torch.tensor([self.active[m] for m in self.modalities], device=device)
        self.unlocked = any(self.active.values())
        n = len(self.modalities)
        self.frozen = torch.zeros(n, device=device)
        self.slow_steps = torch.zeros(n, device=device)
        self.any_frozen = torch.zeros((), device=device)
        self.batches = 0

    @torch.no_grad()
    def after_backward(self, out: Output, labels: Tensor, state: EpochState) -> None:
        self.batches += 1
        rebalancing = self.remaining > 0
        grads = {m: [p.grad for p in self.params[m] if p.grad is not None] for m in self.modalities}
        ratio = torch.stack([learning_speed_ratio(grads[m], [p for p in self.params[m] if p.grad is not None])
                             for m in self.modalities]).double()
        if self.unlocked:  # re-balancing step: only the slow encoder (and the head) learns from this batch
            freeze = rebalancing & (self.index != self.slow) & self.mask
            keep = (~freeze).to(ratio.dtype)
            for i, m in enumerate(self.modalities):
                if self.active[m]:
                    torch._foreach_mul_(grads[m], keep[i].to(grads[m][0].dtype))
            self.frozen += freeze
            self.any_frozen += freeze.any()
            self.slow_steps += rebalancing & (self.index == self.slow)
        self.speed += ratio * ~rebalancing  # speeds grow on normal batches only
        trigger = ~rebalancing & (imbalance(self.speed) > self.threshold) & self.unlocked
        self.slow = torch.where(trigger, self.speed.argmin(), self.slow)
        self.remaining = torch.where(rebalancing, self.remaining - 1,
                                     torch.where(trigger, self.window, 0)).long()

    def on_epoch_end(self, state: EpochState) -> dict:
        n = max(self.batches, 1)
        mods = self.modalities
        speed = self.speed.clamp_min(torch.finfo(self.speed.dtype).tiny).log10().tolist()
        return {
            "reg_frac": {m: f / n for m, f in zip(mods, self.frozen.tolist())},
            "regulated_frac": float(self.any_frozen) / n,
            "greedy_slow_frac": {m: s / n for m, s in zip(mods, self.slow_steps.tolist())},
            "greedy_speed": {m: (s if self.speed[i] > 0 else None) for i, (m, s) in enumerate(zip(mods, speed))},
            "greedy_imbalance": float(imbalance(self.speed)) if bool((self.speed > 0).all()) else None,
        }

    def state_dict(self) -> dict:
        return {"speed": self.speed.tolist(), "remaining": int(self.remaining), "slow": int(self.slow)}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.speed = torch.tensor(state["speed"], device=self.speed.device, dtype=torch.float64)
        self.remaining.fill_(state["remaining"])
        self.slow.fill_(state["slow"])
