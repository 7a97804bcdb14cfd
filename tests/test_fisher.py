"""Tr F meters (inforeg.fisher): the hook-based per-sample meter against closed forms and slow references,
and the official code's mini-batch proxy against a hand computation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inforeg.config import ModelConfig
from inforeg.fisher import FisherMeter, OfficialTrace, per_sample_sq_norms_loop, per_sample_sq_norms_vmap
from inforeg.models import SplitHead, build_model

RTOL = 1e-5


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-12)


def _joint_loss(out, y):
    return F.cross_entropy(out.logits, y)


def _star_loss(out, y):
    return F.cross_entropy(out.logits, y) + sum(F.cross_entropy(f, y) for f in out.unimodal.values())


def _data(dims: dict[str, int], batch: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(batch, d, generator=g, dtype=torch.float64) for m, d in dims.items()}
    labels = torch.randint(classes, (batch,), generator=g)
    return inputs, labels


def _meter_norms(model, groups, loss_fn, inputs, labels):
    meter = FisherMeter(groups)
    try:
        meter.start()
        loss_fn(model(inputs), labels).backward()
        return meter.collect(len(labels))
    finally:
        meter.close()
        model.zero_grad(set_to_none=True)


def test_logistic_regression_closed_form():
    """Softmax regression: ||g_n||^2 = ||p_n - e_y||^2 (||x_n||^2 + 1), the meter undoes the 1/B of the mean."""
    torch.manual_seed(0)
    d, C, B = 7, 5, 11
    layer = nn.Linear(d, C).double()
    x = torch.randn(B, d, dtype=torch.float64)
    y = torch.randint(C, (B,))
    meter = FisherMeter({"all": layer})
    meter.start()
    F.cross_entropy(layer(x), y).backward()
    got = meter.collect(B)["all"]
    with torch.no_grad():
        p = layer(x).softmax(1)
        expected = (p - F.one_hot(y, C)).pow(2).sum(1) * (x.pow(2).sum(1) + 1)
    assert got.shape == (B,)
    _close(got, expected)


def test_logistic_regression_without_bias_closed_form():
    """Without a bias the +1 term (the bias gradient) disappears: ||g_n||^2 = ||p_n - e_y||^2 ||x_n||^2."""
    torch.manual_seed(1)
    d, C, B = 4, 3, 9
    layer = nn.Linear(d, C, bias=False).double()
    x = torch.randn(B, d, dtype=torch.float64)
    y = torch.randint(C, (B,))
    meter = FisherMeter({"all": layer})
    meter.start()
    F.cross_entropy(layer(x), y).backward()
    got = meter.collect(B)["all"]
    with torch.no_grad():
        expected = (layer(x).softmax(1) - F.one_hot(y, C)).pow(2).sum(1) * x.pow(2).sum(1)
    _close(got, expected)


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
@pytest.mark.parametrize("n_mod", [2, 3])
@pytest.mark.parametrize("loss_fn", [_joint_loss, _star_loss], ids=["joint", "joint_star"])
def test_meter_matches_references(fusion, n_mod, loss_fn):
    """Per group (each encoder and the whole model), the one-backward meter equals the per-sample loop and vmap."""
    torch.manual_seed(2)
    dims = dict(zip("ABC"[:n_mod], (5, 4, 6)))
    classes = 3
    model = build_model(ModelConfig(hidden=8, feature_dim=6, fusion=fusion), dims, classes).double()
    groups = {m: model.encoders[m] for m in model.modalities} | {"all": model}
    inputs, labels = _data(dims, batch=6, classes=classes)
    got = _meter_norms(model, groups, loss_fn, inputs, labels)
    loop = per_sample_sq_norms_loop(model, loss_fn, inputs, labels, groups)
    vm = per_sample_sq_norms_vmap(model, loss_fn, inputs, labels, groups)
    assert set(got) == set(groups)
    for g in groups:
        assert got[g].shape == (6,)
        assert (got[g] > 0).all()
        _close(got[g], loop[g])
        _close(got[g], vm[g])
    # the whole model holds more than any encoder
    for m in model.modalities:
        assert (got["all"] > got[m]).all()


@pytest.mark.parametrize("bad", [nn.Conv3d(1, 2, 3), nn.LayerNorm(4)], ids=["conv3d", "layernorm"])
def test_meter_rejects_layers_without_rule(bad):
    """A parameter-owning layer with no exact per-sample rule raises a TypeError naming the layer type."""
    model = nn.Sequential(nn.Linear(4, 4), bad)
    with pytest.raises(TypeError, match=type(bad).__name__):
        FisherMeter({"enc": model})


def test_meter_accepts_parameterless_layers():
    """Layers with no parameters (ReLU, an affine-free BatchNorm) need no rule and do not raise."""
    meter = FisherMeter({"enc": nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4, affine=False))})
    meter.close()


class _SeqModel(nn.Module):
    """A sequence model: Linear on (batch, seq, features), tanh, mean over the sequence, Linear head."""

    def __init__(self, d: int, h: int, classes: int, bias: bool):
        super().__init__()
        self.inner = nn.Linear(d, h, bias=bias)
        self.head = nn.Linear(h, classes)

    def forward(self, inputs):
        return self.head(torch.tanh(self.inner(inputs["A"])).mean(1))


@pytest.mark.parametrize("bias", [True, False])
def test_meter_gram_branch_on_sequences(bias):
    """A Linear applied to (batch, seq, features): the Gram-matrix rule equals the per-sample loop."""
    torch.manual_seed(3)
    model = _SeqModel(5, 7, 4, bias).double()
    B = 5
    inputs = {"A": torch.randn(B, 6, 5, dtype=torch.float64)}
    labels = torch.randint(4, (B,))
    groups = {"inner": model.inner, "all": model}

    def loss_fn(out, y):
        return F.cross_entropy(out, y)

    got = _meter_norms(model, groups, loss_fn, inputs, labels)
    loop = per_sample_sq_norms_loop(model, loss_fn, inputs, labels, groups)
    for g in groups:
        _close(got[g], loop[g])
    # the rank-one shortcut (||sum g|| * ||sum a||) would be wrong here: make sure the answer is not it
    assert not torch.allclose(got["inner"], got["inner"].mean().expand(B))


def _official_by_hand(module: nn.Module) -> torch.Tensor:
    kinds = (nn.Linear, SplitHead)
    return sum(m.weight.grad.pow(2).mean() for m in module.modules() if isinstance(m, kinds))


def _concat_model():
    torch.manual_seed(4)
    dims = {"A": 5, "B": 4}
    model = build_model(ModelConfig(hidden=8, feature_dim=6, fusion="concat"), dims, 3).double()
    inputs, labels = _data(dims, batch=8, classes=3, seed=4)
    return model, inputs, labels


def test_official_trace_one_step_is_sum_of_weight_grad_means():
    """After one backward: sum over Linear/SplitHead weights of mean(grad^2), per group."""
    model, inputs, labels = _concat_model()
    groups = {m: model.encoders[m] for m in model.modalities} | {"all": model}
    trace = OfficialTrace(groups)
    _star_loss(model(inputs), labels).backward()
    trace.step()
    value = trace.value()
    for g, module in groups.items():
        assert value[g] == pytest.approx(float(_official_by_hand(module)), rel=1e-10)
    assert value["all"] > value["A"] + value["B"]  # the split head counts too


def test_official_trace_ignores_biases():
    """Changing only the bias gradients leaves the proxy unchanged (it watches weights only)."""
    model, inputs, labels = _concat_model()
    trace = OfficialTrace({"all": model})
    _joint_loss(model(inputs), labels).backward()
    trace.step()
    before = trace.value()["all"]
    trace.reset()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.grad.mul_(100.0).add_(3.0)
    trace.step()
    assert trace.value()["all"] == pytest.approx(before, rel=1e-12)
    with_bias = float(sum(p.grad.pow(2).mean() for p in model.parameters()))
    assert with_bias != pytest.approx(before, rel=1e-3)


def test_official_trace_sums_over_steps():
    """Two steps add up, and reset() starts again from zero."""
    model, inputs, labels = _concat_model()
    trace = OfficialTrace({"all": model})
    _joint_loss(model(inputs), labels).backward()
    first = float(_official_by_hand(model))
    trace.step()
    model.zero_grad(set_to_none=True)
    _star_loss(model({m: 2 * x for m, x in inputs.items()}), labels).backward()
    second = float(_official_by_hand(model))
    trace.step()
    assert trace.value()["all"] == pytest.approx(first + second, rel=1e-10)
    trace.reset()
    assert trace.value()["all"] == 0.0


def test_meter_exact_when_the_fusion_runs_several_times_in_one_step():
    """AGM-style extra passes through the concat head (and split-head unimodal losses) still give the exact
    per-sample Tr F: the per-call gradients of the head add up before the norm is taken."""
    import torch.nn.functional as F

    from inforeg.config import ModelConfig
    from inforeg.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=16, feature_dim=8, fusion="concat"), {"A": 5, "B": 7}, 4).double()
    groups = {"A": model.encoders["A"], "B": model.encoders["B"], "all": model}

    def loss_fn(out, y):
        alone_a, _ = model.fusion([out.features["A"], torch.zeros_like(out.features["B"])])
        return (F.cross_entropy(out.logits, y) + 0.5 * F.cross_entropy(alone_a, y)
                + F.cross_entropy(out.unimodal["A"], y))

    x = {"A": torch.randn(6, 5, dtype=torch.float64), "B": torch.randn(6, 7, dtype=torch.float64)}
    y = torch.randint(4, (6,))
    meter = FisherMeter(groups)
    meter.start()
    loss_fn(model(x), y).backward()
    got = meter.collect(6)
    ref = per_sample_sq_norms_loop(model, loss_fn, x, y, groups)
    for g in groups:
        torch.testing.assert_close(got[g], ref[g], rtol=1e-10, atol=0)
