"""AGM (Li et al., "Boosting Multi-modal Model Performance with Adaptive Gradient Modulation", ICCV 2023).

What the official code does (github.com/lihong2303/AGM_ICCV2023; BASELINES.md B.4), two modalities a, v:

* Per step it runs the network on f(a, v) (train mode) and on f(a, 0), f(0, v) (eval mode, with gradients;
  "0" is a zeroed *input* tensor) and forms the Shapley-like mono logits
  m_a = (f(a, v) - f(0, v) + f(a, 0)) / 2 and m_v = (f(a, v) - f(a, 0) + f(0, v)) / 2, so m_a + m_v = f(a, v).
* Training loss: CE(m_a + m_v, y). Each m_m passes through an identity module with a full backward hook that
  multiplies its gradient by kappa_m, so the encoders see (kappa_a + kappa_v)/2 d f(a,v) +- (kappa_a -
  kappa_v)/2 d f(a,0) etc.
* Scores s_m = batch mean of -log p(m_m)[y] (probabilities floored at 1e-8); running averages s_bar_m are the
  cumulative mean over every iteration so far (carried across epochs). r_a = exp(s_v - s_a),
  r_bar_a = exp(s_bar_v - s_bar_a), kappa_a = exp(alpha * min(r_bar_a - r_a, 10)) (symmetrically for v),
  computed *before* the running averages take in the current batch. alpha = 1.5 (CREMA-D).
* If any entry of the fusion classifier's weight gradient leaves [-1, 1], the global gradient norm is
  clipped to 1.

What this implementation does:

* The extra passes run `model.fusion` on the encoders' features `out.features` with the left-out modality's
  *features* zeroed (the encoders run once). The official code zeroes the *input* tensors, which for MLP
  encoders with biases gives non-zero features, so this is not the same function; zeroing features is
  cheaper (no extra encoder passes) and matches the paper's "unimodal logits" convention used everywhere in
  this package (for concat fusion the mono logits are then exactly the split-head logits h_m W_m^T + b/M).
  The fusions here have no dropout or batch norm, so "eval mode" for those passes changes nothing.
  The passes carry gradients, as in the official code; the unused f(0, 0) pass is not run.
* M modalities, with leave-one-out passes only (M + 1 fusion passes, not 2^M): with Delta_m = f(N) - f(N\\m)
  the leave-one-out marginal contribution,
      m_m = f(N) / M + Delta_m - mean_k Delta_k = f(N) / M + mean_k f(N\\k) - f(N\\m).
  The m_m add up to f(N) and for M = 2 this is exactly the official formula. (An exact Shapley value would
  need every subset; BalanceBenchmark does that for 3 modalities.)
* Ratios for M modalities: r_m = exp(M/(M-1) * (mean_k s_k - s_m)) and r_bar_m likewise from s_bar, which is
  the official exp(s_v - s_a) for M = 2. (BalanceBenchmark's M-modality version uses the opposite sign,
  exp(M/(M-1) (s_m - mean)), with cap 7, alpha 0.1 and clip 5; we keep the official two-modality rule.)
  kappa_m = exp(alpha * min(r_bar_m - r_m, 10)); the scaling is a tensor hook on m_m (`agm.alpha`).
* The clip (`agm.clip`, official 1.0) looks at the classifier weights: the concat head, the sum fusion's
  per-modality heads, the FiLM/gated output head; it then clips the norm of every gradient of the model.
* Everything stays on the device (no host sync per step); the running averages and the iteration count are
  in state_dict, so a resumed run continues them.

`method.regulate`: kappa_m is applied only in epochs where regulation is active for m (kappa = 1 otherwise);
in epochs where it is active for no modality the loss is plain CE(f) (identical gradients to joint training,
the extra passes run without gradients only to keep the running scores up to date) and there is no clip, so
the method then is joint training. The running averages are updated on every training step, as the
official code updates them outside its modulation window too.

Tr F: the FisherMeter sees the head called M + 1 times per step and adds the calls' per-sample gradients
exactly (tests/test_fisher.py); what it measures is each sample's gradient of the kappa-scaled loss that is
back-propagated (kappa is a batch constant), before the clip.

Logged per epoch: `alpha` {m} the mean kappa_m over the batches where it was applied, `reg_frac` {m} the
fraction of batches where it was applied, `regulated_frac` where any was; `agm_score` {m} mean s_m,
`agm_score_avg` {m} the running s_bar_m at the end of the epoch, `agm_slowed_frac` {m} the fraction of
batches with kappa_m < 1, `agm_clip_frac` the fraction of batches whose gradients were clipped.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Output
from .base import EpochState, Method, regulation_active

CAP = 10.0  # official: kappa = exp(alpha * min(r_bar - r, 10))
FLOOR = 1e-8  # official: probabilities below this count as 1e-8 in the scores


def _fused_only(fusion: nn.Module, feats: list[Tensor]) -> Tensor:
    """The fused logits of `feats` (FiLM/gated: their `fuse`, which skips the unimodal passes)."""
    fuse = getattr(fusion, "fuse", None)
    return fuse(feats) if fuse is not None else fusion(feats)[0]


def mono_logits(fusion: nn.Module, feats: list[Tensor], fused: Tensor) -> list[Tensor]:
    """Shapley-like mono logits from leave-one-out passes: m_m = f(N)/M + mean_k f(N\\k) - f(N\\m).

    f(N\\m) is the fusion with modality m's features zeroed; the m_m add up to f(N) = `fused`."""
    n = len(feats)
    if n == 1:
        return [fused]
    loo = [_fused_only(fusion, [torch.zeros_like(h) if k == m else h for k, h in enumerate(feats)])
           for m in range(n)]
    mean_loo = torch.stack(loo).mean(0)
    return [fused / n + mean_loo - loo[m] for m in range(n)]


