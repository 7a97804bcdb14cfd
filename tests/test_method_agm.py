"""AGM (inforeg.methods.agm): Shapley-like mono logits from leave-one-out fusion passes, kappa from current vs
running score ratios, the gradient of each path scaled by kappa through tensor hooks, and the official clip;
checked against hand computations on a toy model."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import inforeg
from inforeg.fisher import FisherMeter, per_sample_sq_norms_loop
from inforeg.methods import EpochState, build_method
from inforeg.methods.agm import agm_coefficients, mono_logits, mono_scores, scale_grad
from inforeg.models import build_model

CLASSES = 4
DIMS2 = {"A": 5, "B": 4}
DIMS3 = {"A": 5, "B": 4, "C": 3}


def _window(mods, open_: bool):
    return {m: (open_, 0.0) for m in mods}


def _setup(dims=DIMS2, fusion="concat", seed=0, **overrides):
    cfg = inforeg.make_config(method="agm", overrides={"model.hidden": 8, "model.feature_dim": 6,
                                                       "model.fusion": fusion, **overrides})
    torch.manual_seed(seed)
    model = build_model(cfg.model, dims, CLASSES).double()
    return cfg, model, build_method(cfg, model)


def _batch(dims, seed: int, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, d, generator=g, dtype=torch.float64) for m, d in dims.items()}
    return inputs, torch.randint(CLASSES, (n,), generator=g)


def _zeroed(model, out, drop):
    """Fused logits with the features of the modalities in `drop` zeroed."""
    feats = [torch.zeros_like(out.features[m]) if m in drop else out.features[m] for m in model.modalities]
    return model.fusion(feats)[0]


def _hand_kappa(scores, running, alpha):
    """Official two-modality rule: r_a = exp(s_v - s_a), r_bar_a = exp(s_bar_v - s_bar_a),
    kappa_a = exp(alpha * min(r_bar_a - r_a, 10))."""
    (sa, sv), (ra_, rv_) = scores, running
    ka = math.exp(alpha * min(math.exp(rv_ - ra_) - math.exp(sv - sa), 10))
    kv = math.exp(alpha * min(math.exp(ra_ - rv_) - math.exp(sa - sv), 10))
    return ka, kv


def test_mono_logits_two_modalities_official_formula_and_split_head():
    """M = 2: m_a = (f(a,v) - f(0,v) + f(a,0)) / 2 and m_v symmetric, they add up to f(a,v); with concat fusion
    they are the split-head logits h_m W_m^T + b/2."""
    _, model, _ = _setup()
    out = model(_batch(DIMS2, 1)[0])
    feats = [out.features[m] for m in model.modalities]
    ma, mv = mono_logits(model.fusion, feats, out.logits)
    f_av, f_a0, f_0v = out.logits, _zeroed(model, out, {"B"}), _zeroed(model, out, {"A"})
    torch.testing.assert_close(ma, (f_av - f_0v + f_a0) / 2)
    torch.testing.assert_close(mv, (f_av - f_a0 + f_0v) / 2)
    torch.testing.assert_close(ma + mv, f_av)
    torch.testing.assert_close(ma, out.unimodal["A"])
    torch.testing.assert_close(mv, out.unimodal["B"])


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_mono_logits_three_modalities_leave_one_out(fusion):
    """M = 3: m_m = f(N)/3 + mean_k f(N\\k) - f(N\\m), adding up to f(N), for every fusion."""
    _, model, _ = _setup(DIMS3, fusion)
    out = model(_batch(DIMS3, 2)[0])
    feats = [out.features[m] for m in model.modalities]
    mono = mono_logits(model.fusion, feats, out.logits)
    loo = {m: _zeroed(model, out, {m}) for m in model.modalities}
    mean_loo = sum(loo.values()) / 3
    for m, z in zip(model.modalities, mono):
        torch.testing.assert_close(z, out.logits / 3 + mean_loo - loo[m])
    torch.testing.assert_close(sum(mono), out.logits)


def test_scores_are_floored_cross_entropies():
    """s_m = mean of -log p[y] with p floored at 1e-8 (a hopeless sample counts -log 1e-8 = 18.42)."""
    z = torch.tensor([[0.0, 0.0], [60.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    s = mono_scores([z], labels)
    assert s.item() == pytest.approx((math.log(2) - math.log(1e-8)) / 2)


def test_coefficients_two_and_three_modalities():
    """M = 2 is the official rule (and the cap at 10); M = 3: r_m = exp(3/2 (mean s - s_m))."""
    s, run = torch.tensor([0.7, 1.3], dtype=torch.float64), torch.tensor([1.0, 1.2], dtype=torch.float64)
    got = agm_coefficients(s, run, alpha=1.5).tolist()
    assert got == pytest.approx(_hand_kappa(s.tolist(), run.tolist(), 1.5), rel=1e-12)
    capped = agm_coefficients(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 5.0]), alpha=0.5).tolist()
    assert capped[0] == pytest.approx(math.exp(0.5 * 10))
    s3, run3 = [0.5, 1.0, 2.1], [0.9, 1.1, 1.6]
    got3 = agm_coefficients(torch.tensor(s3, dtype=torch.float64), torch.tensor(run3, dtype=torch.float64), 1.5)
    ms, mr = sum(s3) / 3, sum(run3) / 3
    hand = [math.exp(1.5 * min(math.exp(1.5 * (mr - b)) - math.exp(1.5 * (ms - a)), 10)) for a, b in zip(s3, run3)]
    assert got3.tolist() == pytest.approx(hand, rel=1e-12)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_encoder_gradients_follow_the_official_closed_form():
    """Two modalities: encoder A receives (k_a + k_v)/2 d f(a,v) + (k_a - k_v)/2 d f(a,0) applied to g = dCE/df,
    encoder B symmetrically, with kappa from the batch's scores and the running scores *before* the update;
    the running scores then become the cumulative mean."""
    cfg, model, method = _setup(**{"agm.clip": 0.0})
    method.load_state_dict({"running": [2.0, 2.4], "iterations": 4})
    state = EpochState(0, [], _window(DIMS2, True))
    method.on_epoch_start(state)
    inputs, labels = _batch(DIMS2, 3)
    out = model(inputs)
    loss = method.loss(out, labels)
    model.zero_grad(set_to_none=True)
    loss.backward()
    method.after_backward(out, labels, state)
    got = _grads(model)

    out = model(inputs)
    f_av, f_a0, f_0v = out.logits, _zeroed(model, out, {"B"}), _zeroed(model, out, {"A"})
    ma, mv = (f_av - f_0v + f_a0) / 2, (f_av - f_a0 + f_0v) / 2
    s = [float(F.cross_entropy(z.detach(), labels)) for z in (ma, mv)]
    ka, kv = _hand_kappa(s, [2.0, 2.4], cfg.agm.alpha)
    assert ka > 1.5 and kv < 0.8  # A is pushed, B held back: a no-op would fail below
    g = torch.autograd.grad(F.cross_entropy(f_av, labels), f_av, retain_graph=True)[0]
    enc = {m: list(model.encoders[m].parameters()) for m in DIMS2}
    d_av_a = torch.autograd.grad(f_av, enc["A"], g, retain_graph=True)
    d_a0_a = torch.autograd.grad(f_a0, enc["A"], g, retain_graph=True)
    d_av_v = torch.autograd.grad(f_av, enc["B"], g, retain_graph=True)
    d_0v_v = torch.autograd.grad(f_0v, enc["B"], g, retain_graph=True)
    names = {id(p): n for n, p in model.named_parameters()}
    for p, a, b in zip(enc["A"], d_av_a, d_a0_a):
        torch.testing.assert_close(got[names[id(p)]], (ka + kv) / 2 * a + (ka - kv) / 2 * b, rtol=1e-9, atol=1e-12)
    for p, a, b in zip(enc["B"], d_av_v, d_0v_v):
        torch.testing.assert_close(got[names[id(p)]], (ka + kv) / 2 * a + (kv - ka) / 2 * b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(method.running, (torch.tensor([2.0, 2.4], dtype=torch.float64) * 4
                                                + torch.tensor(s, dtype=torch.float64)) / 5)
    assert method.state_dict()["iterations"] == 5


@pytest.mark.parametrize("dims,fusion", [(DIMS2, "sum"), (DIMS3, "concat"), (DIMS3, "film"), (DIMS3, "gated")])
def test_gradient_is_kappa_weighted_sum_of_mono_paths(dims, fusion):
    """Any M and fusion: every parameter's gradient is sum_m kappa_m d m_m applied to g = dCE(f)/df."""
    cfg, model, method = _setup(dims, fusion, **{"agm.clip": 0.0})
    run = [1.0 + 0.3 * i for i in range(len(dims))]
    method.load_state_dict({"running": run, "iterations": 2})
    state = EpochState(0, [], _window(dims, True))
    method.on_epoch_start(state)
    inputs, labels = _batch(dims, 4)
    out = model(inputs)
    model.zero_grad(set_to_none=True)
    method.loss(out, labels).backward()
    got = _grads(model)

    out = model(inputs)
    mono = mono_logits(model.fusion, [out.features[m] for m in model.modalities], out.logits)
    kappa = agm_coefficients(mono_scores(mono, labels), torch.tensor(run, dtype=torch.float64), cfg.agm.alpha)
    assert kappa.max() - kappa.min() > 0.3
    g = torch.autograd.grad(F.cross_entropy(out.logits, labels), out.logits, retain_graph=True)[0]
    surrogate = sum(k * (g * z).sum() for k, z in zip(kappa, mono))
    params = list(model.parameters())
    expected = torch.autograd.grad(surrogate, params)
    for (n, _), e in zip(model.named_parameters(), expected):
        torch.testing.assert_close(got[n], e, rtol=1e-9, atol=1e-12)


