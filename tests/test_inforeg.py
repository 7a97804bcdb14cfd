"""InfoReg (inforeg.methods.inforeg): score gap, coefficients, and the proximal gradient alpha_m (w_m - w_m^start)
added in after_backward, checked against hand computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import inforeg
from inforeg.methods import EpochState, build_method, coefficients, regulation_active, score_gap
from inforeg.methods.inforeg import coefficients_float, score_gap_float
from inforeg.models import build_model

CLASSES = 4
DIMS = {"A": 5, "B": 4}
OPEN = {"A": (True, 0.5), "B": (True, 0.5)}
CLOSED = {"A": (False, -0.1), "B": (False, -0.1)}


@pytest.mark.parametrize("scores", [[0.9, 0.5, 0.2], [0.2, 0.9, 0.5], [0.5, 0.5, 0.2], [0.3, 0.3, 0.3]])
def test_score_gap_three_modalities(scores):
    """Delta_m = mean of s_m - s_k over the k scoring strictly lower than m; 0 if none (ties are not lower): the
    tensor version (GPU path) against the Python one (CPU path), itself checked on a worked example below."""
    got = score_gap(torch.tensor(scores, dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor(score_gap_float(scores), dtype=torch.float64))


@pytest.mark.parametrize("scores", [[0.9, 0.5, 0.2], [0.3, 0.3, 0.1], [0.4, 0.7], [0.5, 0.5]])
@pytest.mark.parametrize("rule", ["paper", "official"])
def test_float_versions_equal_the_tensor_versions(scores, rule):
    """The CPU path's score_gap_float and coefficients_float compute what score_gap and coefficients do."""
    c = [0.8, 1.2, 1.0][:len(scores)]
    gap = score_gap(torch.tensor(scores, dtype=torch.float64))
    want = coefficients(gap, rule, 0.9, torch.tensor(c, dtype=torch.float64)).tolist()
    assert score_gap_float(scores) == pytest.approx(gap.tolist(), rel=1e-15)
    assert coefficients_float(gap.tolist(), rule, 0.9, c) == pytest.approx(want, rel=1e-14)


def test_score_gap_worked_example():
    """[0.9, 0.5, 0.2] -> [(0.4 + 0.7)/2, 0.3, 0]."""
    got = score_gap(torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)).tolist()
    assert got == pytest.approx([0.55, 0.3, 0.0], abs=1e-12)
    assert score_gap_float([0.9, 0.5, 0.2]) == pytest.approx([0.55, 0.3, 0.0], abs=1e-12)


def test_coefficients_paper_and_official():
    """paper: exp(beta tanh Delta); official: c_m exp(tanh Delta); both 0 where Delta <= 0."""
    delta = torch.tensor([0.55, 0.3, 0.0], dtype=torch.float64)
    paper = coefficients(delta, "paper", beta=0.7).tolist()
    assert paper == pytest.approx([math.exp(0.7 * math.tanh(0.55)), math.exp(0.7 * math.tanh(0.3)), 0.0])
    c = torch.tensor([0.95, 0.1, 0.5], dtype=torch.float64)
    official = coefficients(delta, "official", beta=0.7, official_c=c).tolist()
    assert official == pytest.approx([0.95 * math.exp(math.tanh(0.55)), 0.1 * math.exp(math.tanh(0.3)), 0.0])
    neg = coefficients(torch.tensor([-0.2]), "paper", beta=0.9)
    assert neg.item() == 0.0
    with pytest.raises(ValueError, match="paper, official"):
        coefficients(delta, "median", beta=0.9)


@pytest.mark.parametrize("mode,window_open,epoch,expected", [
    ("window", True, 0, True), ("window", False, 5, False),
    ("always", False, 0, True), ("always", True, 5, True),
    ("outside", False, 5, True), ("outside", True, 5, False), ("outside", False, 1, False),
])
def test_regulation_active_modes(mode, window_open, epoch, expected):
    """window: only inside; always: every epoch; outside: window closed and past min_epoch (2)."""
    assert regulation_active(mode, window_open, epoch, min_epoch=2) is expected


def test_regulation_active_unknown_mode_raises():
    """An unknown regulate mode raises a ValueError naming the valid ones."""
    with pytest.raises(ValueError, match="window, always, outside"):
        regulation_active("sometimes", True, 3, 2)


