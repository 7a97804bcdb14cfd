"""Greedy (inforeg.methods.greedy): learning speeds sum ||g||^2 / ||theta||^2 per encoder accumulated over normal
batches; past the threshold, `window` re-balancing batches on which only the slowest encoder (and the head)
keeps its gradients; the regulate switch and start epoch; resume; a real run."""
from __future__ import annotations

import math

import pytest
import torch

import inforeg
from inforeg.methods import EpochState, build_method
from inforeg.models import build_model

CLASSES = 4
DIMS = {"A": 5, "B": 4}
DIMS3 = {"A": 5, "B": 4, "C": 3}
OPEN = {m: (True, 0.5) for m in DIMS3}
CLOSED = {m: (False, -0.1) for m in DIMS3}


def _setup(dims=DIMS, seed=0, **overrides):
    cfg = inforeg.make_config(method="greedy", overrides={"model.hidden": 8, "model.feature_dim": 6,
                                                          "greedy.window": 3, **overrides})
    torch.manual_seed(seed)
    model = build_model(cfg.model, dims, CLASSES).double()
    return cfg, model, build_method(cfg, model)


def _batch(dims, seed, n=16):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, d, generator=g, dtype=torch.float64) for m, d in dims.items()}
    return inputs, torch.randint(CLASSES, (n,), generator=g)


def _step(model, method, state, inputs, labels):
    model.zero_grad(set_to_none=True)
    out = model(inputs)
    method.loss(out, labels).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.after_backward(out, labels, state)
    after = {n: p.grad.clone() for n, p in model.named_parameters()}
    return before, after


def _hand_ratio(model, grads, m):
    """||g_m||^2 / ||theta_m||^2 over every parameter of encoder m, in plain Python."""
    names = [n for n, _ in model.named_parameters() if n.startswith(f"encoders.{m}.")]
    params = dict(model.named_parameters())
    g2 = sum(float((grads[n] ** 2).sum()) for n in names)
    w2 = sum(float((params[n].detach() ** 2).sum()) for n in names)
    return g2 / w2


def _frozen(before, after, m):
    """True if encoder m's gradients were zeroed, False if untouched (anything else fails)."""
    names = [n for n in before if n.startswith(f"encoders.{m}.")]
    if all(torch.equal(after[n], before[n]) for n in names):
        return False
    assert all(torch.equal(after[n], torch.zeros_like(after[n])) for n in names), m
    return True


def _fusion_untouched(before, after):
    return all(torch.equal(after[n], before[n]) for n in before if not n.startswith("encoders."))


def test_learning_speed_is_accumulated_ratio_and_nothing_changes_before_start_epoch():
    """Epoch 0 (< greedy.start_epoch = 1): gradients untouched, but the speeds add up batch by batch."""
    _, model, method = _setup(**{"greedy.threshold": 0.0})
    state = EpochState(0, [], CLOSED)
    method.on_epoch_start(state)
    expected = {m: 0.0 for m in DIMS}
    for b in range(3):
        before, after = _step(model, method, state, *_batch(DIMS, b))
        assert all(torch.equal(after[n], before[n]) for n in before)
        for m in DIMS:
            expected[m] += _hand_ratio(model, before, m)
    for i, m in enumerate(DIMS):
        assert method.speed[i].item() == pytest.approx(expected[m], rel=1e-12)
    report = method.on_epoch_end(state)
    assert report["reg_frac"] == {"A": 0.0, "B": 0.0} and report["regulated_frac"] == 0.0
    assert report["greedy_speed"]["A"] == pytest.approx(math.log10(expected["A"]))
    assert report["greedy_imbalance"] == pytest.approx(abs(math.log10(expected["A"] / expected["B"])))


@pytest.mark.parametrize("dims", [DIMS, DIMS3], ids=["2mod", "3mod"])
def test_rebalancing_steps_update_only_the_slowest_encoder(dims):
    """After a normal batch whose accumulated imbalance exceeds the threshold, the next `window` (3) batches keep
    only the slowest encoder's gradients (the faster encoders' are zeroed, the fusion's untouched) and do not
    add to the speeds; then training is normal again."""
    cfg, model, method = _setup(dims=dims, **{"greedy.threshold": 1e-6})
    state = EpochState(1, [], CLOSED)
    method.on_epoch_start(state)
    before, after = _step(model, method, state, *_batch(dims, 0))
    assert all(torch.equal(after[n], before[n]) for n in before)
    speed = {m: _hand_ratio(model, before, m) for m in dims}
    slow = min(speed, key=speed.get)
    assert math.log10(max(speed.values()) / speed[slow]) > cfg.greedy.threshold
    for b in range(cfg.greedy.window):
        before, after = _step(model, method, state, *_batch(dims, 1 + b))
        assert {m: _frozen(before, after, m) for m in dims} == {m: m != slow for m in dims}
        assert _fusion_untouched(before, after)
    torch.testing.assert_close(method.speed, torch.tensor([speed[m] for m in dims], dtype=torch.float64))
    before, after = _step(model, method, state, *_batch(dims, 9))  # normal again
    assert all(torch.equal(after[n], before[n]) for n in before)
    report = method.on_epoch_end(state)
    n = cfg.greedy.window + 2
    assert report["regulated_frac"] == pytest.approx(cfg.greedy.window / n)
    assert report["reg_frac"] == pytest.approx({m: (cfg.greedy.window / n if m != slow else 0.0) for m in dims})
    assert report["greedy_slow_frac"][slow] == pytest.approx(cfg.greedy.window / n)


