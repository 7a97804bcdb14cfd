"""MI-Balance: RECONSTRUCTED from Xie & Sanguinetti, "Balanced Multimodal Learning via Mutual Information"
(arXiv 2511.00987), with the gate of the companion paper (CCH, arXiv 2510.13182).

What is public, and what is not. Only the abstract, the first paragraph of the introduction and aggregator
summaries are public; there is no official code. Verified: two stages, (1) cross-modal knowledge
distillation (KD) pretraining in which a stronger modality teaches the weaker ones (Hinton-style soft
labels), with mutual information (MI) deciding "when transfer is plausible", then (2) multitask-like training
whose unimodal and multimodal losses are reweighted from per-modality macro-F1 and inter-modal MI; graph
(r-GCN) encoders over a fused patient network on TCGA-BRCA. NOT known: the KD loss and its constants, the
teacher rule, the weight formula, the MI estimator, the stage lengths. So everything below is a
reconstruction (../shared/MI_BALANCE.md section 1.4), every constant a setting in `cfg.mibalance`.

What this implementation does, inside the one training loop (one forward, one backward per step):

* Stage 1, epochs [0, stage1_epochs): unimodal pretraining. Loss
  `stage1_fused_weight * CE(f) + sum_m L_m`. During the first `warmup_epochs` (the reconstruction's
  "stage 0": no teacher yet) L_m = CE(f_m) for every modality. At the first distillation epoch the
  teacher t is the modality with the best unimodal macro-F1 on the validation split, and for each other
  modality s (the students) the CCH gate is tested on validation features:
  distil iff I(H_t; H_s) > I(H_s; Y) (`gate=cch`; `always` and `never` are the "-MI gate" and "-KD"
  ablations). A distilled student has L_s = (1 - lambda) CE(f_s) + lambda T^2 KL(p_t^T || p_s^T) with
  p^T = softmax(logits / T) and the teacher's logits detached; an undistilled one keeps CE(f_s); the teacher
  keeps `teacher_weight * CE(f_t)`. The decision is taken once (`regate=True`: again every stage-1 epoch).
* Stage 2, the remaining epochs: `fused_weight * CE(f) + sum_m w_m CE(f_m)`, with w_m refreshed every
  `period` epochs from the validation split (`stage2_weights`):
  s_m = ((1 - F1_m) / mean_k(1 - F1_k))^gamma * ((1/M) / D_m)^beta,
  w_m = clip(M s_m / sum_k s_k, w_min, w_max), where D_m = I(H_m; z) / sum_k I(H_k; z) is modality m's share
  of the MI with the fused representation z (weaker -> larger; under-used -> larger).

MI estimator (one for every MI here, so the two sides of the gate are in the same units): the Gaussian
(linear) estimator that MI_BALANCE.md lists as `gauss`, chosen because it is deterministic, cheap, has no
training loop (LMI trains an autoencoder; `latentmi` is not installed) and is exact in the jointly
Gaussian model of CCH's Theorem 1. Each representation is centred and reduced to its first `mi_dims`
principal components, whitened; MI = -1/2 sum_i log(1 - rho_i^2) over the canonical correlations rho_i,
shrunk by the ridge (rho_i / (1 + mi_ridge): the exact ridge on the whitened joint covariance, so a copy
gives a large finite MI); labels enter as one-hot vectors (all C - 1 non-degenerate directions, not
reduced); the mean MI of `mi_null` row permutations (fixed seed `mi_seed`) is subtracted to remove the
small-sample bias, and values are in bits (latentmi's unit). For one-hot labels this is minus half the log
of Wilks' lambda (between-class over total scatter). It only sees linear dependence.

Deviations and choices (all [R], reconstruction):
* Encoders are the package's (MLP), not r-GCNs over an SNF graph; data are whatever the run trains on.
* One loop instead of separate trainings: stage 0 (warm-up), 1 (KD) and 2 (multitask) are consecutive
  epoch ranges of the one model and optimiser; no best-val checkpointing per stage, and the fused head is
  not re-initialised at stage 2 (with concat fusion the unimodal heads are slices of the fused head).
* The teacher is not frozen: it keeps training on its own CE (weight `teacher_weight`; with 0 it receives
  zero gradients, but momentum and weight decay still move it). KD does not reach it (detached logits).
* "Fused representation" = the fused logits z, the one representation every fusion has (concat's fused
  features contain each H_m verbatim, which makes their MI infinite).
* The gate and the weights are measured at the start of the epoch they govern, on the model as the
  previous epoch left it (one extra forward pass over the validation split; its cost is in `seconds`).
* M modalities: one teacher (the best), M - 1 gated students; the weights are normalised over all M.
* `method.regulate`: KD acts on a student s, and the adaptive weight on modality m, only in epochs where
  regulation_active is true for s (m); otherwise s keeps CE(f_s) and w_m = `uniform_weight` (the schedule
  itself is kept). `method.unimodal_weight` is not used (the method has its own unimodal losses).
* FisherMeter: one ordinary backward of a per-sample-mean loss (KL with batchmean), so Tr F is exact.
* Needs the validation split (`data.n_val > 0`); it raises a ConfigError naming data.n_val otherwise.

Logged per epoch (None where not measured): `mibalance_stage` (warmup | distill | multitask),
`mibalance_teacher`, `mibalance_gate` {m: CCH decision, None for the teacher}, `mibalance_distilled`
{m: distilled this epoch}, `mibalance_mi_teacher_student` and `mibalance_mi_student_label` {m: bits},
`mibalance_val_f1` {m}, `mibalance_val_f1_fused`, `mibalance_mi_fused` {m: I(H_m; z) bits},
`mibalance_mi_share` {m}, `mibalance_weights` {m: stage-2 w_m in force}; `alpha` {m} = the stage-2 weight
of a regulated modality; `reg_frac` {m} = 1 when m was distilled (stage 1) or reweighted (stage 2).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError
from ..models import Output
from .base import EpochState, Method, regulation_active

GATES = ("cch", "always", "never")
_EVAL_BATCH = 1024  # forward batch of the validation pass (no effect on results: no batch statistics)


# --- the pieces, as functions (tested against hand computations) ---------------------------------------

def kd_loss(student: Tensor, teacher: Tensor, labels: Tensor, lam: float, temperature: float) -> Tensor:
    """(1 - lam) CE(student, y) + lam T^2 KL(softmax(teacher / T) || softmax(student / T)), batch means.
    The teacher's logits are detached: distillation never changes the teacher."""
    t = temperature
    ce = F.cross_entropy(student, labels)
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher.detach() / t, dim=1),
                  reduction="batchmean", log_target=True)
    return (1.0 - lam) * ce + lam * t * t * kl


