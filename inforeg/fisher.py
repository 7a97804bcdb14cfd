"""Information amount: the trace of the empirical Fisher information, Tr F = E_n ||grad_w loss_n||^2 (Eq. 7).

`FisherMeter` computes every sample's squared gradient norm per parameter group (each encoder, the whole
model) from the one ordinary backward pass of a training step: hooks keep each layer's input and output
gradient, and the per-sample gradient of every layer is a function of those two.
* Linear: the per-sample weight gradient is the outer product g_n a_n^T, whose squared norm is
  ||g_n||^2 ||a_n||^2 (with sequences or repeated use: sum_pq (g_p.g_q)(a_p.a_q)).
* Conv1d / Conv2d: with U_n the unfolded input (C_in k k x L positions, `F.unfold`: stride, padding,
  dilation, groups handled) and G_n the output gradient (C_out x L), the weight gradient is G_n U_n^T. Per
  layer the cheaper of two exact forms is taken (`_conv_sq_norm`): materialise G_n U_n^T, or the Gram form
  sum((U_n^T U_n) * (G_n^T G_n)) over L x L position pairs.
* BatchNorm: the weight and bias gradients are sum over positions of g * x_hat and of g.
No per-sample loop, no second backward. Two slow references check it: `per_sample_sq_norms_loop` and
`per_sample_sq_norms_vmap` (torch.func).

What "sample n's gradient" means. Without batch coupling it is grad_w loss_n, the paper's definition, and the
meter is exact. BatchNorm in training mode couples the samples: a sample's output depends on the batch
statistics, so every sample's loss depends on every sample's input. The meter then measures sample n's
*share* of the batch gradient: give each sample its own copy w_n of the parameters (all equal to w), then
h_n = B dL/dw_n, with L the batch-mean loss. The shares average to the batch gradient exactly,
(1/B) sum_n h_n = dL/dw, and equal grad_w loss_n whenever nothing couples the samples (no BatchNorm in
training mode), so the definition extends the paper's. They are what the hooks see: layer by layer, the
batch weight gradient is a sum over samples of terms built from that sample's input and its (true, batch-
coupled) output gradient. The references compute the same quantity differently, with `shares=True`: B
full-batch backward passes (`per_sample_sq_norms_loop`) or vmap over n (`per_sample_sq_norms_vmap`), each
letting only sample n's rows reach the parameters.
The other natural definition, the gradient of loss_n with the batch statistics held constant, is *not* what
one backward gives (BatchNorm's true backward subtracts batch means from the gradients flowing upstream);
it would need a second backward through a statistics-frozen network. The official code measures neither:
it uses a mini-batch proxy, `OfficialTrace`.

`OfficialTrace` is the official code's proxy: per layer, the epoch sum of squared *mini-batch* gradients of
Conv/Linear weights, averaged over the layer's elements, summed over layers.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
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


# Elements the conv rule's intermediates (unfolded input, Gram matrices or per-sample gradients) may hold at
# once: the batch is processed in chunks of samples under this bound (256 MB in float32).
_CHUNK_ELEMENTS = 2 ** 26
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _rows_per_sample(t: Tensor, batch: int, layer: nn.Module) -> int:
    """A layer may see k rows per sample (frames of a clip flattened into the batch, sample-major)."""
    if t.shape[0] % batch:
        raise ValueError(f"FisherMeter: {type(layer).__name__} saw {t.shape[0]} rows for a batch of {batch}; "
                         "a layer's input must hold a whole number of consecutive rows per sample")
    return t.shape[0] // batch


def _conv_as_2d(layer: nn.Module, x: Tensor, g: Tensor):
    """Input, output gradient and unfold arguments of a Conv1d / Conv2d call, in 2-D form."""
    k, s, d = layer.kernel_size, layer.stride, layer.dilation
    explicit = layer.padding_mode != "zeros" or isinstance(layer.padding, str)
    if explicit:  # 'same' padding or non-zero padding modes: pad exactly as the layer's forward does
        x = F.pad(x, layer._reversed_padding_repeated_twice,
                  mode="constant" if layer.padding_mode == "zeros" else layer.padding_mode)
    p = (0,) * len(k) if explicit else layer.padding
    if x.ndim == 3:  # Conv1d: a 2-D convolution over a height of one
        x, g, k, s, d, p = x.unsqueeze(2), g.unsqueeze(2), (1, *k), (1, *s), (1, *d), (0, *p)
    return x, g, dict(kernel_size=k, stride=s, dilation=d, padding=p)


def _gram_is_cheaper(positions: int, k: int, c: int) -> bool:
    """Gram form (L^2 (K + C + 1) operations) rather than materialised gradients (L K C): see `_conv_sq_norm`."""
    return positions * (k + c + 1) < k * c


def _conv_sq_norm(layer: nn.Module, uses: list[tuple[tuple, Tensor]], batch: int) -> Tensor:
    """Exact per-sample squared norm of a Conv1d/Conv2d's weight (and bias) gradient.

    Per group of the convolution, with K = C_in/groups * prod(kernel) rows of U_n, C = C_out/groups rows of
    G_n and L positions per sample (all calls and frames of the step together, the per-sample gradient being
    their sum): materialising G_n U_n^T costs about L K C multiply-adds per sample and K C memory; the Gram
    form sum((U_n^T U_n) * (G_n^T G_n)) costs about L^2 (K + C + 1) and L^2 memory. The Gram form is taken
    when it needs fewer operations, L (K + C + 1) < K C: late layers (few positions, many channels), while
    early layers (many positions) materialise. Materialised gradients come from the convolution's own
    weight-gradient kernel with every row of the batch as its own group (no unfolded copy of the input).
    Samples go in chunks so that intermediates stay under `_CHUNK_ELEMENTS`.
    """
    n_groups = layer.groups
    calls = []
    for args, grad in uses:
        x, g, unfold_args = _conv_as_2d(layer, args[0], grad)
        calls.append((x, g, unfold_args, _rows_per_sample(x, batch, layer)))
    c_out = layer.out_channels
    K = layer.in_channels // n_groups * layer.weight[0, 0].numel()
    C = c_out // n_groups
    L = sum(k * g[0, 0].numel() for _, g, _, k in calls)
    gram = _gram_is_cheaper(L, K, C)
    if gram:
        per_sample = K * n_groups * L + C * n_groups * L + 2 * n_groups * L * L
    else:
        per_sample = sum(k for *_, k in calls) * c_out * K + C * n_groups * L
    chunk = max(1, _CHUNK_ELEMENTS // per_sample)
    out = []
    for lo in range(0, batch, chunk):
        n = min(chunk, batch - lo)
        parts = [(x[lo * k:(lo + n) * k], g[lo * k:(lo + n) * k], a, k) for x, g, a, k in calls]
        sq = _conv_gram(parts, n, n_groups, K, C) if gram else _conv_materialised(parts, n, layer)
        if layer.bias is not None:
            gb = sum(g.reshape(n, k, c_out, -1).sum((1, 3)) for _, g, _, k in parts)
            sq = sq + gb.square().sum(1)
        out.append(sq)
    return torch.cat(out) if len(out) > 1 else out[0]


def _conv_gram(parts, n: int, n_groups: int, K: int, C: int) -> Tensor:
    """sum over groups of sum((U_n^T U_n) * (G_n^T G_n)), positions of all calls and frames together."""
    us, gs = [], []
    for x, g, unfold_args, k in parts:
        u = F.unfold(x, **unfold_args)  # (n k, C_in kh kw, positions)
        us.append(u.view(n, k, n_groups, K, -1).permute(0, 2, 3, 1, 4).reshape(n, n_groups, K, -1))
        gs.append(g.reshape(n, k, n_groups, C, -1).permute(0, 2, 3, 1, 4).reshape(n, n_groups, C, -1))
    u = torch.cat(us, -1) if len(us) > 1 else us[0]  # (n, groups, K, L)
    g = torch.cat(gs, -1) if len(gs) > 1 else gs[0]  # (n, groups, C, L)
    return (u.transpose(2, 3) @ u).mul_(g.transpose(2, 3) @ g).sum((1, 2, 3))


def _conv_materialised(parts, n: int, layer: nn.Module) -> Tensor:
    """||sum over calls and frames of G U^T||^2 per sample, each row's gradient by a grouped weight-gradient."""
    total = 0
    for x, g, a, k in parts:
        rows = x.shape[0]
        w = torch.nn.grad.conv2d_weight(
            x.reshape(1, -1, *x.shape[2:]), (rows * layer.out_channels, layer.in_channels // layer.groups,
                                             *a["kernel_size"]),
            g.reshape(1, -1, *g.shape[2:]), stride=a["stride"], padding=a["padding"], dilation=a["dilation"],
            groups=rows * layer.groups)
        total = total + w.view(n, k, -1).sum(1)
    return total.square().sum(1)


