"""OGM / OGM-GE (inforeg.methods.ogm): the leader's weight gradients times 1 - tanh(alpha rho), the others' and
every bias left alone; GE noise with the unmodulated gradient's std; the regulate switch; a real run."""
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


def _setup(name="ogm", dims=DIMS, seed=0, hidden=8, feature_dim=6, **overrides):
    cfg = inforeg.make_config(method=name, overrides={"model.hidden": hidden, "model.feature_dim": feature_dim,
                                                      **overrides})
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
    return out, before, after


def _hand_k(out, labels, alpha):
    """Official rule by hand: s_m = batch sum of true-class probabilities; rho_m = s_m / min s; k = 1 - tanh."""
    s = {m: sum(math.exp(z[y]) / sum(math.exp(v) for v in z) for z, y in zip(f.tolist(), labels.tolist()))
         for m, f in out.unimodal.items()}
    low = min(s.values())
    return {m: (1 - math.tanh(alpha * v / low) if v > low else 1.0) for m, v in s.items()}


def _owner(name):
    """The modality of an encoder parameter's name, None for the fusion's."""
    parts = name.split(".")
    return parts[1] if parts[0] == "encoders" else None


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
@pytest.mark.parametrize("dims", [DIMS, DIMS3], ids=["2mod", "3mod"])
def test_leader_weight_gradients_scaled_by_one_minus_tanh(fusion, dims):
    """Every modality above the weakest gets its encoder's Linear-weight gradients times 1 - tanh(alpha rho_m)
    (rho_m = s_m / s_min, s = batch sum of true-class probabilities); the weakest, all biases and the fusion
    are untouched; no noise without GE."""
    cfg, model, method = _setup(dims=dims, **{"model.fusion": fusion})
    state = EpochState(0, [], CLOSED)  # make_config: regulate = always
    method.on_epoch_start(state)
    inputs, labels = _batch(dims, 2)
    out, before, after = _step(model, method, state, inputs, labels)
    k = _hand_k(out, labels, cfg.ogm.alpha)
    assert sum(v < 1 for v in k.values()) == len(dims) - 1
    params = dict(model.named_parameters())
    for n, p in params.items():
        m = _owner(n)
        if m is not None and p.ndim == 2 and k[m] < 1:
            assert k[m] < 1 - math.tanh(cfg.ogm.alpha) + 1e-12  # rho > 1: at most 0.336 for alpha = 0.8
            torch.testing.assert_close(after[n], k[m] * before[n], rtol=1e-12, atol=0)
            assert before[n].abs().max() > 0
        else:
            assert torch.equal(after[n], before[n]), n


@pytest.mark.parametrize("lead", ["A", "B"])
def test_the_leader_is_the_one_slowed(lead):
    """Labels chosen to favour one modality's unimodal logits: that modality is slowed, the other is not."""
    cfg, model, method = _setup(seed=3)
    inputs, _ = _batch(DIMS, 5)
    with torch.no_grad():
        labels = model(inputs).unimodal[lead].argmax(1)
    state = EpochState(0, [], CLOSED)
    method.on_epoch_start(state)
    out, before, after = _step(model, method, state, inputs, labels)
    k = _hand_k(out, labels, cfg.ogm.alpha)
    assert k[lead] < 1 and all(v == 1 for m, v in k.items() if m != lead)
    weight = f"encoders.{lead}.0.weight"
    torch.testing.assert_close(after[weight], k[lead] * before[weight], rtol=1e-12, atol=0)
    other = "B" if lead == "A" else "A"
    assert torch.equal(after[f"encoders.{other}.0.weight"], before[f"encoders.{other}.0.weight"])


def test_ogm_ge_noise_has_the_unmodulated_gradients_std():
    """OGM-GE: after - k * before is Gaussian noise with the std of the *unmodulated* gradient, on the weights
    of every encoder (leader and laggard); biases and the fusion are untouched."""
    cfg, model, method = _setup("ogm_ge", dims={"A": 40, "B": 30}, hidden=64, feature_dim=32)
    state = EpochState(0, [], CLOSED)
    method.on_epoch_start(state)
    inputs, labels = _batch({"A": 40, "B": 30}, 2, n=64)
    out, before, after = _step(model, method, state, inputs, labels)
    k = _hand_k(out, labels, cfg.ogm.alpha)
    for n, p in model.named_parameters():
        m = _owner(n)
        if m is None or p.ndim < 2:
            assert torch.equal(after[n], before[n]), n
            continue
        noise = after[n] - k[m] * before[n]
        z = noise / (before[n].std() + 1e-8)
        assert abs(z.std().item() - 1) < 0.1, (n, z.std().item())  # the leader's k * std would give ~0.33
        assert abs(z.mean().item()) < 0.1
    report = method.on_epoch_end(state)
    assert set(report["ogm_noise_std"]) == set(DIMS) and all(v > 0 for v in report["ogm_noise_std"].values())


