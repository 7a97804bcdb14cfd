"""The `official` preset: one test per quirk of the official code (PAPER.md section 3), each checking behaviour."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import inforeg
from inforeg.methods import EpochState, build_method
from inforeg.models import build_model
from inforeg.window import official_window, window_state

DIMS = {"A": 5, "B": 4}
SMALL = {"model.hidden": 8, "model.feature_dim": 6}


def _official(dataset: str = "teaching", **overrides):
    return inforeg.make_config(dataset, method="inforeg", preset="official", overrides={**SMALL, **overrides})


def _model(cfg, dims=DIMS, classes: int = 4, seed: int = 1):
    torch.manual_seed(seed)
    return build_model(cfg.model, dims, classes).double()


def _inputs(seed: int, n: int = 64, dims=DIMS):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, d, generator=g, dtype=torch.float64) for m, d in dims.items()}


def _window(cfg, traces):
    wc = cfg.window
    return window_state(wc.rule, traces, tuple(traces), wc.K, wc.min_epoch, wc.threshold, wc.span, wc.watch)


def test_a_loss_always_includes_unimodal_cross_entropies():
    """(a) loss = CE(fused) + CE(f_A) + CE(f_B), f_m from the split head (h_m W_m^T + b/2), not CE(fused) alone."""
    cfg = _official()
    model = _model(cfg)
    method = build_method(cfg, model)
    inputs, labels = _inputs(0, n=16), torch.arange(16) % 4
    out = model(inputs)
    W, b = model.fusion.head.weight, model.fusion.head.bias
    hA, hB = out.features["A"], out.features["B"]
    f_a = hA @ W[:, :6].T + b / 2
    f_v = hB @ W[:, 6:].T + b / 2
    fused = torch.cat([hA, hB], 1) @ W.T + b
    expected = F.cross_entropy(fused, labels) + F.cross_entropy(f_a, labels) + F.cross_entropy(f_v, labels)
    got = method.loss(out, labels)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert got.item() > F.cross_entropy(fused, labels).item() + 1.0


@pytest.mark.parametrize("lead,c", [("A", 0.95), ("B", 0.1)])
def test_b_summed_score_saturates_coefficient(lead, c):
    """(b) The score is the batch sum of true-class probabilities, so the realised pull is c_m exp(tanh(Delta_sum))
    (w - w_start) with c = (0.95, 0.1), and tanh saturates: alpha ~ c_m e although the mean gap is small."""
    cfg = _official()
    model = _model(cfg)
    with torch.no_grad():
        model.fusion.head.weight.mul_(10)  # confident unimodal logits, like a trained model
    method = build_method(cfg, model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = EpochState(0, [], {"A": (True, 1.0), "B": (True, 1.0)})
    method.on_epoch_start(state)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    inputs = _inputs(1)
    with torch.no_grad():
        labels = model(inputs).unimodal[lead].argmax(1)
    model.zero_grad(set_to_none=True)
    out = model(inputs)
    method.loss(out, labels).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.after_backward(out, labels, state)

    probs = {m: F.softmax(out.unimodal[m].detach(), 1)[torch.arange(64), labels] for m in DIMS}
    other = "B" if lead == "A" else "A"
    delta_sum = float(probs[lead].sum() - probs[other].sum())
    delta_mean = float(probs[lead].mean() - probs[other].mean())
    alpha = c * math.exp(math.tanh(delta_sum))
    assert alpha == pytest.approx(c * math.e, rel=1e-3)  # saturated
    assert math.tanh(delta_mean) < 0.5  # the paper's mean score would be far from saturation
    for n, p in model.named_parameters():
        expected = alpha * (p.detach() - start[n]) if n.startswith(f"encoders.{lead}.") else torch.zeros_like(p)
        torch.testing.assert_close(p.grad - before[n], expected, rtol=1e-6, atol=1e-12)
    assert method.on_epoch_end(state)["alpha"][lead] == pytest.approx(alpha, rel=1e-6)


def test_c_window_watches_first_modality_moving_average():
    """(c) One verdict for all modalities from the first modality's 10-epoch moving average padded with zeros:
    a flat A trace keeps the window open while zeros are in the average, whatever B does, then closes it for all."""
    cfg = _official()
    flat_a = {"A": [5.0, 5.0, 5.0], "B": [9.0, 3.0, 0.1]}  # k = (15/10 - 10/10) / (15/10) = 1/3
    state = _window(cfg, flat_a)
    assert state == {"A": (True, pytest.approx(1 / 3)), "B": (True, pytest.approx(1 / 3))}
    assert official_window(flat_a["B"])[0] is False  # B's own trace would have said closed
    late = {"A": [5.0] * 11, "B": [float(2 ** i) for i in range(11)]}  # A's average has stopped moving
    state = _window(cfg, late)
    assert state == {"A": (False, 0.0), "B": (False, 0.0)}
    assert official_window(late["B"])[0] is True  # B's own trace would have said open


def test_d_regulation_may_start_at_epoch_zero():
    """(d) min_epoch 0: with no traces the window is open (k = 1) for all, and InfoReg pulls at epoch 0;
    the paper preset keeps epoch 0 closed."""
    cfg = _official()
    window = _window(cfg, {"A": [], "B": []})
    assert window == {"A": (True, 1.0), "B": (True, 1.0)}
    paper = inforeg.make_config(method="inforeg", overrides=SMALL)
    assert _window(paper, {"A": [], "B": []})["A"][0] is False

    model = _model(cfg)
    method = build_method(cfg, model)
    state = EpochState(0, [], window)
    method.on_epoch_start(state)
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.05)
    inputs, labels = _inputs(3, n=16), torch.arange(16) % 4
    out = model(inputs)
    method.loss(out, labels).backward()
    before = [p.grad.clone() for p in model.encoders.parameters()]
    method.after_backward(out, labels, state)
    changed = [not torch.equal(p.grad, b) for p, b in zip(model.encoders.parameters(), before)]
    assert any(changed)
    assert method.on_epoch_end(state)["regulated_frac"] == 1.0


@pytest.fixture(scope="module")
def official_run():
    cfg = inforeg.make_config(method="inforeg", preset="official",
                              overrides={"epochs": 3, "data.n_train": 256, "data.n_test": 256})
    return cfg, inforeg.train(cfg, progress=False)


def test_e_window_driven_by_official_proxy_trace(official_run):
    """(e) trace='official': each epoch's window statistic is official_window of modality A's earlier proxy traces
    (the same for B), and differs from what the exact per-sample trace would have given."""
    cfg, result = official_run
    assert cfg.method.trace == "official"
    history = result.history
    assert len(history) == 3
    assert all(h["trace_official"][m] > 0 for h in history for m in ("A", "B", "all"))
    for e, record in enumerate(history):
        expected_open, expected_k = official_window([h["trace_official"]["A"] for h in history[:e]])
        for m in ("A", "B"):
            assert record["window_stat"][m] == pytest.approx(expected_k, rel=1e-12)
            assert record["window"][m] is expected_open
    exact_k = official_window([h["trace"]["A"] for h in history[:2]])[1]
    assert history[2]["window_stat"]["A"] != pytest.approx(exact_k, rel=1e-3)


def test_d_training_regulates_from_epoch_zero(official_run):
    """(d) In a real run the window is open at epoch 0 and some batches of epoch 0 are regulated."""
    _, result = official_run
    first = result.history[0]
    assert first["window"] == {"A": True, "B": True}
    assert first["regulated_frac"] > 0
    assert sum(first["reg_frac"].values()) > 0


def test_f_official_c_must_match_modality_count():
    """(f) Two official prefactors on a three-modality run raise a clear ValueError; three are accepted."""
    dims3 = {"A": 5, "B": 4, "C": 3}
    cfg = _official("teaching3")
    model = _model(cfg, dims3)
    with pytest.raises(ValueError, match="official_c"):
        build_method(cfg, model)
    ok = _official("teaching3", **{"method.official_c": (0.95, 0.1, 0.5)})
    assert build_method(ok, model).official_c.tolist() == pytest.approx([0.95, 0.1, 0.5])