def _batchnorm_sq_norm(layer: nn.Module, uses: list[tuple[tuple, Tensor]], batch: int) -> Tensor:
    """Exact per-sample squared norm of a BatchNorm's affine gradients: weight sum g * x_hat, bias sum g.

    x_hat = (x - mean) / sqrt(var + eps) with the batch statistics of the call (training mode, or no running
    statistics) or the running ones (evaluation mode), exactly as the forward normalised; per sample and
    channel, sum g * x_hat = (sum g x - mean sum g) / sqrt(var + eps), so x_hat is never formed. In training
    mode this is the sample's share of the batch gradient (module docstring).
    """
    w = b = 0
    for args, g in uses:
        x = args[0]
        k = _rows_per_sample(x, batch, layer)
        g = g.reshape(batch * k, g.shape[1], -1)
        x = x.reshape(g.shape)
        gx = torch.linalg.vecdot(g, x)  # (rows, channels): sum over positions of g x
        gs = g.sum(2)
        if layer.training or layer.running_mean is None:
            mean, var = _batch_stats(x)
        else:
            mean, var = layer.running_mean, layer.running_var
        w = w + ((gx - mean * gs) * torch.rsqrt(var + layer.eps)).view(batch, k, -1).sum(1)
        b = b + gs.view(batch, k, -1).sum(1)
    return w.square().sum(1) + b.square().sum(1)


