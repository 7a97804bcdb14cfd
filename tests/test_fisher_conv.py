"""Exact per-sample Tr F for convolutions and BatchNorm (inforeg.fisher): the one-backward meter against the
per-sample loop, both conv forms (materialised and Gram), BatchNorm under the share definition, and a small
ResNet-18 pair built by the package."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inforeg import fisher
from inforeg.config import ModelConfig
from inforeg.fisher import FisherMeter, per_sample_sq_norms_loop, per_sample_sq_norms_vmap
from inforeg.models import build_model
from test_fisher import _meter_norms as _meter  # one backward with the meter attached

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _ce(out, y):
    return F.cross_entropy(out, y)


def _assert_rel(got: dict, ref: dict, rtol: float) -> None:
    for g in ref:
        assert got[g].shape == ref[g].shape
        assert (ref[g] > 0).all()
        rel = ((got[g] - ref[g]).abs() / ref[g]).max().item()
        assert rel < rtol, f"group {g}: max relative difference {rel:.2e} >= {rtol:.0e}"


class _ConvNet(nn.Module):
    """conv (stride 2, padding) -> [BatchNorm] -> the same grouped conv twice -> Conv1d over positions -> head."""

    def __init__(self, bias: bool, groups: int, batchnorm: bool = False, conv1d: dict | None = None):
        super().__init__()
        self.first = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=bias)
        self.norm = nn.BatchNorm2d(4) if batchnorm else nn.Identity()
        self.twice = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=groups, bias=bias)
        self.seq = nn.Conv1d(4, 5, 3, bias=bias, **(conv1d or {}))
        self.head = nn.Linear(5, 3)

    def forward(self, inputs):
        h = torch.relu(self.norm(self.first(inputs["A"])))
        h = torch.tanh(self.twice(torch.tanh(self.twice(h))))
        return self.head(self.seq(h.flatten(2)).mean(2))


def _images(batch: int, size: int, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"A": torch.randn(batch, 3, size, size, generator=g, dtype=dtype)}, torch.randint(3, (batch,), generator=g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("form", ["materialise", "gram"])
@pytest.mark.parametrize("bias,groups,conv1d", [
    (True, 1, None),
    (False, 2, None),
    (True, 4, {"stride": 2, "padding": 1}),
    (False, 1, {"padding": "same", "padding_mode": "reflect", "dilation": 2}),
], ids=["bias", "nobias-groups2", "depthwise-conv1d-stride", "same-reflect"])
def test_conv_meter_matches_loop(monkeypatch, dtype, form, bias, groups, conv1d):
    """Both exact forms, forced on every layer, equal the per-sample loop (and vmap) per group."""
    monkeypatch.setattr(fisher, "_gram_is_cheaper", lambda *a: form == "gram")
    torch.manual_seed(1)
    model = _ConvNet(bias, groups, conv1d=conv1d).to(dtype)
    inputs, labels = _images(5, 12, dtype)
    groups_ = {"first": model.first, "twice": model.twice, "seq": model.seq, "all": model}
    got = _meter(model, groups_, _ce, inputs, labels)
    _assert_rel(got, per_sample_sq_norms_loop(model, _ce, inputs, labels, groups_), TOL[dtype])
    _assert_rel(got, per_sample_sq_norms_vmap(model, _ce, inputs, labels, groups_), 10 * TOL[dtype])


def test_conv_meter_in_small_chunks(monkeypatch):
    """Chunking the batch (intermediate memory bound) changes nothing: one sample per chunk, 16x16 inputs."""
    monkeypatch.setattr(fisher, "_CHUNK_ELEMENTS", 1)
    torch.manual_seed(2)
    model = _ConvNet(True, 2).double()
    inputs, labels = _images(4, 16, torch.float64, seed=2)
    groups = {"twice": model.twice, "all": model}
    _assert_rel(_meter(model, groups, _ce, inputs, labels),
                per_sample_sq_norms_loop(model, _ce, inputs, labels, groups), 1e-10)


def test_gram_form_is_chosen_by_cost():
    """ResNet-18 at 224 px: the stem (12544 positions, 147 x 64) materialises, layer4 (49 positions,
    4608 x 512) takes the Gram form; the rule compares L (K + C + 1) with K C."""
    assert not fisher._gram_is_cheaper(112 * 112, 3 * 49, 64)
    assert fisher._gram_is_cheaper(7 * 7, 512 * 9, 512)
    assert fisher._gram_is_cheaper(10, 10, 90) is (10 * 101 < 900)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_batchnorm_training_shares_match_loop(dtype):
    """BatchNorm in training mode: the meter equals B dL/dw_n (sample n's share) computed by the loop and by
    vmap; neither reference leaves a trace in the running statistics."""
    torch.manual_seed(3)
    model = _ConvNet(True, 2, batchnorm=True).to(dtype)
    inputs, labels = _images(6, 10, dtype, seed=3)
    groups = {"norm": model.norm, "first": model.first, "all": model}
    before = {k: b.clone() for k, b in model.named_buffers()}
    ref = per_sample_sq_norms_loop(model, _ce, inputs, labels, groups, shares=True)
    for k, b in model.named_buffers():  # the reference's extra passes leave the running statistics alone
        assert torch.equal(b, before[k])
    got = _meter(model, groups, _ce, inputs, labels)  # a training forward: updates the running statistics
    _assert_rel(got, ref, TOL[dtype])
    before = {k: b.clone() for k, b in model.named_buffers()}
    _assert_rel(got, per_sample_sq_norms_vmap(model, _ce, inputs, labels, groups, shares=True), 10 * TOL[dtype])
    for k, b in model.named_buffers():
        assert torch.equal(b, before[k])
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_batchnorm_shares_differ_from_frozen_statistics():
    """The share is not the gradient with frozen batch statistics: BatchNorm's backward couples the samples'
    gradients upstream of it. The frozen-statistics gradient of the first conv (a second model with
    BatchNorm evaluated at the batch's statistics) differs from the share, while BatchNorm's own affine
    gradients (downstream of nothing coupled) agree."""
    torch.manual_seed(4)
    model = _ConvNet(True, 1, batchnorm=True).double()
    inputs, labels = _images(5, 8, torch.float64, seed=4)
    groups = {"norm": model.norm, "first": model.first}
    shares = _meter(model, groups, _ce, inputs, labels)
    with torch.no_grad():
        h = model.first(inputs["A"])
        var, mean = torch.var_mean(h, dim=(0, 2, 3), correction=0)
    frozen = _ConvNet(True, 1, batchnorm=True).double()
    frozen.load_state_dict(model.state_dict())
    frozen.norm.running_mean.copy_(mean), frozen.norm.running_var.copy_(var)
    frozen.eval()
    ref = per_sample_sq_norms_loop(frozen, _ce, inputs, labels, {"norm": frozen.norm, "first": frozen.first})
    torch.testing.assert_close(shares["norm"], ref["norm"], rtol=1e-10, atol=0)
    assert ((shares["first"] - ref["first"]).abs() / ref["first"]).max() > 1e-3


def test_batchnorm_eval_mode_is_exact_per_sample():
    """BatchNorm in evaluation mode (running statistics) couples nothing: the meter equals the ordinary
    per-sample loop and vmap, and the share loop gives the same numbers."""
    torch.manual_seed(5)
    model = _ConvNet(False, 2, batchnorm=True).double()
    with torch.no_grad():
        model.norm.running_mean.uniform_(-0.5, 0.5), model.norm.running_var.uniform_(0.5, 2.0)
    model.eval()
    inputs, labels = _images(4, 10, torch.float64, seed=5)
    groups = {"norm": model.norm, "all": model}
    got = _meter(model, groups, _ce, inputs, labels)
    _assert_rel(got, per_sample_sq_norms_loop(model, _ce, inputs, labels, groups), 1e-10)
    _assert_rel(got, per_sample_sq_norms_loop(model, _ce, inputs, labels, groups, shares=True), 1e-10)
    _assert_rel(got, per_sample_sq_norms_vmap(model, _ce, inputs, labels, groups), 1e-10)
    _assert_rel(got, per_sample_sq_norms_vmap(model, _ce, inputs, labels, groups, shares=True), 1e-10)


def test_references_refuse_batch_statistics_without_shares():
    """One sample alone cannot reproduce batch statistics: the independent loop and vmap say so."""
    model = _ConvNet(True, 1, batchnorm=True)
    inputs, labels = _images(3, 8, torch.float32)
    with pytest.raises(ValueError, match="norm.*shares=True"):
        per_sample_sq_norms_loop(model, _ce, inputs, labels, {"all": model})
    with pytest.raises(ValueError, match="norm.*shares=True"):
        per_sample_sq_norms_vmap(model, _ce, inputs, labels, {"all": model})


@pytest.mark.parametrize("bad", [nn.Conv3d(1, 2, 3), nn.LayerNorm(4), nn.ConvTranspose2d(1, 2, 3)],
                         ids=["conv3d", "layernorm", "convtranspose2d"])
def test_meter_still_rejects_layers_without_rule(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        FisherMeter({"enc": nn.Sequential(nn.Conv2d(1, 1, 1), bad)})


def test_rows_not_a_multiple_of_the_batch_raise():
    """A layer that mixes samples' rows (here: 5 rows for a batch of 2) is refused with a clear error."""
    conv = nn.Conv2d(1, 2, 3)
    meter = FisherMeter({"all": conv})
    meter.start()
    conv(torch.randn(5, 1, 6, 6)).sum().backward()
    with pytest.raises(ValueError, match="Conv2d saw 5 rows for a batch of 2"):
        meter.collect(2)
    meter.close()


def _star(out, y):
    return F.cross_entropy(out.logits, y) + sum(F.cross_entropy(f, y) for f in out.unimodal.values())


@pytest.mark.parametrize("fusion", ["concat"])
def test_resnet18_pair_matches_loop(fusion):
    """The package's ResNet-18 audio (1 channel, 16 x 24 spectrogram) and visual (2 frames of 3 x 16 x 16)
    encoders, BatchNorm in training mode, in-place ReLUs: the meter and vmap equal the share loop within 1e-4
    (float32) per encoder and for the whole model."""
    torch.manual_seed(6)
    model = build_model(ModelConfig(encoder="resnet18", fusion=fusion, init="official"),
                        {"audio": 1, "visual": 3}, 4)
    model.train()
    g = torch.Generator().manual_seed(6)
    inputs = {"audio": torch.randn(3, 1, 16, 24, generator=g), "visual": torch.randn(3, 2, 3, 16, 16, generator=g)}
    labels = torch.tensor([0, 3, 1])
    groups = {m: model.encoders[m] for m in model.modalities} | {"all": model}
    ref = per_sample_sq_norms_loop(model, _star, inputs, labels, groups, shares=True)
    _assert_rel(per_sample_sq_norms_vmap(model, _star, inputs, labels, groups, shares=True), ref, 1e-4)
    _assert_rel(_meter(model, groups, _star, inputs, labels), ref, 1e-4)