def test_clip_when_a_classifier_gradient_leaves_the_band():
    """A classifier weight-gradient entry beyond agm.clip: the global gradient norm is clipped to agm.clip;
    within the band nothing changes."""
    for clip, clipped in [(1e-3, True), (1e6, False)]:
        _, model, method = _setup(**{"agm.clip": clip})
        state = EpochState(0, [], _window(DIMS2, True))
        method.on_epoch_start(state)
        inputs, labels = _batch(DIMS2, 5)
        out = model(inputs)
        model.zero_grad(set_to_none=True)
        method.loss(out, labels).backward()
        before = _grads(model)
        norm = torch.stack([g.norm() for g in before.values()]).norm()
        assert model.fusion.head.weight.grad.abs().max() > 1e-3
        method.after_backward(out, labels, state)
        after = _grads(model)
        if clipped:
            for n in before:
                torch.testing.assert_close(after[n], before[n] * clip / (norm + 1e-6))
        else:
            assert all(torch.equal(after[n], before[n]) for n in before)
        assert method.on_epoch_end(state)["agm_clip_frac"] == (1.0 if clipped else 0.0)


def _joint_grads(model, inputs, labels):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(inputs).logits, labels).backward()
    return _grads(model)


@pytest.mark.parametrize("regulate,open_,epoch,acts", [
    ("always", False, 3, True), ("window", True, 3, True), ("window", False, 3, False),
    ("outside", True, 3, False), ("outside", False, 3, True), ("outside", False, 1, False),
])
def test_regulate_switch(regulate, open_, epoch, acts):
    """Inactive epochs: plain CE(f) gradients (joint training), no clip, but the running scores still move."""
    _, model, method = _setup(**{"method.regulate": regulate, "agm.clip": 1e-3})
    method.load_state_dict({"running": [2.0, 2.4], "iterations": 4})
    state = EpochState(epoch, [], _window(DIMS2, open_))
    method.on_epoch_start(state)
    inputs, labels = _batch(DIMS2, 6)
    joint = _joint_grads(model, inputs, labels)
    out = model(inputs)
    model.zero_grad(set_to_none=True)
    method.loss(out, labels).backward()
    method.after_backward(out, labels, state)
    got = _grads(model)
    same = all(torch.allclose(got[n], joint[n], rtol=1e-12, atol=1e-15) for n in joint)
    assert same is (not acts)
    assert method.state_dict()["iterations"] == 5
    report = method.on_epoch_end(state)
    assert report["reg_frac"] == {m: (1.0 if acts else 0.0) for m in DIMS2}
    assert (report["alpha"]["A"] is None) is (not acts)