def _batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of x (rows, channels, positions), as BatchNorm's forward uses.

    From per-row sums (two cheap reductions) when the mean is small next to the spread, where E[x^2] - mean^2
    loses at most about a decimal digit; otherwise by the two-pass formula."""
    count = x.shape[0] * x.shape[2]
    mean = x.sum((0, 2)) / count
    var = torch.linalg.vecdot(x, x).sum(0) / count - mean.square()
    if (mean.square() > 8 * var).any():
        var = (x - mean[:, None]).square().mean((0, 2))
    return mean, var


_RULES = {nn.Conv1d: _conv_sq_norm, nn.Conv2d: _conv_sq_norm} | {bn: _batchnorm_sq_norm for bn in _BATCHNORMS}


def _rule(layer: nn.Module):
    """The exact per-sample rule of a layer (None: none; Linear and layers with their own method aside)."""
    return next((r for kind, r in _RULES.items() if type(layer) is kind), None)


class FisherMeter:
    """Per-sample squared gradient norms per group, from the hooks of one backward pass.

    groups: name -> module (e.g. each encoder, and the whole model as "all"). Every parameter-owning
    layer inside them needs an exact rule (Linear, Conv1d, Conv2d, BatchNorm, SplitHead); anything else
    raises at construction. The loss must be a mean over the batch of per-sample terms. With BatchNorm in
    training mode the result is each sample's share of the batch gradient (module docstring); otherwise it is
    exactly ||grad loss_n||^2. A layer may see k consecutive rows per sample (clip frames through a 2-D net).
    """

    def __init__(self, groups: dict[str, nn.Module]):
        self.groups = groups
        self._layers: dict[nn.Module, list[str]] = {}
        for gname, module in groups.items():
            for lname, layer in _leaves(module):
                if (not isinstance(layer, nn.Linear) and not hasattr(layer, "per_sample_sq_norm")
                        and _rule(layer) is None):
                    raise TypeError(f"FisherMeter has no exact per-sample rule for {type(layer).__name__} "
                                    f"({gname}.{lname}); supported: Linear, Conv1d, Conv2d, BatchNorm1d/2d/3d, "
                                    "SplitHead")
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
            elif _rule(layer) is not None:
                sq = _rule(layer)(layer, done, batch_size)
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


def _coupling_layers(model: nn.Module) -> str:
    """BatchNorm layers that use batch statistics ('' if none): they make a sample's loss depend on the others."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and (m.training or m.running_mean is None)]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