def test_no_rebalancing_below_the_threshold():
    """An imbalance below the threshold never triggers re-balancing."""
    _, model, method = _setup(**{"greedy.threshold": 1e6})
    state = EpochState(1, [], CLOSED)
    method.on_epoch_start(state)
    for b in range(6):
        before, after = _step(model, method, state, *_batch(DIMS, b))
        assert all(torch.equal(after[n], before[n]) for n in before)


@pytest.mark.parametrize("regulate,window,epoch,acts", [
    ("window", CLOSED, 3, False),
    ("window", OPEN, 3, True),
    ("always", CLOSED, 1, True),
    ("always", CLOSED, 0, False),  # before greedy.start_epoch
    ("outside", CLOSED, 3, True),
    ("outside", OPEN, 3, False),
])
def test_regulate_switch(regulate, window, epoch, acts):
    """method.regulate (and greedy.start_epoch) decide the epochs with re-balancing steps."""
    _, model, method = _setup(**{"greedy.threshold": 1e-6, "method.regulate": regulate})
    state = EpochState(epoch, [], window)
    method.on_epoch_start(state)
    changed = False
    for b in range(3):
        before, after = _step(model, method, state, *_batch(DIMS, b))
        changed |= any(not torch.equal(after[n], before[n]) for n in before)
    assert changed is acts
    assert (method.on_epoch_end(state)["regulated_frac"] > 0) is acts


def test_a_modality_whose_regulation_is_off_is_not_frozen():
    """Window open only for the slow modality: the faster one may not be frozen, so nothing changes."""
    _, model, method = _setup(**{"greedy.threshold": 1e-6, "method.regulate": "window"})
    probe = EpochState(0, [], CLOSED)
    method.on_epoch_start(probe)
    before, _ = _step(model, method, probe, *_batch(DIMS, 0))
    speed = {m: _hand_ratio(model, before, m) for m in DIMS}
    slow = min(speed, key=speed.get)
    _, model, method = _setup(**{"greedy.threshold": 1e-6, "method.regulate": "window"})
    state = EpochState(3, [], {m: (m == slow, 0.0) for m in DIMS})
    method.on_epoch_start(state)
    for b in range(4):
        before, after = _step(model, method, state, *_batch(DIMS, b))
        assert all(torch.equal(after[n], before[n]) for n in before)


def test_state_dict_resumes_mid_rebalancing():
    """Speeds, the countdown and the slow modality survive a restart: a restored method goes on re-balancing."""
    cfg, model, method = _setup(**{"greedy.threshold": 1e-6})
    state = EpochState(1, [], CLOSED)
    method.on_epoch_start(state)
    before, _ = _step(model, method, state, *_batch(DIMS, 0))
    saved = method.state_dict()
    assert saved["remaining"] == cfg.greedy.window
    restored = build_method(cfg, model)
    restored.load_state_dict(saved)
    restored.on_epoch_start(state)
    torch.testing.assert_close(restored.speed, method.speed)
    before, after = _step(model, restored, state, *_batch(DIMS, 1))
    assert sum(_frozen(before, after, m) for m in DIMS) == 1


@pytest.fixture(scope="module")
def joint_run():
    return inforeg.train(inforeg.make_config(method="joint", overrides=QUICK), progress=False)


QUICK = {"epochs": 3, "data.n_train": 256, "data.n_test": 256}


def test_real_run_differs_from_joint(joint_run):
    """A short real run: re-balancing from epoch 1 on, and the training differs from joint's."""
    run = inforeg.train(inforeg.make_config(method="greedy", overrides=QUICK), progress=False)
    assert run.history[0]["regulated_frac"] == 0.0
    assert all(h["regulated_frac"] > 0.5 for h in run.history[1:])
    assert all(h["greedy_imbalance"] > 0 for h in run.history)
    assert run.series("train_loss")[0] == joint_run.series("train_loss")[0]  # epoch 0: joint training
    assert max(abs(a - b) for a, b in zip(run.series("train_loss"), joint_run.series("train_loss"))) > 1e-4