def test_ogm_ge_noise_resumes_from_state_dict():
    """The noise generator's state goes through state_dict: a restored method draws the same noise."""
    _, model, method = _setup("ogm_ge")
    state = EpochState(0, [], CLOSED)
    method.on_epoch_start(state)
    inputs, labels = _batch(DIMS, 2)
    _step(model, method, state, inputs, labels)
    saved = method.state_dict()
    _, _, first = _step(model, method, state, inputs, labels)
    other = build_method(method.cfg, model)
    other.load_state_dict(saved)
    other.on_epoch_start(state)
    _, _, again = _step(model, other, state, inputs, labels)
    assert all(torch.equal(first[n], again[n]) for n in first)


@pytest.mark.parametrize("name", ["ogm", "ogm_ge"])
@pytest.mark.parametrize("regulate,window,epoch,acts", [
    ("window", CLOSED, 3, False),
    ("window", OPEN, 3, True),
    ("always", CLOSED, 0, True),
    ("outside", CLOSED, 3, True),
    ("outside", OPEN, 3, False),
    ("outside", CLOSED, 1, False),
])
def test_regulate_switch(name, regulate, window, epoch, acts):
    """method.regulate decides the epochs in which gradients are modulated (and noised)."""
    _, model, method = _setup(name, **{"method.regulate": regulate})
    state = EpochState(epoch, [], window)
    method.on_epoch_start(state)
    _, before, after = _step(model, method, state, *_batch(DIMS, 2))
    assert any(not torch.equal(after[n], before[n]) for n in before) is acts
    assert (method.on_epoch_end(state)["regulated_frac"] > 0) is acts


def test_only_modalities_whose_regulation_is_active_are_modulated():
    """Window open for the laggard only (regulate=window): the leader is not slowed, nothing changes."""
    cfg, model, method = _setup(**{"method.regulate": "window"})
    inputs, labels = _batch(DIMS, 2)
    with torch.no_grad():
        k = _hand_k(model(inputs), labels, cfg.ogm.alpha)
    laggard = max(k, key=k.get)  # its k is 1
    state = EpochState(3, [], {m: (m == laggard, 0.0) for m in DIMS})
    method.on_epoch_start(state)
    _, before, after = _step(model, method, state, inputs, labels)
    assert all(torch.equal(after[n], before[n]) for n in before)


def test_on_epoch_end_reports_coefficients_and_fractions():
    """alpha = mean k over the batches where m was slowed, reg_frac = their share, ogm_coef = mean k overall."""
    cfg, model, method = _setup(seed=1)
    state = EpochState(0, [], CLOSED)
    method.on_epoch_start(state)
    ks = []
    for b in range(8):
        inputs, labels = _batch(DIMS, 20 + b, n=8)
        out, _, _ = _step(model, method, state, inputs, labels)
        ks.append(_hand_k(out, labels, cfg.ogm.alpha))
    report = method.on_epoch_end(state)
    for m in DIMS:
        slowed = [k[m] for k in ks if k[m] < 1]
        assert slowed, "each modality should lead at least once over these batches"
        assert report["alpha"][m] == pytest.approx(sum(slowed) / len(slowed), rel=1e-9)
        assert report["reg_frac"][m] == pytest.approx(len(slowed) / len(ks))
        assert report["ogm_coef"][m] == pytest.approx(sum(k[m] for k in ks) / len(ks), rel=1e-9)
    assert report["regulated_frac"] == pytest.approx(1.0)
    assert "ogm_noise_std" not in report


@pytest.fixture(scope="module")
def joint_run():
    return inforeg.train(inforeg.make_config(method="joint", overrides=QUICK), progress=False)


QUICK = {"epochs": 3, "data.n_train": 256, "data.n_test": 256}


@pytest.mark.parametrize("name", ["ogm", "ogm_ge"])
def test_real_run_differs_from_joint(name, joint_run):
    """A short real run: the leader is slowed on most batches and the training differs from joint's."""
    run = inforeg.train(inforeg.make_config(method=name, overrides=QUICK), progress=False)
    assert all(h["regulated_frac"] > 0.5 for h in run.history)
    assert all(0 < h["ogm_coef"][m] < 1 for h in run.history for m in h["ogm_coef"])
    joint_loss = joint_run.series("train_loss")
    assert max(abs(a - b) for a, b in zip(run.series("train_loss"), joint_loss)) > 1e-4