@contextlib.contextmanager
def _buffers_kept(model: nn.Module):
    """The references run extra forward passes: leave BatchNorm's running statistics as they were."""
    saved = {k: b.clone() for k, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(saved[k])


def _only_sample(n, batch: int):
    """Forward hook: the output keeps its values, but only sample n's rows depend on the layer's parameters.
    n is an int (the loop) or a 0-d tensor (batched under torch.func.vmap)."""
    busy = []

    def hook(layer: nn.Module, args: tuple, output):
        if busy:  # the detached recomputation below calls the layer again
            return None
        busy.append(True)
        try:
            frozen = {k: p.detach() for k, p in layer.named_parameters(recurse=False)}
            dead = torch.func.functional_call(layer, frozen, args)
        finally:
            busy.pop()
        k = _rows_per_sample(output, batch, layer)
        live = torch.arange(output.shape[0], device=output.device) // k == n
        return torch.where(live.view(-1, *[1] * (output.ndim - 1)), output, dead)

    return hook


@contextlib.contextmanager
def _sample_n_only(model: nn.Module, n, batch: int):
    handles = [m.register_forward_hook(_only_sample(n, batch)) for _, m in _leaves(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def per_sample_sq_norms_loop(model: nn.Module, loss_fn: LossFn, inputs: dict[str, Tensor], labels: Tensor,
                             groups: dict[str, nn.Module], shares: bool = False) -> dict[str, Tensor]:
    """Reference: one backward per sample. Slow; for tests and benchmarks.

    shares=False: sample n alone through the model, ||grad loss_n||^2 (refused when BatchNorm uses batch
    statistics: one sample's statistics are not the batch's). shares=True: the whole batch B times, the n-th
    time with only sample n's rows of every parameter-owning layer depending on the parameters, giving
    ||B dL/dw_n||^2, each sample's share of the batch gradient (module docstring); without coupling layers
    both are equal.
    """
    coupled = _coupling_layers(model)
    if coupled and not shares:
        raise ValueError(f"per_sample_sq_norms_loop: BatchNorm layers use batch statistics ({coupled}):"
                         " a single sample's loss differs from its loss in the batch; pass shares=True")
    names = _group_names(model, groups)
    params = dict(model.named_parameters())
    rows = []
    batch = len(labels)
    with _buffers_kept(model):
        for n in range(batch):
            model.zero_grad(set_to_none=True)
            if shares:
                with _sample_n_only(model, n, batch):
                    out = model(inputs)
                (loss_fn(out, labels) * batch).backward()
            else:
                out = model({m: x[n:n + 1] for m, x in inputs.items()})
                loss_fn(out, labels[n:n + 1]).backward()
            grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in params.items()}
            rows.append(_group_sq(grads, names))
    model.zero_grad(set_to_none=True)
    return {g: torch.stack([r[g] for r in rows]) for g in groups}


def per_sample_sq_norms_vmap(model: nn.Module, loss_fn: LossFn, inputs: dict[str, Tensor], labels: Tensor,
                             groups: dict[str, nn.Module], shares: bool = False) -> dict[str, Tensor]:
    """Reference: per-sample gradients with torch.func (vmap over grad).

    shares=False: vmap over single samples (refused when BatchNorm uses batch statistics). shares=True: vmap
    over n of the gradient of the whole batch's loss in which only sample n's rows reach the parameters
    (as `per_sample_sq_norms_loop(shares=True)`; BatchNorm skips its running-statistics update meanwhile).
    """
    from torch.func import functional_call, grad, vmap

    coupled = _coupling_layers(model)
    if coupled and not shares:
        raise ValueError(f"per_sample_sq_norms_vmap: BatchNorm layers use batch statistics ({coupled}); "
                         "vmap over single samples cannot reproduce them: pass shares=True")
    names = _group_names(model, groups)
    params = {k: p.detach() for k, p in model.named_parameters()}
    batch = len(labels)

    def one(p, x, y):
        out = functional_call(model, p, ({m: v[None] for m, v in x.items()},))
        return loss_fn(out, y[None])

    def share(p, n):
        with _sample_n_only(model, n, batch):
            out = functional_call(model, p, (inputs,))
        return loss_fn(out, labels) * batch

    if not shares:
        grads = vmap(grad(one), in_dims=(None, 0, 0))(params, inputs, labels)
        return _group_sq_batched(grads, names)
    # in-place running-statistics updates cannot take vmapped values: batch statistics without tracking
    tracking = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and m.training and m.track_running_stats]
    for m in tracking:
        m.track_running_stats = False
    try:
        grads = vmap(grad(share), in_dims=(None, 0))(params, torch.arange(batch, device=labels.device))
    finally:
        for m in tracking:
            m.track_running_stats = True
    return _group_sq_batched(grads, names)


def _group_sq_batched(grads: dict[str, Tensor], groups: dict[str, list[str]]) -> dict[str, Tensor]:
    return {g: sum(grads[n].flatten(1).pow(2).sum(1) for n in names) for g, names in groups.items()}
