"""PMR (inforeg.methods.pmr): prototypes = class means of the epoch's first tenth of training features (eval
mode), EMA across epochs; loss = joint + alpha CE(-||h - c||, y) on the modalities whose prototype score is
below the best; the regulate switch; resume; a real run."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import inforeg
from inforeg.data import Splits, TensorDataset
from inforeg.methods import EpochState, build_method
from inforeg.methods.pmr import prototype_order
from inforeg.models import build_model

CLASSES = 4
DIMS = {"A": 5, "B": 4}
DIMS3 = {"A": 5, "B": 4, "C": 3}
OPEN = {m: (True, 0.5) for m in DIMS3}
CLOSED = {m: (False, -0.1) for m in DIMS3}


def _setup(dims=DIMS, seed=0, **overrides):
    cfg = inforeg.make_config(method="pmr", overrides={"model.hidden": 8, "model.feature_dim": 6, **overrides})
    torch.manual_seed(seed)
    model = build_model(cfg.model, dims, CLASSES).double()
    return cfg, model, build_method(cfg, model)


def _data(dims, seed, n, labels=None):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, d, generator=g, dtype=torch.float64) for m, d in dims.items()}
    if labels is None:
        labels = (torch.arange(n) % CLASSES)[torch.randperm(n, generator=g)]
    return TensorDataset(inputs, labels)


def _state(dims, epoch=0, window=CLOSED, n=40, train=None):
    train = train if train is not None else _data(dims, 1, n)
    return EpochState(epoch, [], window, Splits(train, _data(dims, 2, 8), CLASSES), "cpu")


def _features(model, inputs):
    model.eval()
    with torch.no_grad():
        feats = model(inputs).features
    model.train()
    return feats


def _means(feats, labels):
    return torch.stack([feats[labels == k].mean(0) for k in range(CLASSES)])


def _drift(model, seed=1, size=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(size * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_prototypes_are_class_means_of_the_features():
    """One batch covers the training set (batch_size = n): prototypes are the class means of every feature."""
    _, model, method = _setup(**{"optim.batch_size": 40})
    state = _state(DIMS)
    method.on_epoch_start(state)
    train = state.splits.train
    feats = _features(model, train.inputs)
    for m in DIMS:
        torch.testing.assert_close(method.prototypes[m], _means(feats[m], train.labels))
    assert method.on_epoch_end(state)["pmr_proto_samples"] == 40


def test_prototypes_come_from_the_first_tenth_of_the_batches():
    """20 batches of 4: the first 2 of the epoch's order (8 samples), with every class present there."""
    cfg, model, method = _setup(**{"optim.batch_size": 4})
    labels = torch.arange(80) % CLASSES
    state = _state(DIMS, epoch=2, train=_data(DIMS, 1, 80, labels))
    method.on_epoch_start(state)
    train = state.splits.train
    used = [b for _, b in zip(range(2), train.batches(4, prototype_order(cfg.seed, 2)))]
    used_labels = torch.cat([b.labels for b in used])
    assert set(used_labels.tolist()) == set(range(CLASSES)), "pick a seed whose first two batches hold every class"
    feats = _features(model, {m: torch.cat([b.inputs[m] for b in used]) for m in DIMS})
    for m in DIMS:
        torch.testing.assert_close(method.prototypes[m], _means(feats[m], used_labels))
        assert not torch.allclose(method.prototypes[m], _means(_features(model, train.inputs)[m], train.labels))
    assert method.on_epoch_end(state)["pmr_proto_samples"] == 8


def test_a_class_missing_from_the_first_tenth_is_looked_for_further():
    """Class 3 has one sample among 40: batches are read until it is seen; its prototype is that sample's feature."""
    _, model, method = _setup(**{"optim.batch_size": 4})
    labels = torch.arange(40) % 3
    labels[17] = 3
    state = _state(DIMS, train=_data(DIMS, 1, 40, labels))
    method.on_epoch_start(state)
    feats = _features(model, {m: x[17:18] for m, x in state.splits.train.inputs.items()})
    for m in DIMS:
        assert torch.isfinite(method.prototypes[m]).all()
        torch.testing.assert_close(method.prototypes[m][3], feats[m][0])


def test_prototype_momentum():
    """From the second epoch on: c = (1 - mu) c_new + mu c_old."""
    _, model, method = _setup(**{"optim.batch_size": 40, "pmr.momentum": 0.3})
    state = _state(DIMS)
    method.on_epoch_start(state)
    old = {m: p.clone() for m, p in method.prototypes.items()}
    _drift(model)
    method.on_epoch_start(_state(DIMS, epoch=1))
    train = state.splits.train
    feats = _features(model, train.inputs)
    for m in DIMS:
        new = _means(feats[m], train.labels)
        assert not torch.allclose(new, old[m])
        torch.testing.assert_close(method.prototypes[m], 0.7 * new + 0.3 * old[m])