def macro_f1(pred: Tensor, labels: Tensor, num_classes: int) -> float:
    """Macro-averaged F1 over the classes present in labels or predictions (scikit-learn's default)."""
    conf = torch.bincount(labels * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, -1)
    tp = conf.diag().double()
    true, predicted = conf.sum(1).double(), conf.sum(0).double()
    present = (true + predicted) > 0
    f1 = 2 * tp[present] / (true[present] + predicted[present])
    return float(f1.mean()) if present.any() else 0.0


def _whiten(x: Tensor, dims: int | None) -> Tensor:
    """Centred, reduced to the first `dims` principal components (None: all), each with unit variance."""
    x = x.double()
    x = x - x.mean(0)
    if x.shape[1] == 0 or len(x) < 2:
        return x[:, :0]
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    k = int((s > 1e-9 * s[0]).sum()) if s[0] > 0 else 0
    if dims is not None:
        k = min(k, dims)
    return u[:, :k] * math.sqrt(len(x) - 1)


def _gauss_mi_whitened(a: Tensor, b: Tensor, ridge: float) -> float:
    """-1/2 sum log(1 - rho_i^2) (nats) over the ridge-shrunk canonical correlations of whitened a, b."""
    if a.shape[1] == 0 or b.shape[1] == 0:
        return 0.0
    rho = torch.linalg.svdvals(a.T @ b / (len(a) - 1)) / (1.0 + ridge)
    rho = rho.clamp(max=1.0 - 1e-12)
    return float(-0.5 * torch.log1p(-rho * rho).sum())