def test_only_the_regulated_modality_is_scaled():
    """Window open for A only: kappa_B is 1 (no hook), A's path keeps its kappa_a."""
    cfg, model, method = _setup(**{"method.regulate": "window", "agm.clip": 0.0})
    method.load_state_dict({"running": [2.0, 2.4], "iterations": 4})
    state = EpochState(3, [], {"A": (True, 0.0), "B": (False, 0.0)})
    method.on_epoch_start(state)
    inputs, labels = _batch(DIMS2, 7)
    out = model(inputs)
    model.zero_grad(set_to_none=True)
    method.loss(out, labels).backward()
    got = _grads(model)
    out = model(inputs)
    mono = mono_logits(model.fusion, [out.features[m] for m in model.modalities], out.logits)
    ka = agm_coefficients(mono_scores(mono, labels), torch.tensor([2.0, 2.4], dtype=torch.float64), cfg.agm.alpha)[0]
    g = torch.autograd.grad(F.cross_entropy(out.logits, labels), out.logits, retain_graph=True)[0]
    expected = torch.autograd.grad(ka * (g * mono[0]).sum() + (g * mono[1]).sum(), list(model.parameters()))
    for (n, _), e in zip(model.named_parameters(), expected):
        torch.testing.assert_close(got[n], e, rtol=1e-9, atol=1e-12)
    report = method.on_epoch_end(state)
    assert report["alpha"]["A"] == pytest.approx(float(ka)) and report["alpha"]["B"] is None


