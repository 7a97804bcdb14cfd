"""Information amount: the trace of the empirical Fisher information, Tr F = E_n ||grad_w loss_n||^2 (Eq. 7).

`FisherMeter` computes every sample's squared gradient norm per parameter group (each encoder, the whole
model) from the one ordinary backward pass of a training step: hooks keep each layer's input and output
gradient, and for a Linear layer the per-sample weight gradient is the outer product g_n a_n^T, whose
squared norm is ||g_n||^2 ||a_n||^2 (with sequences or repeated use: sum_pq (g_p.g_q)(a_p.a_q)).
No per-sample loop, no second backward. Two slow references check it: `per_sample_sq_norms_loop` and
`per_sample_sq_norms_vmap` (torch.func).

`OfficialTrace` is the official code's proxy: per layer, the epoch sum of squared *mini-batch* gradients of
Conv/Linear weights, averaged over the layer's elements, summed over layers.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .models.fusion import SplitHead

LossFn = Callable[[object, Tensor], Tensor]  # (model output, labels) -> mean loss over the batch


def _leaves(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Sub-modules that own parameters directly."""
    return [(n, m) for n, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]


def _linear_sq_norm(uses: list[tuple[tuple, Tensor]], has_bias: bool) -> Tensor:
    if len(uses) == 1 and uses[0][1].ndim == 2:  # the common case: one call on (batch, features)
        (a,), g = uses[0]
        gg = (g * g).sum(1)
        return gg * ((a * a).sum(1) + 1) if has_bias else gg * (a * a).sum(1)
    a = torch.cat([args[0].reshape(args[0].shape[0], -1, args[0].shape[-1]) for args, _ in uses], dim=1)
    g = torch.cat([grad.reshape(grad.shape[0], -1, grad.shape[-1]) for _, grad in uses], dim=1)
    sq = (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))
    if has_bias:
        gb = g.sum(1)
        sq = sq + (gb * gb).sum(1)
    return sq


class FisherMeter:
    """Per-sample squared gradient norms per group, from the hooks of one backward pass.

    groups: name -> module (e.g. each encoder, and the whole model as "all"). Every parameter-owning
    layer inside them needs an exact rule (Linear, SplitHead); anything else raises at construction.
    The loss must be a mean over the batch of per-sample terms (no batch statistics such as BatchNorm).
    """

    def __init__(self, groups: dict[str, nn.Module]):
        self.groups = groups
        self._layers: dict[nn.Module, list[str]] = {}
        for gname, module in groups.items():
            for lname, layer in _leaves(module):
                if not isinstance(layer, nn.Linear) and not hasattr(layer, "per_sample_sq_norm"):
                    raise TypeError(f"FisherMeter has no exact per-sample rule for {type(layer).__name__} "
                                    f"({gname}.{lname}); supported: Linear, SplitHead")
                self._layers.setdefault(layer, []).append(gname)
        self._uses: dict[nn.Module, list[list]] = {layer: [] for layer in self._layers}
        self._handles = [layer.register_forward_hook(self._forward_hook) for layer in self._layers]
        self.active = False

    def _forward_hook(self, layer: nn.Module, args: tuple, output: Tensor) -> None:
        if not self.active or not torch.is_grad_enabled() or not output.requires_grad:
            return
        record = [tuple(_detach(a) for a in args), None]
        self._uses[layer].append(record)

        def keep(grad: Tensor) -> None:
            record[1] = grad.detach()

        output.register_hook(keep)

    def start(self) -> None:
        """Call before the forward pass of a training step."""
        for uses in self._uses.values():
            uses.clear()
        self.active = True

    def collect(self, batch_size: int) -> dict[str, Tensor]:
        """After backward: each sample's ||grad loss_n||^2 per group, shape (batch,)."""
        self.active = False
        out: dict[str, Tensor] = {}
        for layer, uses in self._uses.items():
            done = [(args, grad) for args, grad in uses if grad is not None]
            uses.clear()
            if not done:
                continue
            if isinstance(layer, nn.Linear):
                sq = _linear_sq_norm(done, layer.bias is not None)
            else:
                sq = layer.per_sample_sq_norm(done)
            for gname in self._layers[layer]:
                out[gname] = out[gname] + sq if gname in out else sq
        # The hooks see the gradient of the batch mean, (1/B) dloss_n: scale back to per-sample gradients.
        scale = float(batch_size) ** 2
        return {g: out[g] * scale if g in out else None for g in self.groups}

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _detach(x):
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        return type(x)(_detach(v) for v in x)
    return x