def mono_scores(mono: list[Tensor], labels: Tensor) -> Tensor:
    """s_m = batch mean of -log p(m_m)[y], with p floored at 1e-8 (shape (M,), no gradient)."""
    logp = torch.stack([F.log_softmax(z.detach(), 1).gather(1, labels[:, None])[:, 0] for z in mono])
    return -logp.clamp(min=math.log(FLOOR)).mean(1)


def agm_coefficients(scores: Tensor, running: Tensor, alpha: float, cap: float = CAP) -> Tensor:
    """kappa_m = exp(alpha * min(r_bar_m - r_m, cap)) with r_m = exp(M/(M-1) (mean_k s_k - s_m)) and r_bar_m
    the same from the running scores (M = 2: r_a = exp(s_v - s_a), as in the official code)."""
    n = len(scores)
    if n == 1:
        return torch.ones_like(scores)
    c = n / (n - 1)
    r = torch.exp(c * (scores.mean() - scores))
    r_bar = torch.exp(c * (running.mean() - running))
    return torch.exp(alpha * (r_bar - r).clamp(max=cap))


def scale_grad(t: Tensor, k: Tensor) -> Tensor:
    """Register a hook multiplying the gradient that reaches `t` by k; returns t."""
    t.register_hook(lambda g: g * k)
    return t


def classifier_weights(fusion: nn.Module) -> list[nn.Parameter]:
    """The fusion's output classifier weights (what the official clip watches)."""
    head = getattr(fusion, "head", None)
    if head is not None:
        return [head.weight]
    heads = getattr(fusion, "heads", None)
    if heads is not None:
        return [h.weight for h in heads]
    return [p for p in fusion.parameters() if p.ndim >= 2]


