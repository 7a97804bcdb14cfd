"""MMPareto (Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024).

What the official code does (github.com/GeWu-Lab/MMPareto_ICML2024, code/MMPareto.py; BASELINES.md B.2):

* Losses L_mm = CE(f), L_a = CE(head_a(a)), L_v = CE(head_v(v)) with *separate* unimodal heads.
* Three backward passes (graph retained) record, per encoder parameter tensor, g_mm (from L_mm) and g_u (from
  the encoder's own unimodal loss); heads are excluded.
* Per encoder, the cosine of the flattened whole-encoder gradients: if cos > 0 the weights are (1/2, 1/2);
  otherwise the MGDA min-norm point of the two (Sener & Koltun's MinNormSolver: closed form for two vectors,
  w_mm = (g_u.g_u - g_mm.g_u) / |g_mm - g_u|^2, 0.999 / 0.001 at the ends).
* A fourth backward of L_mm + L_a + L_v gives g_sum; for each encoder tensor h = 2 (w_mm g_mm + w_u g_u),
  r = |g_sum| / |h| (per tensor) and the new gradient is gamma * max(r, 1) * h with gamma = 1.5 (so without
  conflict simply 1.5 g_sum). The heads keep their plain summed gradients.

What this implementation does:

* The unimodal losses use the model's own unimodal logits f_m (the split head for concat, each branch for
  sum, the fusion with the other modalities' features zeroed for FiLM / gated) instead of separate
  unimodal heads, so L_m also trains the fusion head's block of modality m. The loss that the loop
  back-propagates is L = CE(f) + sum_m CE(f_m) (`method.unimodal_weight` is not used: MMPareto always has
  the unimodal losses with weight 1).
* M modalities: each encoder m compares the multimodal gradient with the gradient of its own CE(f_m), which
  is the official two-modality rule applied per encoder; nothing else changes.
* Separate gradients: inside `loss` (the graph is still alive there) two `torch.autograd.grad` passes on the
  regulated encoders' parameters give g_mm (from CE(f)) and g_u (from sum_m CE(f_m): f_k does not depend on
  encoder m != k for any fusion here, so encoder m receives exactly the gradient of CE(f_m)). With the
  loop's own backward that is 3 backward passes per step instead of the official 4 (the official needs one
  pass per unimodal loss; the gradients are the same). The cost shows in the run's `seconds`.
* `after_backward` replaces each regulated encoder's gradients (g_sum, from the loop's backward) by
  gamma * max(r, 1) * h per tensor, with w_mm from the closed form clipped to [0.001, 0.999] when
  cos <= 0 and 1/2 otherwise (`mmpareto.gamma`). Fusion parameters keep g_sum. Everything stays on the
  device (no host sync per step).

Tr F in MMPareto runs: the FisherMeter's tensor hooks fire during the two extra passes too, but the loop's
backward of L runs last and overwrites what they kept, so the meter measures the per-sample gradients of the
total loss L = CE(f) + sum_m CE(f_m) that the loop back-propagates, *before* MMPareto's batch-level
re-weighting and rescaling (which has no per-sample form: its weights and norm ratios come from the batch
gradients). `grad_norm` is also taken before; the official-proxy trace (`trace_official`) is read after
`after_backward` and so sees the modified gradients.

`method.regulate`: encoder m's gradient is modified only in epochs where regulation is active for m; an
inactive encoder keeps g_sum (joint* training, no gamma) and costs no extra pass.

Logged per epoch: `alpha` {m} the mean weight w_mm of the multimodal gradient (1/2 when the gradients agree),
`reg_frac` {m} the fraction of batches with conflicting gradients (cos <= 0: the min-norm combination was
used), `regulated_frac` the fraction with a conflict in any encoder; `mmpareto_cos` {m} the mean cosine and
`mmpareto_scale` {m} the mean of |new gradient| / |g_sum| over the encoder (gamma without conflict).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import Output
from .base import EpochState, Method, regulation_active

W_MIN, W_MAX = 0.001, 0.999  # MinNormSolver's ends


def min_norm_weight(mm: Tensor, mu: Tensor, uu: Tensor) -> Tensor:
    """MGDA for two vectors: the w in [0.001, 0.999] minimising |w g_mm + (1 - w) g_u|^2, from the dot
    products mm = g_mm.g_mm, mu = g_mm.g_u, uu = g_u.g_u."""
    return ((uu - mu) / (mm + uu - 2 * mu).clamp_min(torch.finfo(mm.dtype).tiny)).clamp(W_MIN, W_MAX)


def pareto_combine(g_mm: list[Tensor], g_u: list[Tensor], g_sum: list[Tensor], gamma: float):
    """One encoder's new gradients: (tensors, w_mm, cos, conflict).

    cos over the flattened encoder; w_mm = 1/2 if cos > 0 else the min-norm weight; per tensor
    h = 2 (w_mm g_mm + (1 - w_mm) g_u) and new = gamma * max(|g_sum| / |h|, 1) * h."""
    mm = sum((a * a).sum() for a in g_mm)
    uu = sum((b * b).sum() for b in g_u)
    mu = sum((a * b).sum() for a, b in zip(g_mm, g_u))
    cos = mu / (mm.sqrt() * uu.sqrt()).clamp_min(torch.finfo(mm.dtype).tiny)
    conflict = cos <= 0
    w = torch.where(conflict, min_norm_weight(mm, mu, uu), torch.full_like(mm, 0.5))
    h = torch._foreach_add(torch._foreach_mul(g_mm, 2 * w), torch._foreach_mul(g_u, 2 * (1 - w)))
    h_norm = torch.stack(torch._foreach_norm(h))
    s_norm = torch.stack(torch._foreach_norm(g_sum))
    ratio = torch.where(h_norm > 0, s_norm / h_norm.clamp_min(torch.finfo(mm.dtype).tiny), torch.ones_like(h_norm))
    scale = gamma * ratio.clamp_min(1.0)
    for t, k in zip(h, scale.unbind()):
        t.mul_(k)
    return h, w, cos, conflict


class MMPareto(Method):
    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.gamma = cfg.mmpareto.gamma
        self.params = {m: list(model.encoders[m].parameters()) for m in self.modalities}
        self.active: dict[str, bool] = {m: True for m in self.modalities}
        self.pending: dict | None = None
        self._reset(next(model.parameters()))

    def _reset(self, ref: Tensor) -> None:
        n, dev, dt = len(self.modalities), ref.device, ref.dtype
        self.w_sum = torch.zeros(n, device=dev, dtype=dt)
        self.cos_sum = torch.zeros(n, device=dev, dtype=dt)
        self.scale_sum = torch.zeros(n, device=dev, dtype=dt)
        self.conflicts = torch.zeros(n, device=dev)
        self.any_conflict = torch.zeros((), device=dev)
        self.batches = 0

    def on_epoch_start(self, state: EpochState) -> None:
        mc, wc = self.cfg.method, self.cfg.window
        self.active = {m: regulation_active(mc.regulate, state.window[m][0], state.epoch, wc.min_epoch)
                       for m in self.modalities}
        self._reset(next(self.model.parameters()))

    def loss(self, out: Output, labels: Tensor) -> Tensor:
        loss_mm = F.cross_entropy(out.logits, labels)
        loss_u = {m: F.cross_entropy(out.unimodal[m], labels) for m in self.modalities}
        total = loss_mm + sum(loss_u.values())
        self.pending = None
        acting = [m for m in self.modalities if self.active[m]]
        if acting and torch.is_grad_enabled() and total.requires_grad:
            params = [p for m in acting for p in self.params[m]]
            g_mm = torch.autograd.grad(loss_mm, params, retain_graph=True, allow_unused=True)
            g_u = torch.autograd.grad(sum(loss_u[m] for m in acting), params, retain_graph=True, allow_unused=True)
            g_mm = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_mm)]
            g_u = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_u)]
            self.pending, i = {}, 0
            for m in acting:
                k = len(self.params[m])
                self.pending[m] = (g_mm[i:i + k], g_u[i:i + k])
                i += k
        return total

    @torch.no_grad()
    def after_backward(self, out: Output, labels: Tensor, state: EpochState) -> None:
        self.batches += 1
        if not self.pending:
            return
        conflict_any = torch.zeros((), dtype=torch.bool, device=self.conflicts.device)
        for i, m in enumerate(self.modalities):
            if m not in self.pending:
                continue
            g_mm, g_u = self.pending[m]
            ps = self.params[m]
            g_sum = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
            new, w, cos, conflict = pareto_combine(g_mm, g_u, g_sum, self.gamma)
            s_norm = torch.stack(torch._foreach_norm(g_sum)).norm()
            n_norm = torch.stack(torch._foreach_norm(new)).norm()
            for p, g in zip(ps, new):
                p.grad = g
            self.w_sum[i] += w
            self.cos_sum[i] += cos
            self.scale_sum[i] += n_norm / s_norm.clamp_min(torch.finfo(s_norm.dtype).tiny)
            self.conflicts[i] += conflict
            conflict_any = conflict_any | conflict
        self.any_conflict += conflict_any
        self.pending = None

    def on_epoch_end(self, state: EpochState) -> dict:
        n = max(self.batches, 1)
        on = {m: self.active[m] and self.batches > 0 for m in self.modalities}
        w, cos, scale, conf = (t.tolist() for t in (self.w_sum, self.cos_sum, self.scale_sum, self.conflicts))
        mods = self.modalities
        return {
            "alpha": {m: (w[i] / n if on[m] else None) for i, m in enumerate(mods)},
            "reg_frac": {m: conf[i] / n for i, m in enumerate(mods)},
            "regulated_frac": float(self.any_conflict) / n,
            "mmpareto_cos": {m: (cos[i] / n if on[m] else None) for i, m in enumerate(mods)},
            "mmpareto_scale": {m: (scale[i] / n if on[m] else None) for i, m in enumerate(mods)},
        }
