"""MMPareto (inforeg.methods.mmpareto): per encoder, the plain sum of the multimodal and unimodal gradients when
they agree, the MGDA min-norm combination when they conflict, the summed norm restored per tensor and scaled
by gamma; checked against hand computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import inforeg
from inforeg.fisher import FisherMeter, per_sample_sq_norms_loop
from inforeg.methods import EpochState, build_method
from inforeg.methods.mmpareto import min_norm_weight, pareto_combine
from inforeg.models import build_model

CLASSES = 4
DIMS2 = {"A": 5, "B": 4}
DIMS3 = {"A": 5, "B": 4, "C": 3}
T = dict(dtype=torch.float64)


def _t(*rows):
    return [torch.tensor(r, **T) for r in rows]


def test_conflict_gives_min_norm_combination_with_restored_norm():
    """g_mm = (2, 0 | 1), g_u = (-1, 1 | -1): cos < 0, w = (g_u.g_u - g_mm.g_u) / |g_mm - g_u|^2 = 6/14,
    h = 2 (w g_mm + (1 - w) g_u) = (4/7, 8/7 | -2/7); tensor 1: |g_sum| / |h| = 7/sqrt(40) > 1 restores the
    norm, tensor 2: g_sum = 0 < |h| keeps h; both times gamma = 1.5."""
    g_mm, g_u = _t([2.0, 0.0], [1.0]), _t([-1.0, 1.0], [-1.0])
    g_sum = [a + b for a, b in zip(g_mm, g_u)]
    new, w, cos, conflict = pareto_combine(g_mm, g_u, g_sum, gamma=1.5)
    assert bool(conflict) and cos.item() == pytest.approx(-3 / math.sqrt(15))
    assert w.item() == pytest.approx(3 / 7)
    torch.testing.assert_close(new[0], 1.5 * (7 / math.sqrt(40)) * torch.tensor([4 / 7, 8 / 7], **T))
    torch.testing.assert_close(new[1], 1.5 * torch.tensor([-2 / 7], **T))
    a, b = torch.cat(g_mm), torch.cat(g_u)  # w is the minimiser of |w a + (1 - w) b| on [0, 1]
    grid = torch.linspace(0, 1, 10001, **T)
    best = grid[((grid[:, None] * a + (1 - grid[:, None]) * b) ** 2).sum(1).argmin()]
    assert w.item() == pytest.approx(best.item(), abs=1e-4)


def test_agreement_gives_gamma_times_plain_sum():
    """cos > 0: w = 1/2, h = g_mm + g_u = g_sum, so every tensor becomes 1.5 g_sum."""
    g_mm, g_u = _t([1.0, 0.0], [1.0]), _t([1.0, 1.0], [0.0])
    g_sum = [a + b for a, b in zip(g_mm, g_u)]
    new, w, cos, conflict = pareto_combine(g_mm, g_u, g_sum, gamma=1.5)
    assert not bool(conflict) and w.item() == 0.5
    for n, s in zip(new, g_sum):
        torch.testing.assert_close(n, 1.5 * s)


def test_min_norm_weight_is_clipped():
    """A zero multimodal gradient puts all weight on it, clipped to 0.999 (and the mirror case to 0.001)."""
    one, zero = torch.tensor(1.0, **T), torch.tensor(0.0, **T)
    assert min_norm_weight(zero, zero, one).item() == pytest.approx(0.999)
    assert min_norm_weight(one, zero, zero).item() == pytest.approx(0.001)


def _setup(dims=DIMS2, fusion="concat", seed=0, boost_b=1.0, **overrides):
    cfg = inforeg.make_config(method="mmpareto", overrides={"model.hidden": 8, "model.feature_dim": 6,
                                                            "model.fusion": fusion, **overrides})
    torch.manual_seed(seed)
    model = build_model(cfg.model, dims, CLASSES).double()
    with torch.no_grad():
        for p in model.encoders["B"].parameters():
            p.mul_(boost_b)
    return cfg, model, build_method(cfg, model)


def _batch(dims, seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, d, generator=g, **T) for m, d in dims.items()}
    return inputs, torch.randint(CLASSES, (n,), generator=g)


def _window(mods, open_: bool):
    return {m: (open_, 0.0) for m in mods}


def _method_step(model, method, state, inputs, labels):
    out = model(inputs)
    loss = method.loss(out, labels)
    model.zero_grad(set_to_none=True)
    loss.backward()
    method.after_backward(out, labels, state)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _hand(model, inputs, labels, gamma, active):
    """The official procedure: separate gradients of CE(f) and of each CE(f_m), then the rule per encoder."""
    out = model(inputs)
    loss_mm = F.cross_entropy(out.logits, labels)
    loss_u = {m: F.cross_entropy(out.unimodal[m], labels) for m in model.modalities}
    params = list(model.parameters())
    g_sum = torch.autograd.grad(loss_mm + sum(loss_u.values()), params, retain_graph=True)
    names = [n for n, _ in model.named_parameters()]
    expected = dict(zip(names, g_sum))
    cosines = {}
    for m in active:
        ps = list(model.encoders[m].parameters())
        a = torch.autograd.grad(loss_mm, ps, retain_graph=True)
        b = torch.autograd.grad(loss_u[m], ps, retain_graph=True)
        fa, fb = torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b])
        cos = float(fa @ fb / (fa.norm() * fb.norm()))
        cosines[m] = cos
        if cos > 0:
            w = 0.5
        else:
            w = min(max(float((fb @ fb - fa @ fb) / ((fa - fb) @ (fa - fb))), 0.001), 0.999)
        ids = {id(p): n for n, p in model.named_parameters()}
        for p, ga, gb in zip(ps, a, b):
            n = ids[id(p)]
            h = 2 * w * ga + 2 * (1 - w) * gb
            r = float(expected[n].norm() / h.norm())
            expected[n] = gamma * max(r, 1.0) * h
    return expected, cosines


@pytest.mark.parametrize("dims,fusion,seed,boost,conflicting", [
    (DIMS2, "film", 14, 3.0, {"A"}),  # A's multimodal and unimodal gradients conflict here
    (DIMS2, "concat", 0, 1.0, set()),
    (DIMS3, "gated", 1, 1.0, None),
    (DIMS3, "sum", 2, 1.0, None),
])
def test_step_matches_the_official_procedure(dims, fusion, seed, boost, conflicting):
    """A training step's gradients equal the official procedure done by hand (one backward per loss); the heads
    keep the plain summed gradient of CE(f) + sum_m CE(f_m)."""
    cfg, model, method = _setup(dims, fusion, seed, boost)
    state = EpochState(0, [], _window(dims, True))
    method.on_epoch_start(state)
    inputs, labels = _batch(dims, seed, n=3 if boost != 1.0 else 8)
    got = _method_step(model, method, state, inputs, labels)
    expected, cosines = _hand(model, inputs, labels, cfg.mmpareto.gamma, dims)
    if conflicting is not None:
        assert {m for m, c in cosines.items() if c <= 0} == conflicting
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-9, atol=1e-12)
    report = method.on_epoch_end(state)
    for m in dims:
        assert report["reg_frac"][m] == (1.0 if cosines[m] <= 0 else 0.0)
        assert report["mmpareto_cos"][m] == pytest.approx(cosines[m], rel=1e-9)
        if cosines[m] > 0:
            assert report["alpha"][m] == 0.5 and report["mmpareto_scale"][m] == pytest.approx(1.5)
        else:
            assert report["alpha"][m] != 0.5


def _joint_star_grads(model, inputs, labels):
    out = model(inputs)
    model.zero_grad(set_to_none=True)
    (F.cross_entropy(out.logits, labels) + sum(F.cross_entropy(out.unimodal[m], labels)
                                               for m in model.modalities)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("regulate,window,epoch,acting", [
    ("always", _window(DIMS2, False), 3, {"A", "B"}),
    ("window", _window(DIMS2, False), 3, set()),
    ("window", {"A": (True, 0.0), "B": (False, 0.0)}, 3, {"A"}),
    ("outside", _window(DIMS2, True), 3, set()),
    ("outside", _window(DIMS2, False), 3, {"A", "B"}),
    ("outside", _window(DIMS2, False), 1, set()),
])
def test_regulate_switch(regulate, window, epoch, acting):
    """Only regulated encoders get the MMPareto gradient; the others keep the joint* gradient (no gamma)."""
    cfg, model, method = _setup(**{"method.regulate": regulate})
    state = EpochState(epoch, [], window)
    method.on_epoch_start(state)
    inputs, labels = _batch(DIMS2, 3, n=8)
    plain = _joint_star_grads(model, inputs, labels)
    got = _method_step(model, method, state, inputs, labels)
    expected, _ = _hand(model, inputs, labels, cfg.mmpareto.gamma, acting)
    for n in plain:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-9, atol=1e-12)
        changed = not torch.allclose(got[n], plain[n], rtol=1e-9, atol=1e-12)
        assert changed is (n.split(".")[1] in acting if n.startswith("encoders.") else False), n
    assert method.on_epoch_end(state)["alpha"] == {m: (0.5 if m in acting else None) for m in DIMS2}


def test_fisher_meter_measures_the_total_loss_despite_the_extra_passes():
    """The two autograd.grad passes inside `loss` fire the meter's hooks too, but the loop's backward comes last:
    the meter gives the per-sample Tr F of CE(f) + sum_m CE(f_m), as a per-sample loop does."""
    _, model, method = _setup(DIMS2, "film", 14, 3.0)
    state = EpochState(0, [], _window(DIMS2, True))
    method.on_epoch_start(state)
    groups = {"A": model.encoders["A"], "B": model.encoders["B"], "all": model}
    inputs, labels = _batch(DIMS2, 14, n=3)
    meter = FisherMeter(groups)
    meter.start()
    out = model(inputs)
    loss = method.loss(out, labels)
    model.zero_grad(set_to_none=True)
    loss.backward()
    got = meter.collect(len(labels))
    meter.close()
    assert method.pending  # the separate gradients were taken

    def total(o, y):
        return F.cross_entropy(o.logits, y) + sum(F.cross_entropy(o.unimodal[m], y) for m in DIMS2)

    ref = per_sample_sq_norms_loop(model, total, inputs, labels, groups)
    for g in groups:
        torch.testing.assert_close(got[g], ref[g], rtol=1e-9, atol=0)


def test_short_run_differs_from_joint():
    """A real 3-epoch run: MMPareto's history differs from joint's and from joint*'s (same losses, plain sum)."""
    over = {"epochs": 3, "data.n_train": 256, "data.n_test": 256}
    runs = {m: inforeg.train(inforeg.make_config(method=m, overrides=over), progress=False)
            for m in ("joint", "joint*", "mmpareto")}
    mp, star, joint = (runs[m].history[-1] for m in ("mmpareto", "joint*", "joint"))
    assert mp["train_loss"] < star["train_loss"] - 0.01  # gamma = 1.5 on the encoders: faster descent
    assert mp["trace"] != joint["trace"]
    assert mp["alpha"]["A"] is not None and mp["mmpareto_scale"]["A"] >= 1.5 - 1e-5