class AGM(Method):
    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.alpha = cfg.agm.alpha
        self.clip = cfg.agm.clip
        self.classifier = classifier_weights(model.fusion)
        self.running: Tensor | None = None  # s_bar_m, on the device
        self.iterations = 0
        self._loaded: list[float] | None = None
        self.active: dict[str, bool] = {m: True for m in self.modalities}
        self._reset(next(model.parameters()))

    def _reset(self, ref: Tensor) -> None:
        n, dev, dt = len(self.modalities), ref.device, ref.dtype
        self.mask = torch.tensor([self.active[m] for m in self.modalities], device=dev)
        self.kappa_sum = torch.zeros(n, device=dev, dtype=dt)
        self.score_sum = torch.zeros(n, device=dev, dtype=dt)
        self.slowed = torch.zeros(n, device=dev)
        self.clipped = torch.zeros((), device=dev)
        self.batches = 0
        self.clip_now = False

    def on_epoch_start(self, state: EpochState) -> None:
        mc, wc = self.cfg.method, self.cfg.window
        self.active = {m: regulation_active(mc.regulate, state.window[m][0], state.epoch, wc.min_epoch)
                       for m in self.modalities}
        self._reset(next(self.model.parameters()))

    def _running(self, like: Tensor) -> Tensor:
        if self.running is None:
            init = self._loaded if self._loaded is not None else [0.0] * len(self.modalities)
            self.running = torch.tensor(init, device=like.device, dtype=like.dtype)
            self._loaded = None
        return self.running

    def loss(self, out: Output, labels: Tensor) -> Tensor:
        feats = [out.features[m] for m in self.modalities]
        acting = any(self.active.values()) and torch.is_grad_enabled()
        if acting:
            mono = mono_logits(self.model.fusion, feats, out.logits)
        else:
            with torch.no_grad():
                mono = mono_logits(self.model.fusion, [h.detach() for h in feats], out.logits.detach())
        scores = mono_scores(mono, labels)
        running = self._running(scores)
        kappa = torch.where(self.mask, agm_coefficients(scores, running, self.alpha), torch.ones_like(scores))
        if self.model.training:  # cumulative mean over all iterations, after kappa is computed
            self.iterations += 1
            t = self.iterations
            self.running = running * ((t - 1) / t) + scores / t
        self.batches += 1
        self.score_sum += scores
        self.clip_now = acting
        if not acting:
            return F.cross_entropy(out.logits, labels)
        self.kappa_sum += kappa * self.mask
        self.slowed += (kappa < 1) & self.mask
        mono = [scale_grad(z, kappa[i]) if self.active[m] else z for i, (m, z) in enumerate(zip(self.modalities, mono))]
        return F.cross_entropy(torch.stack(mono).sum(0), labels)

    @torch.no_grad()
    def after_backward(self, out: Output, labels: Tensor, state: EpochState) -> None:
        if not self.clip_now or self.clip <= 0:
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        heads = [w.grad for w in self.classifier if w.grad is not None]
        if not grads or not heads:
            return
        trigger = torch.stack([g.abs().amax() for g in heads]).amax() > self.clip
        total = torch.stack(torch._foreach_norm(grads)).norm()
        coef = torch.where(trigger, (self.clip / (total + 1e-6)).clamp(max=1.0), torch.ones_like(total))
        torch._foreach_mul_(grads, coef)
        self.clipped += trigger

    def on_epoch_end(self, state: EpochState) -> dict:
        n = max(self.batches, 1)
        kappa, slowed, score = self.kappa_sum.tolist(), self.slowed.tolist(), self.score_sum.tolist()
        running = self.running.tolist() if self.running is not None else [0.0] * len(self.modalities)
        any_active = any(self.active.values()) and self.batches > 0
        return {
            "alpha": {m: (k / n if self.active[m] and self.batches else None) for m, k in zip(self.modalities, kappa)},
            "reg_frac": {m: (1.0 if self.active[m] and self.batches else 0.0) for m in self.modalities},
            "regulated_frac": 1.0 if any_active else 0.0,
            "agm_score": {m: s / n for m, s in zip(self.modalities, score)},
            "agm_score_avg": dict(zip(self.modalities, running)),
            "agm_slowed_frac": {m: s / n for m, s in zip(self.modalities, slowed)},
            "agm_clip_frac": float(self.clipped) / n,
        }

    def state_dict(self) -> dict:
        running = self.running.tolist() if self.running is not None else self._loaded
        return {"running": running, "iterations": self.iterations}

    def load_state_dict(self, state: dict) -> None:
        self.iterations = int(state.get("iterations", 0))
        self._loaded = state.get("running")
        self.running = None
