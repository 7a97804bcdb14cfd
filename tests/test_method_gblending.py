"""G-Blending (inforeg.methods.gblending): loss = w_fused CE(f) + sum_m w_m CE(f_m), weights re-estimated every
super-epoch as G / O^2 on the validation split, normalised; checked against hand computations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import inforeg
from inforeg.config import ConfigError
from inforeg.data import Splits, TensorDataset
from inforeg.methods import EpochState, build_method
from inforeg.methods.gblending import blend_weights
from inforeg.models import build_model

CLASSES = 3
DIMS2 = {"A": 5, "B": 4}
DIMS3 = {"A": 5, "B": 4, "C": 3}


def test_blend_weights_hand_computation():
    """G = val_prev - val_now, O = (val_now - train_now) - (val_prev - train_prev), w ∝ max(G, 0) / O^2."""
    prev = {"fused": (1.0, 1.2), "A": (1.5, 1.6), "B": (1.1, 1.4)}
    now = {"fused": (0.6, 1.0), "A": (1.2, 1.45), "B": (1.0, 1.5)}
    w, g, o = blend_weights(prev, now, old={"fused": 0.2, "A": 0.3, "B": 0.5})
    assert g == pytest.approx({"fused": 0.2, "A": 0.15, "B": -0.1})
    assert o == pytest.approx({"fused": 0.2, "A": 0.15, "B": 0.2})
    raw = {"fused": 0.2 / 0.04, "A": 0.15 / 0.0225, "B": 0.0}  # B's validation loss went up: weight 0
    total = sum(raw.values())
    assert w == pytest.approx({k: v / total for k, v in raw.items()})
    assert sum(w.values()) == pytest.approx(1.0)


def test_blend_weights_edge_cases():
    """No head improved: the old weights stay; O = 0: floored, so that head takes (almost) all the weight."""
    prev = {"fused": (1.0, 1.0), "A": (1.0, 1.0)}
    old = {"fused": 0.7, "A": 0.3}
    assert blend_weights(prev, {"fused": (0.9, 1.1), "A": (1.0, 1.0)}, old)[0] == old
    w, _, o = blend_weights(prev, {"fused": (0.9, 0.9), "A": (0.8, 0.9)}, old)
    assert o["fused"] == 0.0 and w["fused"] > 0.999999


def _data(dims, n, g):
    protos = {m: 2.0 * torch.randn(CLASSES, d, generator=g, dtype=torch.float64) for m, d in dims.items()}
    y = torch.randint(CLASSES, (n,), generator=g)
    xs = {m: protos[m][y] + torch.randn(n, d, generator=g, dtype=torch.float64) for m, d in dims.items()}
    return xs, y


def _splits(dims, seed=0, with_val=True):
    g = torch.Generator().manual_seed(seed)
    xs, y = _data(dims, 160, g)
    part = lambda a, b: TensorDataset({m: x[a:b] for m, x in xs.items()}, y[a:b])  # noqa: E731
    return Splits(part(0, 96), part(96, 128), CLASSES, part(128, 160) if with_val else None)


def _setup(dims=DIMS2, fusion="concat", seed=0, **overrides):
    cfg = inforeg.make_config(method="gblending", overrides={"model.hidden": 8, "model.feature_dim": 6,
                                                             "model.fusion": fusion, "data.n_val": 32,
                                                             **overrides})
    torch.manual_seed(seed)
    model = build_model(cfg.model, dims, CLASSES).double()
    return cfg, model, build_method(cfg, model)


def _window(mods, open_: bool):
    return {m: (open_, 0.0) for m in mods}


@torch.no_grad()
def _hand_losses(model, ds):
    """Per-head mean CE over a whole split, in eval mode (one pass, independent of the method's batching)."""
    model.eval()
    out = model(ds.inputs)
    model.train()
    res = {"fused": float(F.cross_entropy(out.logits, ds.labels))}
    res |= {m: float(F.cross_entropy(out.unimodal[m], ds.labels)) for m in model.modalities}
    return res


def _train_a_little(model, splits, steps=15, lr=0.3):
    """Plain gradient descent on joint* (by hand: torch.optim's first use imports torch._dynamo, seconds)."""
    params = list(model.parameters())
    for _ in range(steps):
        out = model(splits.train.inputs)
        loss = F.cross_entropy(out.logits, splits.train.labels) + sum(
            F.cross_entropy(out.unimodal[m], splits.train.labels) for m in model.modalities)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-lr)


def _hand_loss(out, labels, w):
    loss = w["fused"] * F.cross_entropy(out.logits, labels)
    return loss + sum(w[m] * F.cross_entropy(out.unimodal[m], labels) for m in out.unimodal)