def gaussian_mi(u: Tensor, v: Tensor, dims: int = 8, ridge: float = 1e-3, nulls: int = 5, seed: int = 0,
                v_is_label: bool = False, num_classes: int | None = None) -> float:
    """Gaussian MI estimate I(u; v) in bits, on held-out samples (rows).

    u, v: (N, d) representations, reduced to `dims` principal components and whitened; with
    `v_is_label`, v is an (N,) integer label vector, used as one-hot (not reduced). The mean MI of
    `nulls` row permutations of v (generator seeded with `seed`) is subtracted; the result can be
    slightly negative when there is no dependence."""
    a = _whiten(u, dims)
    if v_is_label:
        c = num_classes if num_classes is not None else int(v.max()) + 1
        b = _whiten(F.one_hot(v.long(), c), None)
    else:
        b = _whiten(v, dims)
    mi = _gauss_mi_whitened(a, b, ridge)
    if nulls > 0:
        g = torch.Generator().manual_seed(seed)
        mi -= sum(_gauss_mi_whitened(a, b[torch.randperm(len(b), generator=g)], ridge)
                  for _ in range(nulls)) / nulls
    return mi / math.log(2.0)


def cch_gate(h_teacher: Tensor, h_student: Tensor, labels: Tensor, num_classes: int, dims: int = 8,
             ridge: float = 1e-3, nulls: int = 5, seed: int = 0) -> tuple[float, float, bool]:
    """CCH criterion: (I(H_t; H_s), I(H_s; Y), distil = I(H_t; H_s) > I(H_s; Y)), one estimator, bits."""
    mi_ts = gaussian_mi(h_teacher, h_student, dims, ridge, nulls, seed)
    mi_sy = gaussian_mi(h_student, labels, dims, ridge, nulls, seed, v_is_label=True, num_classes=num_classes)
    return mi_ts, mi_sy, mi_ts > mi_sy


def mi_shares(mi: Tensor) -> Tensor:
    """Each modality's share of the (non-negative part of the) MI with the fused representation; 1/M each
    when none is positive."""
    pos = mi.clamp(min=0)
    total = pos.sum()
    return pos / total if total > 0 else torch.full_like(mi, 1.0 / len(mi))


def stage2_weights(f1: Tensor, share: Tensor, gamma: float, beta: float, w_min: float, w_max: float,
                   eps: float) -> Tensor:
    """w_m = clip(M s_m / sum_k s_k, w_min, w_max), s_m = (d_m / mean d)^gamma ((1/M) / D_m)^beta with
    d_m = max(1 - F1_m, eps) the F1 deficit and D_m = max(share_m, eps): a weaker (lower F1) or under-used
    (smaller MI share) modality gets a larger weight; equal modalities get 1 each."""
    f1, share = f1.double(), share.double()
    n = len(f1)
    deficit = (1.0 - f1).clamp(min=eps)
    s = (deficit / deficit.mean()) ** gamma * ((1.0 / n) / share.clamp(min=eps)) ** beta
    return (n * s / s.sum()).clamp(w_min, w_max)


# --- the method ------------------------------------------------------------------------------------------