class EpochMean:
    """Running sums on the device (no host sync per step); `.value()` syncs once at the end of the epoch."""

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor | float] = {n: 0.0 for n in self.names}
        self.count = 0

    def add(self, values: dict[str, Tensor | None], count: int) -> None:
        """Add `count` items: each value is their tensor (summed) or None (nothing to add)."""
        for n, v in values.items():
            if v is not None:
                self.sums[n] = self.sums[n] + v.sum()
        self.count += count

    def value(self) -> dict[str, float]:
        return {n: float(s) / max(self.count, 1) for n, s in self.sums.items()}


def weight_params(module: nn.Module) -> list[nn.Parameter]:
    """Weights of the Linear and Conv layers (what the official proxy watches)."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, SplitHead)
    return [m.weight for m in module.modules() if isinstance(m, kinds)]


class OfficialTrace:
    """The official code's "Tr F": sum over layers of mean(g^2) per layer, summed over the epoch's batches."""

    def __init__(self, groups: dict[str, nn.Module]):
        self.weights = {g: weight_params(m) for g, m in groups.items()}
        self._numel: dict[str, Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor | float] = {g: 0.0 for g in self.weights}

    def step(self) -> None:
        """Call after every gradient change of the step (the official code reads them after the prox term)."""
        for g, ws in self.weights.items():
            if any(w.grad is None for w in ws):  # a layer outside the loss: skip it this step
                ws = [w for w in ws if w.grad is not None]
                numel = torch.tensor([w.numel() for w in ws], device=ws[0].device) if ws else None
            else:
                if g not in self._numel:
                    self._numel[g] = torch.tensor([w.numel() for w in ws], device=ws[0].device)
                numel = self._numel[g]
            if ws:
                norms = torch.stack(torch._foreach_norm([w.grad for w in ws]))
                self.sums[g] = self.sums[g] + (norms.square() / numel).sum()

    def value(self) -> dict[str, float]:
        return {g: float(s) for g, s in self.sums.items()}


def _group_sq(named_grads: dict[str, Tensor], groups: dict[str, list[str]]) -> dict[str, Tensor]:
    return {g: sum(named_grads[n].pow(2).sum() for n in names) for g, names in groups.items()}


def _group_names(model: nn.Module, groups: dict[str, nn.Module]) -> dict[str, list[str]]:
    ids = {id(p): n for n, p in model.named_parameters()}
    return {g: [ids[id(p)] for p in m.parameters()] for g, m in groups.items()}


def per_sample_sq_norms_loop(model: nn.Module, loss_fn: LossFn, inputs: dict[str, Tensor], labels: Tensor,
                             groups: dict[str, nn.Module]) -> dict[str, Tensor]:
    """Reference: one backward per sample. Slow; for tests and benchmarks."""
    names = _group_names(model, groups)
    params = dict(model.named_parameters())
    rows = []
    for n in range(len(labels)):
        model.zero_grad(set_to_none=True)
        out = model({m: x[n:n + 1] for m, x in inputs.items()})
        loss_fn(out, labels[n:n + 1]).backward()
        grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in params.items()}
        rows.append(_group_sq(grads, names))
    model.zero_grad(set_to_none=True)
    return {g: torch.stack([r[g] for r in rows]) for g in groups}


def per_sample_sq_norms_vmap(model: nn.Module, loss_fn: LossFn, inputs: dict[str, Tensor], labels: Tensor,
                             groups: dict[str, nn.Module]) -> dict[str, Tensor]:
    """Reference: per-sample gradients with torch.func (vmap over grad)."""
    from torch.func import functional_call, grad, vmap

    names = _group_names(model, groups)
    params = {k: p.detach() for k, p in model.named_parameters()}

    def one(p, x, y):
        out = functional_call(model, p, ({m: v[None] for m, v in x.items()},))
        return loss_fn(out, y[None])

    grads = vmap(grad(one), in_dims=(None, 0, 0))(params, inputs, labels)
    return _group_sq_batched(grads, names)


def _group_sq_batched(grads: dict[str, Tensor], groups: dict[str, list[str]]) -> dict[str, Tensor]:
    return {g: sum(grads[n].flatten(1).pow(2).sum(1) for n in names) for g, names in groups.items()}