def _hand_loss(out, labels, prototypes, alpha, modalities):
    """CE(f) + alpha * sum over the modalities below the best prototype score of CE(-||h - c||, y)."""
    logits = {m: -((out.features[m][:, None, :] - prototypes[m][None]) ** 2).sum(-1).sqrt() for m in modalities}
    scores = {m: z.softmax(1)[torch.arange(len(labels)), labels].sum().item() for m, z in logits.items()}
    best = max(scores.values())
    weaker = [m for m in modalities if scores[m] < best]
    loss = F.cross_entropy(out.logits, labels)
    return loss + alpha * sum(F.cross_entropy(logits[m], labels) for m in weaker), weaker


@pytest.mark.parametrize("fusion", ["concat", "gated"])
@pytest.mark.parametrize("dims", [DIMS, DIMS3], ids=["2mod", "3mod"])
def test_loss_adds_prototype_cross_entropy_to_the_weaker(dims, fusion):
    """The loss is CE(f) + alpha PCE on every modality whose prototype score is below the leader's, by hand."""
    cfg, model, method = _setup(dims=dims, **{"model.fusion": fusion})
    state = _state(dims)
    method.on_epoch_start(state)
    _drift(model, size=0.05)
    batch = _data(dims, 5, 16)
    out = model(batch.inputs)
    expected, weaker = _hand_loss(out, batch.labels, method.prototypes, cfg.pmr.alpha, tuple(dims))
    assert len(weaker) == len(dims) - 1
    got = method.loss(out, batch.labels)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert got > F.cross_entropy(out.logits, batch.labels) + 0.1
    report = method.on_epoch_end(state)
    assert report["reg_frac"] == {m: float(m in weaker) for m in dims}
    assert report["alpha"] == {m: (cfg.pmr.alpha if m in weaker else None) for m in dims}


@pytest.mark.parametrize("lead", ["A", "B"])
def test_the_leader_gets_no_prototype_loss(lead):
    """Labels set to the nearest prototype of one modality make it the leader: only the other gets PCE, and
    the gradient of the leader's encoder is that of the joint loss alone."""
    cfg, model, method = _setup()
    state = _state(DIMS)
    method.on_epoch_start(state)
    _drift(model, size=0.05)
    batch = _data(DIMS, 5, 16)
    with torch.no_grad():
        labels = torch.cdist(model(batch.inputs).features[lead], method.prototypes[lead]).argmin(1)
    out = model(batch.inputs)
    expected, weaker = _hand_loss(out, labels, method.prototypes, cfg.pmr.alpha, DIMS)
    assert weaker == [m for m in DIMS if m != lead]
    params = [p for n, p in model.named_parameters() if n.startswith(f"encoders.{lead}.")]
    g_method = torch.autograd.grad(method.loss(out, labels), params, retain_graph=True)
    g_joint = torch.autograd.grad(F.cross_entropy(out.logits, labels), params)
    for a, b in zip(g_method, g_joint):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("regulate,window,epoch,acts", [
    ("window", CLOSED, 3, False),
    ("window", OPEN, 3, True),
    ("always", CLOSED, 0, True),
    ("outside", CLOSED, 3, True),
    ("outside", OPEN, 3, False),
    ("outside", CLOSED, 1, False),
])
def test_regulate_switch(regulate, window, epoch, acts):
    """method.regulate decides the epochs in which PCE is added; otherwise the loss is joint's."""
    _, model, method = _setup(**{"method.regulate": regulate})
    state = _state(DIMS, epoch=epoch, window=window)
    method.on_epoch_start(state)
    batch = _data(DIMS, 5, 16)
    out = model(batch.inputs)
    joint = F.cross_entropy(out.logits, batch.labels)
    assert (not torch.equal(method.loss(out, batch.labels), joint)) is acts
    assert (method.on_epoch_end(state)["regulated_frac"] > 0) is acts


def test_state_dict_restores_the_prototypes():
    """Prototypes survive a restart, so that the EMA of the next epoch starts from them."""
    cfg, model, method = _setup(**{"optim.batch_size": 40, "pmr.momentum": 0.5})
    method.on_epoch_start(_state(DIMS))
    saved = method.state_dict()
    restored = build_method(cfg, model)
    restored.load_state_dict(saved)
    method.on_epoch_start(_state(DIMS, epoch=1))
    restored.on_epoch_start(_state(DIMS, epoch=1))
    for m in DIMS:
        torch.testing.assert_close(restored.prototypes[m], method.prototypes[m])


@pytest.fixture(scope="module")
def joint_run():
    return inforeg.train(inforeg.make_config(method="joint", overrides=QUICK), progress=False)


QUICK = {"epochs": 3, "data.n_train": 256, "data.n_test": 256}


def test_real_run_differs_from_joint(joint_run):
    """A short real run: PCE on the weaker modality every batch, and the training differs from joint's."""
    run = inforeg.train(inforeg.make_config(method="pmr", overrides=QUICK), progress=False)
    assert all(h["regulated_frac"] == 1.0 for h in run.history)
    assert all(h["pmr_proto_samples"] >= 64 for h in run.history)
    joint = joint_run.history[-1]
    assert run.history[-1]["train_loss"] > joint["train_loss"] + 0.5  # the PCE term is in the training loss
    moved = {k: (run.model_state[k] - joint_run.model_state[k]).abs().max().item() for k in run.model_state}
    assert max(v for k, v in moved.items() if k.startswith("encoders.")) > 1e-3