@pytest.mark.parametrize("dims,fusion", [(DIMS2, "concat"), (DIMS3, "film")])
def test_weights_re_estimated_every_super_epoch(dims, fusion):
    """Equal weights first; re-estimated at epoch = super_epoch from the losses the test computes itself; the
    loss is then sum_k w_k CE(head_k)."""
    _, model, method = _setup(dims, fusion, **{"gblending.super_epoch": 2})
    splits = _splits(dims)
    heads = ("fused",) + tuple(dims)
    method.on_epoch_start(EpochState(0, [], _window(dims, True), splits))
    prev = {"train": _hand_losses(model, splits.train), "val": _hand_losses(model, splits.val)}
    inputs, labels = splits.train.inputs, splits.train.labels
    out = model(inputs)
    equal = {k: 1 / len(heads) for k in heads}
    torch.testing.assert_close(method.loss(out, labels), _hand_loss(out, labels, equal))
    report0 = method.on_epoch_end(EpochState(0, [], _window(dims, True), splits))
    assert report0["gblending_val_loss"] == pytest.approx(prev["val"], rel=1e-9)

    _train_a_little(model, splits)
    method.on_epoch_start(EpochState(1, [], _window(dims, True), splits))  # not due: nothing changes
    assert method.weights == pytest.approx(equal) and "gblending_G" not in method.on_epoch_end(None)
    method.on_epoch_start(EpochState(2, [], _window(dims, True), splits))
    now = {"train": _hand_losses(model, splits.train), "val": _hand_losses(model, splits.val)}
    g = {k: prev["val"][k] - now["val"][k] for k in heads}
    o = {k: (now["val"][k] - now["train"][k]) - (prev["val"][k] - prev["train"][k]) for k in heads}
    assert all(v > 0 for v in g.values())
    raw = {k: g[k] / o[k] ** 2 for k in heads}
    expected = {k: v / sum(raw.values()) for k, v in raw.items()}
    assert method.weights == pytest.approx(expected, rel=1e-6)
    assert max(expected.values()) - min(expected.values()) > 0.02  # not the equal weights any more
    out = model(inputs)
    torch.testing.assert_close(method.loss(out, labels), _hand_loss(out, labels, expected))
    report = method.on_epoch_end(None)
    assert report["gblending_G"] == pytest.approx(g, rel=1e-6)
    assert report["alpha"] == pytest.approx({m: expected[m] for m in dims}, rel=1e-6)
    assert report["gblending_w_fused"] == pytest.approx(expected["fused"], rel=1e-6)


def test_missing_validation_split_raises_naming_n_val():
    """With data.n_val = 0 (make_config gives G-Blending a validation split by default) the method refuses to
    start, naming the setting (at construction and at epoch start)."""
    cfg = inforeg.make_config(method="gblending", overrides={"model.hidden": 8, "model.feature_dim": 6,
                                                             "data.n_val": 0})
    model = build_model(cfg.model, DIMS2, CLASSES)
    with pytest.raises(ConfigError, match="data.n_val"):
        build_method(cfg, model)
    _, model, method = _setup()
    with pytest.raises(ConfigError, match="data.n_val"):
        method.on_epoch_start(EpochState(0, [], _window(DIMS2, True), _splits(DIMS2, with_val=False)))


@pytest.mark.parametrize("regulate,window,epoch,used", [
    ("always", _window(DIMS2, False), 3, {"A", "B"}),
    ("window", _window(DIMS2, False), 3, set()),
    ("window", {"A": (False, 0.0), "B": (True, 0.0)}, 3, {"B"}),
    ("outside", _window(DIMS2, True), 3, set()),
    ("outside", _window(DIMS2, False), 3, {"A", "B"}),
    ("outside", _window(DIMS2, False), 1, set()),
])
def test_regulate_switch(regulate, window, epoch, used):
    """An unregulated modality's unimodal loss gets weight 0 and its share goes to CE(f); none regulated: CE(f)."""
    _, model, method = _setup(**{"method.regulate": regulate, "gblending.super_epoch": 5})
    method.load_state_dict({"weights": {"fused": 0.2, "A": 0.5, "B": 0.3}, "reference": None})
    splits = _splits(DIMS2)
    state = EpochState(epoch, [], window, splits)
    method.on_epoch_start(state)
    w = {"fused": 0.2, "A": 0.5, "B": 0.3}
    hand = {m: (w[m] if m in used else 0.0) for m in DIMS2}
    hand["fused"] = 1.0 - sum(hand.values())
    out = model(splits.train.inputs)
    torch.testing.assert_close(method.loss(out, splits.train.labels), _hand_loss(out, splits.train.labels, hand))
    report = method.on_epoch_end(state)
    assert report["reg_frac"] == {m: (1.0 if m in used else 0.0) for m in DIMS2}
    assert report["alpha"] == {m: (w[m] if m in used else None) for m in DIMS2}


def test_state_round_trip_does_not_re_evaluate():
    """Resuming at an evaluation epoch already done keeps the weights and the reference losses."""
    _, model, method = _setup(**{"gblending.super_epoch": 1})
    splits = _splits(DIMS2)
    method.on_epoch_start(EpochState(0, [], _window(DIMS2, True), splits))
    _train_a_little(model, splits)
    method.on_epoch_start(EpochState(1, [], _window(DIMS2, True), splits))
    saved = method.state_dict()
    _, _, fresh = _setup(**{"gblending.super_epoch": 1})
    fresh.model = model
    fresh.load_state_dict(saved)
    fresh.on_epoch_start(EpochState(1, [], _window(DIMS2, True), splits))
    assert fresh.weights == method.weights and fresh.state_dict() == saved


def test_short_run_differs_from_joint():
    """A real 3-epoch run (with a validation split, super-epoch 1): weights re-estimated at epochs 1 and 2,
    summing to 1; the history differs from joint's."""
    over = {"epochs": 3, "data.n_train": 256, "data.n_test": 256, "data.n_val": 128}
    joint = inforeg.train(inforeg.make_config(method="joint", overrides=over), progress=False)
    gb = inforeg.train(inforeg.make_config(method="gblending", overrides=over | {"gblending.super_epoch": 1}),
                       progress=False)
    assert [h["train_loss"] for h in gb.history] != [h["train_loss"] for h in joint.history]
    assert gb.history[-1]["trace"]["A"] < 0.9 * joint.history[-1]["trace"]["A"]
    assert "gblending_G" not in gb.history[0] and all("gblending_G" in h for h in gb.history[1:])
    for h in gb.history:
        assert sum(h["gblending_weights"].values()) == pytest.approx(1.0)
    assert gb.history[-1]["gblending_weights"] != pytest.approx({"fused": 1 / 3, "A": 1 / 3, "B": 1 / 3})