class MIBalance(Method):
    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        mc = cfg.mibalance
        if cfg.data.n_val <= 0:
            raise ConfigError("method mibalance needs a validation split (teacher choice, CCH gate and stage-2 "
                              "weights are measured on held-out samples): set data.n_val > 0, e.g. "
                              "--set data.n_val=500")
        checks = [
            (mc.gate in GATES, f"mibalance.gate={mc.gate!r} is not one of {', '.join(GATES)}"),
            (0.0 <= mc.distill_lambda <= 1.0, f"mibalance.distill_lambda must be in [0, 1], got {mc.distill_lambda}"),
            (mc.temperature > 0, f"mibalance.temperature must be positive, got {mc.temperature}"),
            (0.0 <= mc.w_min <= mc.w_max, f"mibalance needs 0 <= w_min <= w_max, got {mc.w_min}, {mc.w_max}"),
            (mc.stage1_epochs >= 0 and mc.warmup_epochs >= 0,
             f"mibalance.stage1_epochs and warmup_epochs must be >= 0, got {mc.stage1_epochs}, {mc.warmup_epochs}"),
            (mc.period >= 1, f"mibalance.period must be at least 1, got {mc.period}"),
            (mc.mi_dims >= 1, f"mibalance.mi_dims must be at least 1, got {mc.mi_dims}"),
            (mc.mi_null >= 0 and mc.mi_ridge >= 0, "mibalance.mi_null and mi_ridge must be >= 0"),
            (mc.eps > 0, f"mibalance.eps must be positive, got {mc.eps}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        self.mc = mc
        # decisions that persist across epochs (state_dict)
        self.teacher: str | None = None
        self.gate: dict[str, bool | None] = {m: None for m in self.modalities}
        self.mi_ts: dict[str, float | None] = {m: None for m in self.modalities}
        self.mi_sy: dict[str, float | None] = {m: None for m in self.modalities}
        self.gate_f1: dict[str, float | None] = {m: None for m in self.modalities}
        self.weights: dict[str, float] | None = None
        self.weight_info: dict = {}
        # per epoch
        self.stage = "warmup"
        self.active = {m: True for m in self.modalities}
        self.distilled = {m: False for m in self.modalities}
        self.applied: dict[str, float] | None = None
        self.w_tensor: Tensor | None = None

    # -- helpers -------------------------------------------------------------------------------------------

    def stage_of(self, epoch: int) -> str:
        if epoch < self.mc.stage1_epochs:
            return "warmup" if epoch < self.mc.warmup_epochs else "distill"
        return "multitask"

    @torch.no_grad()
    def _val_pass(self, state: EpochState) -> dict:
        """Features, unimodal and fused logits on the validation split (CPU, float64)."""
        val = state.splits.val
        was = self.model.training
        self.model.eval()
        feats, uni, fused = {m: [] for m in self.modalities}, {m: [] for m in self.modalities}, []
        for batch in val.batches(_EVAL_BATCH):
            out = self.model(batch.to(state.device).inputs)
            fused.append(out.logits)
            for m in self.modalities:
                feats[m].append(out.features[m])
                uni[m].append(out.unimodal[m])
        self.model.train(was)
        cpu = lambda xs: torch.cat(xs).double().cpu()  # noqa: E731
        return {"features": {m: cpu(f) for m, f in feats.items()}, "unimodal": {m: cpu(u) for m, u in uni.items()},
                "fused": cpu(fused), "labels": val.labels.cpu(),
                "num_classes": fused[0].shape[1]}

    def _mi_kwargs(self) -> dict:
        return dict(dims=self.mc.mi_dims, ridge=self.mc.mi_ridge, nulls=self.mc.mi_null, seed=self.mc.mi_seed)

    def _f1(self, ev: dict) -> dict[str, float]:
        return {m: macro_f1(ev["unimodal"][m].argmax(1), ev["labels"], ev["num_classes"]) for m in self.modalities}

    def _decide_gate(self, ev: dict) -> None:
        f1 = self._f1(ev)
        self.gate_f1 = f1
        self.teacher = max(self.modalities, key=lambda m: f1[m])  # first of equals on ties
        h, y, c = ev["features"], ev["labels"], ev["num_classes"]
        for s in self.modalities:
            if s == self.teacher:
                self.gate[s] = self.mi_ts[s] = self.mi_sy[s] = None
                continue
            mi_ts, mi_sy, ok = cch_gate(h[self.teacher], h[s], y, c, **self._mi_kwargs())
            self.mi_ts[s], self.mi_sy[s] = mi_ts, mi_sy
            self.gate[s] = {"cch": ok, "always": True, "never": False}[self.mc.gate]

    def _refresh_weights(self, ev: dict) -> None:
        mc = self.mc
        f1 = self._f1(ev)
        mi = {m: gaussian_mi(ev["features"][m], ev["fused"], **self._mi_kwargs()) for m in self.modalities}
        share = mi_shares(torch.tensor([mi[m] for m in self.modalities], dtype=torch.float64))
        w = stage2_weights(torch.tensor([f1[m] for m in self.modalities], dtype=torch.float64), share,
                           mc.gamma, mc.beta, mc.w_min, mc.w_max, mc.eps)
        self.weights = dict(zip(self.modalities, w.tolist()))
        fused_f1 = macro_f1(ev["fused"].argmax(1), ev["labels"], ev["num_classes"])
        self.weight_info = {"val_f1": f1, "val_f1_fused": fused_f1, "mi_fused": mi,
                            "mi_share": dict(zip(self.modalities, share.tolist()))}

    # -- hooks ---------------------------------------------------------------------------------------------

    def on_epoch_start(self, state: EpochState) -> None:
        if state.splits is None or state.splits.val is None:
            raise ConfigError("method mibalance needs a validation split: set data.n_val > 0")
        mc, wc = self.mc, self.cfg.window
        self.active = {m: regulation_active(self.cfg.method.regulate, state.window[m][0], state.epoch,
                                            wc.min_epoch) for m in self.modalities}
        self.stage = self.stage_of(state.epoch)
        self.distilled = {m: False for m in self.modalities}
        self.applied = None
        if self.stage == "distill":
            if self.teacher is None or mc.regate:
                self._decide_gate(self._val_pass(state))
            self.distilled = {m: bool(self.gate[m]) and self.active[m] for m in self.modalities}
        elif self.stage == "multitask":
            if self.weights is None or (state.epoch - mc.stage1_epochs) % mc.period == 0:
                self._refresh_weights(self._val_pass(state))
            self.applied = {m: self.weights[m] if self.active[m] else mc.uniform_weight for m in self.modalities}
            first = next(self.model.parameters())
            self.w_tensor = torch.tensor([self.applied[m] for m in self.modalities], device=first.device,
                                         dtype=first.dtype)

    def loss(self, out: Output, labels: Tensor) -> Tensor:
        mc = self.mc
        if self.stage == "multitask":
            ce = torch.stack([F.cross_entropy(out.unimodal[m], labels) for m in self.modalities])
            return mc.fused_weight * F.cross_entropy(out.logits, labels) + (self.w_tensor * ce).sum()
        loss = mc.stage1_fused_weight * F.cross_entropy(out.logits, labels)
        teacher = out.unimodal[self.teacher] if self.stage == "distill" else None
        for m in self.modalities:
            if self.stage == "distill" and m == self.teacher:
                loss = loss + mc.teacher_weight * F.cross_entropy(out.unimodal[m], labels)
            elif self.distilled[m]:
                loss = loss + kd_loss(out.unimodal[m], teacher, labels, mc.distill_lambda, mc.temperature)
            else:
                loss = loss + F.cross_entropy(out.unimodal[m], labels)
        return loss

    def on_epoch_end(self, state: EpochState) -> dict:
        mods = self.modalities
        none = {m: None for m in mods}
        distill, multi = self.stage == "distill", self.stage == "multitask"
        info = self.weight_info if multi else {}
        regulated = {m: (self.distilled[m] if distill else multi and self.active[m]) for m in mods}
        return {
            "alpha": {m: (self.applied[m] if multi and self.active[m] else None) for m in mods},
            "reg_frac": {m: float(regulated[m]) for m in mods},
            "regulated_frac": float(any(regulated.values())),
            "mibalance_stage": self.stage,
            "mibalance_teacher": self.teacher if distill else None,
            "mibalance_gate": dict(self.gate) if distill else none,
            "mibalance_distilled": dict(self.distilled),
            "mibalance_mi_teacher_student": dict(self.mi_ts) if distill else none,
            "mibalance_mi_student_label": dict(self.mi_sy) if distill else none,
            "mibalance_val_f1": dict(self.gate_f1) if distill else dict(info.get("val_f1", none)),
            "mibalance_val_f1_fused": info.get("val_f1_fused"),
            "mibalance_mi_fused": dict(info.get("mi_fused", none)),
            "mibalance_mi_share": dict(info.get("mi_share", none)),
            "mibalance_weights": dict(self.applied) if multi else none,
        }

    def state_dict(self) -> dict:
        return {"teacher": self.teacher, "gate": dict(self.gate), "mi_ts": dict(self.mi_ts),
                "mi_sy": dict(self.mi_sy), "gate_f1": dict(self.gate_f1),
                "weights": None if self.weights is None else dict(self.weights),
                "weight_info": {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.weight_info.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.teacher = state["teacher"]
        self.gate, self.mi_ts, self.mi_sy = dict(state["gate"]), dict(state["mi_ts"]), dict(state["mi_sy"])
        self.gate_f1 = dict(state["gate_f1"])
        self.weights = None if state["weights"] is None else dict(state["weights"])
        self.weight_info = dict(state["weight_info"])