def _setup(seed: int = 0, **overrides):
    cfg = inforeg.make_config(method="inforeg", overrides={"model.hidden": 8, "model.feature_dim": 6, **overrides})
    torch.manual_seed(seed)
    model = build_model(cfg.model, DIMS, CLASSES).double()
    return cfg, model, build_method(cfg, model)


def _batch(seed: int, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, d, generator=g, dtype=torch.float64) for m, d in DIMS.items()}
    return inputs, torch.randint(CLASSES, (n,), generator=g)


def _drift(model, seed: int = 1, size: float = 0.05):
    """Move every weight away from the start of the epoch."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(size * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _step(model, method, state, inputs, labels):
    """Forward, backward, and the gradients before and after after_backward."""
    model.zero_grad(set_to_none=True)
    out = model(inputs)
    method.loss(out, labels).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.after_backward(out, labels, state)
    after = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out, before, after


def _hand_scores(out, labels, reduce="mean"):
    s = {m: F.softmax(out.unimodal[m].detach(), 1)[torch.arange(len(labels)), labels] for m in out.unimodal}
    return {m: float(v.sum() if reduce == "sum" else v.mean()) for m, v in s.items()}


def test_proximal_gradient_equals_alpha_times_drift():
    """Window open: the leader's encoder gradient grows by alpha (w - w_start), alpha = exp(beta tanh(s_lead -
    s_other)) from the batch's mean true-class probabilities; the other encoder and the head are untouched."""
    cfg, model, method = _setup()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = EpochState(3, [], OPEN)
    method.on_epoch_start(state)
    _drift(model)
    inputs, labels = _batch(2)
    out, before, after = _step(model, method, state, inputs, labels)
    s = _hand_scores(out, labels)
    lead, other = ("A", "B") if s["A"] > s["B"] else ("B", "A")
    alpha = math.exp(cfg.method.beta * math.tanh(s[lead] - s[other]))
    params = dict(model.named_parameters())
    for n in params:
        added = after[n] - before[n]
        if n.startswith(f"encoders.{lead}."):
            expected = alpha * (params[n].detach() - start[n])
            assert expected.abs().max() > 1e-3
            torch.testing.assert_close(added, expected, rtol=1e-10, atol=1e-14)
        else:
            assert torch.equal(after[n], before[n]), n


def test_proximal_gradient_follows_the_leader():
    """With labels chosen to favour B's unimodal logits, B is the one pulled back, with its own alpha."""
    cfg, model, method = _setup(seed=3)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = EpochState(3, [], OPEN)
    method.on_epoch_start(state)
    _drift(model, seed=4)
    inputs, _ = _batch(5)
    with torch.no_grad():
        labels = model(inputs).unimodal["B"].argmax(1)
    out, before, after = _step(model, method, state, inputs, labels)
    s = _hand_scores(out, labels)
    assert s["B"] > s["A"]
    alpha = math.exp(cfg.method.beta * math.tanh(s["B"] - s["A"]))
    for n, p in model.named_parameters():
        expected = alpha * (p.detach() - start[n]) if n.startswith("encoders.B.") else torch.zeros_like(p)
        torch.testing.assert_close(after[n] - before[n], expected, rtol=1e-10, atol=1e-14)


def test_window_closed_changes_nothing():
    """Window closed (regulate='window'): after_backward leaves every gradient as it was."""
    _, model, method = _setup()
    state = EpochState(3, [], CLOSED)
    method.on_epoch_start(state)
    _drift(model)
    _, before, after = _step(model, method, state, *_batch(2))
    assert all(torch.equal(after[n], before[n]) for n in before)
    report = method.on_epoch_end(state)
    assert report["alpha"] == {"A": None, "B": None}
    assert report["reg_frac"] == {"A": 0.0, "B": 0.0}


def test_window_open_only_for_the_lagging_modality_changes_nothing():
    """A modality is pulled back only if its own window is open and it leads: open for the laggard only -> no change."""
    _, model, method = _setup()
    inputs, labels = _batch(2)
    _drift(model)
    with torch.no_grad():
        s = _hand_scores(model(inputs), labels)
    lagging = "A" if s["A"] < s["B"] else "B"
    window = {m: (m == lagging, 0.0) for m in DIMS}
    state = EpochState(3, [], window)
    method.on_epoch_start(state)
    _drift(model, seed=9, size=0.01)
    _, before, after = _step(model, method, state, inputs, labels)
    assert all(torch.equal(after[n], before[n]) for n in before)
    report = method.on_epoch_end(state)
    assert report["reg_frac"] == {"A": 0.0, "B": 0.0}
    assert report["regulated_frac"] == 0.0


