"""Late fusions for M modalities. Each returns the fused logits and one unimodal logit tensor per modality.

Unimodal logits f_m, as the paper defines them: concat splits the head (f_m = h_m W_m^T + b/M, so the
f_m add up to the fused logits); sum uses each branch (they add up too); FiLM and gated fusion zero the
other modalities' features and run the fused head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SplitHead(nn.Module):
    """The concat head, computing fused and split-head unimodal logits in one call.

    Returns a (batch, 1 + M, classes) tensor: index 0 the fused logits, index 1 + m those of modality m.
    Its parameters are initialised exactly as `nn.Linear(M * dim, classes)`.
    """

    def __init__(self, dims: list[int], num_classes: int):
        super().__init__()
        self.dims = list(dims)
        self.in_features = sum(dims)
        self.weight = nn.Parameter(torch.empty(num_classes, self.in_features))
        self.bias = nn.Parameter(torch.empty(num_classes))
        nn.Linear.reset_parameters(self)

    def forward(self, feats: list[Tensor]) -> Tensor:
        fused = F.linear(torch.cat(feats, dim=1), self.weight, self.bias)
        parts = self.weight.split(self.dims, dim=1)
        share = self.bias / len(feats)
        uni = [F.linear(h, w, share) for h, w in zip(feats, parts)]
        return torch.stack([fused] + uni, dim=1)

    @staticmethod
    def per_sample_sq_norm(uses: list[tuple[tuple, Tensor]]) -> Tensor:
        """Squared norm of each sample's gradient w.r.t. weight and bias, from the calls of one step.

        In one call, block m of the weight receives (g_fused + g_m) h_m^T and the bias g_fused + sum_m g_m / M;
        over several calls (AGM-style extra passes) the per-sample gradients add up, so the squared norm of
        block m is sum_uv (G_u . G_v)(h_u . h_v) with G_u = g_fused,u + g_m,u.
        """
        n_mod = len(uses[0][0][0])
        grads = torch.stack([g for _, g in uses], dim=1)  # (batch, uses, 1 + M, classes)
        g0, gm = grads[:, :, 0], grads[:, :, 1:]
        w = 0
        for m in range(n_mod):
            h = torch.stack([args[0][m] for args, _ in uses], dim=1)  # (batch, uses, dim)
            gsum = g0 + gm[:, :, m]
            if len(uses) == 1:
                w = w + (gsum[:, 0] ** 2).sum(1) * (h[:, 0] ** 2).sum(1)
            else:
                w = w + (torch.bmm(gsum, gsum.transpose(1, 2)) * torch.bmm(h, h.transpose(1, 2))).sum((1, 2))
        b = (g0 + gm.sum(2) / n_mod).sum(1)
        return w + (b ** 2).sum(1)


class ConcatFusion(nn.Module):
    def __init__(self, dims: list[int], num_classes: int):
        super().__init__()
        self.head = SplitHead(dims, num_classes)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        out = self.head(feats)
        return out[:, 0], list(out[:, 1:].unbind(1))


class SumFusion(nn.Module):
    def __init__(self, dims: list[int], num_classes: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(d, num_classes) for d in dims)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        uni = [head(h) for head, h in zip(self.heads, feats)]
        return torch.stack(uni).sum(0), uni


class _ZeroOthers(nn.Module):
    """Fusions whose unimodal logits come from zeroing the other modalities' features."""

    def fuse(self, feats: list[Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        uni = []
        for m in range(len(feats)):
            alone = [h if k == m else torch.zeros_like(h) for k, h in enumerate(feats)]
            uni.append(self.fuse(alone))
        return self.fuse(feats), uni


class FiLMFusion(_ZeroOthers):
    """The first modality's features are scaled and shifted by each other modality in turn:
    h <- gamma_m(h_m) * h + beta_m(h_m), then a linear head."""

    def __init__(self, dims: list[int], num_classes: int):
        super().__init__()
        if len(set(dims)) != 1:
            raise ValueError(f"FiLM fusion needs equal feature sizes, got {dims}")
        d = dims[0]
        self.films = nn.ModuleList(nn.Linear(d, 2 * d) for _ in dims[1:])
        self.head = nn.Linear(d, num_classes)

    def fuse(self, feats: list[Tensor]) -> Tensor:
        h = feats[0]
        for film, cond in zip(self.films, feats[1:]):
            gamma, beta = film(cond).chunk(2, dim=1)
            h = gamma * h + beta
        return self.head(h)


class GatedFusion(_ZeroOthers):
    """Each modality is projected (z_m) and gated elementwise by a sigmoid of all features:
    h = sum_m sigmoid(G [h_1..h_M])_m * z_m, then a linear head."""

    def __init__(self, dims: list[int], num_classes: int):
        super().__init__()
        if len(set(dims)) != 1:
            raise ValueError(f"gated fusion needs equal feature sizes, got {dims}")
        d = dims[0]
        self.proj = nn.ModuleList(nn.Linear(d, d) for _ in dims)
        self.gate = nn.Linear(sum(dims), sum(dims))
        self.head = nn.Linear(d, num_classes)

    def fuse(self, feats: list[Tensor]) -> Tensor:
        gates = torch.sigmoid(self.gate(torch.cat(feats, dim=1))).chunk(len(feats), dim=1)
        h = sum(g * p(x) for g, p, x in zip(gates, self.proj, feats))
        return self.head(h)


FUSIONS = {"concat": ConcatFusion, "sum": SumFusion, "film": FiLMFusion, "gated": GatedFusion}