def test_fisher_meter_measures_the_scaled_per_sample_gradients():
    """The loop's FisherMeter, with the M + 1 fusion passes of an AGM step, equals a per-sample loop over the
    same kappa-scaled loss (kappa held at the batch's value)."""
    _, model, method = _setup(**{"agm.clip": 0.0})
    method.load_state_dict({"running": [2.0, 2.4], "iterations": 4})
    state = EpochState(0, [], _window(DIMS2, True))
    method.on_epoch_start(state)
    groups = {"A": model.encoders["A"], "B": model.encoders["B"], "all": model}
    inputs, labels = _batch(DIMS2, 8, n=6)
    meter = FisherMeter(groups)
    meter.start()
    out = model(inputs)
    model.zero_grad(set_to_none=True)
    method.loss(out, labels).backward()
    got = meter.collect(len(labels))
    meter.close()
    with torch.no_grad():
        mono = mono_logits(model.fusion, [out.features[m] for m in model.modalities], out.logits)
        kappa = agm_coefficients(mono_scores(mono, labels), torch.tensor([2.0, 2.4], dtype=torch.float64), 1.5)

    def loss_fn(o, y):
        z = mono_logits(model.fusion, [o.features[m] for m in model.modalities], o.logits)
        return F.cross_entropy(sum(scale_grad(t, k) for t, k in zip(z, kappa)), y)

    ref = per_sample_sq_norms_loop(model, loss_fn, inputs, labels, groups)
    for g in groups:
        torch.testing.assert_close(got[g], ref[g], rtol=1e-9, atol=0)


def test_epoch_report_and_state_round_trip():
    """alpha = mean kappa over the epoch's batches; a fresh method loaded from state_dict gives the same kappa."""
    cfg, model, method = _setup(**{"agm.clip": 0.0})
    state = EpochState(0, [], _window(DIMS2, True))
    method.on_epoch_start(state)
    kappas = []
    for b in range(4):
        inputs, labels = _batch(DIMS2, 20 + b)
        out = model(inputs)
        mono = mono_logits(model.fusion, [out.features[m] for m in model.modalities], out.logits)
        s = mono_scores(mono, labels)
        kappas.append(agm_coefficients(s, method.running if method.running is not None else torch.zeros(2), 1.5))
        method.loss(out, labels)
    report = method.on_epoch_end(state)
    mean = torch.stack(kappas).mean(0).tolist()
    assert [report["alpha"][m] for m in DIMS2] == pytest.approx(mean, rel=1e-9)
    saved = method.state_dict()
    fresh = build_method(cfg, model)
    fresh.load_state_dict(saved)
    fresh.on_epoch_start(state)
    method.on_epoch_start(state)
    inputs, labels = _batch(DIMS2, 30)
    out = model(inputs)
    torch.testing.assert_close(fresh.loss(out, labels), method.loss(out, labels))
    assert fresh.state_dict() == method.state_dict()


def test_short_run_differs_from_joint():
    """A real 3-epoch run: AGM damps the dominant A path and pushes B, so A's Tr F ends lower and B's higher
    than in joint training; the report has AGM's keys."""
    over = {"epochs": 3, "data.n_train": 256, "data.n_test": 256}
    joint = inforeg.train(inforeg.make_config(method="joint", overrides=over), progress=False)
    agm = inforeg.train(inforeg.make_config(method="agm", overrides=over), progress=False)
    ja, aa = joint.history[-1], agm.history[-1]
    assert aa["trace"]["A"] < 0.995 * ja["trace"]["A"]
    assert aa["trace"]["B"] > 1.005 * ja["trace"]["B"]
    assert aa["reg_frac"] == {"A": 1.0, "B": 1.0} and aa["regulated_frac"] == 1.0
    assert set(aa["agm_score"]) == {"A", "B"} and all(v is not None for v in aa["alpha"].values())