@pytest.mark.parametrize("regulate,window,epoch,acts", [
    ("always", CLOSED, 3, True),
    ("outside", CLOSED, 3, True),
    ("outside", OPEN, 3, False),
    ("outside", CLOSED, 1, False),
])
def test_regulate_modes_in_after_backward(regulate, window, epoch, acts):
    """method.regulate: 'always' ignores the window; 'outside' acts only once it has closed (and past min_epoch)."""
    _, model, method = _setup(**{"method.regulate": regulate})
    state = EpochState(epoch, [], window)
    method.on_epoch_start(state)
    _drift(model)
    _, before, after = _step(model, method, state, *_batch(2))
    changed = any(not torch.equal(after[n], before[n]) for n in before)
    assert changed is acts


def test_on_epoch_end_reports_mean_alpha_and_fraction():
    """Over several batches: alpha = mean of alpha over the batches where m was regulated, reg_frac = their share,
    regulated_frac = share of batches where any modality was."""
    cfg, model, method = _setup(seed=0)
    state = EpochState(3, [], OPEN)
    method.on_epoch_start(state)
    _drift(model)
    alphas = {"A": [], "B": []}
    n_batches = 6
    for b in range(n_batches):
        inputs, labels = _batch(10 + b, n=8)
        out, _, _ = _step(model, method, state, inputs, labels)
        s = _hand_scores(out, labels)
        lead, other = ("A", "B") if s["A"] > s["B"] else ("B", "A")
        alphas[lead].append(math.exp(cfg.method.beta * math.tanh(s[lead] - s[other])))
    assert alphas["A"] and alphas["B"], "the chosen batches should let each modality lead at least once"
    report = method.on_epoch_end(state)
    for m in DIMS:
        assert report["alpha"][m] == pytest.approx(sum(alphas[m]) / len(alphas[m]), rel=1e-6)
        assert report["reg_frac"][m] == pytest.approx(len(alphas[m]) / n_batches)
    assert report["regulated_frac"] == pytest.approx(1.0)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_device_path_equals_cpu_path(preset):
    """after_backward's GPU path (no host sync: every active encoder gets the pull, zero where alpha is 0, counts on
    the device) gives the CPU path's gradients and epoch report (the CPU path computes the scores with NumPy and
    alpha with Python floats: equal within rounding); run here on the CPU, in float64, by switching the path."""
    reports, grads = [], []
    for on_cpu in (True, False):
        _, model, method = _setup(seed=0, **({} if preset == "paper" else {"method.coefficient": "official",
                                                                           "method.score": "sum"}))
        state = EpochState(3, [], OPEN)
        method.on_epoch_start(state)
        method.on_cpu = on_cpu
        _drift(model)
        after = []
        for b in range(6):
            _, _, got = _step(model, method, state, *_batch(10 + b, n=8))
            after.append(got)
        reports.append(method.on_epoch_end(state))
        grads.append(after)
    assert reports[0]["reg_frac"] == reports[1]["reg_frac"]
    assert reports[0]["regulated_frac"] == reports[1]["regulated_frac"]
    assert reports[0]["alpha"] == {m: pytest.approx(a, rel=1e-12) for m, a in reports[1]["alpha"].items()}
    assert all(torch.allclose(a[n], b[n], rtol=1e-12, atol=1e-15) for a, b in zip(*grads) for n in a)
    assert 0 < reports[0]["reg_frac"]["A"] < 1  # each modality led on some batches, so both paths skipped pulls


def test_paper_preset_loss_is_joint_cross_entropy():
    """The paper preset (InfoReg, not InfoReg*) trains on CE of the fused logits only; inforeg* adds the unimodal CEs."""
    _, model, method = _setup()
    inputs, labels = _batch(2)
    out = model(inputs)
    joint = F.cross_entropy(out.logits, labels)
    torch.testing.assert_close(method.loss(out, labels), joint)
    cfg_star = inforeg.make_config(method="inforeg*", overrides={"model.hidden": 8, "model.feature_dim": 6})
    star = build_method(cfg_star, model)
    uni = sum(F.cross_entropy(out.unimodal[m], labels) for m in DIMS)
    torch.testing.assert_close(star.loss(out, labels), joint + uni)
