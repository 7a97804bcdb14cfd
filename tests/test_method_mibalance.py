"""MI-Balance (inforeg.methods.mibalance, RECONSTRUCTED from arXiv 2511.00987): the KD loss, the Gaussian MI
estimator, the CCH gate, the stage-2 weights and the losses of each stage, against hand computations; the
regulate switch; the validation-split requirement; and a short real run."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import inforeg
from inforeg.config import ConfigError, make_config
from inforeg.data import Splits, TensorDataset
from inforeg.methods import EpochState, build_method
from inforeg.methods.mibalance import (cch_gate, gaussian_mi, kd_loss, macro_f1, mi_shares, stage2_weights)
from inforeg.models import build_model

CLASSES = 4
SMALL = {"epochs": 3, "data.n_train": 256, "data.n_test": 256, "data.n_val": 256,
         "mibalance.stage1_epochs": 2, "mibalance.warmup_epochs": 1}


# --- KD loss -----------------------------------------------------------------------------------------------

def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_kd_loss_hand_computation():
    """(1 - lam) CE + lam T^2 KL(p_t^T || p_s^T), averaged over the batch, by hand."""
    s = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
    t = [[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]
    y = [0, 2]
    lam, T = 0.3, 2.0
    total = 0.0
    for si, ti, yi in zip(s, t, y):
        ce = -math.log(_softmax(si)[yi])
        ps, pt = _softmax([v / T for v in si]), _softmax([v / T for v in ti])
        kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
        total += (1 - lam) * ce + lam * T * T * kl
    hand = total / 2
    student = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    got = kd_loss(student, teacher, torch.tensor(y), lam, T)
    assert got.item() == pytest.approx(hand, rel=1e-12)
    got.backward()
    assert teacher.grad is None  # the teacher's logits are detached
    assert student.grad.abs().sum() > 0
    # lam = 0 is plain CE; identical logits make the KL vanish
    assert kd_loss(student, teacher, torch.tensor(y), 0.0, T).item() == pytest.approx(
        F.cross_entropy(student, torch.tensor(y)).item())
    same = kd_loss(student, student, torch.tensor(y), 1.0, T)
    assert same.item() == pytest.approx(0.0, abs=1e-12)


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score
    g = torch.Generator().manual_seed(0)
    y = torch.randint(5, (200,), generator=g)
    pred = torch.where(torch.rand(200, generator=g) < 0.6, y, torch.randint(5, (200,), generator=g))
    pred[pred == 4] = 3  # a class never predicted
    assert macro_f1(pred, y, 6) == pytest.approx(f1_score(y.numpy(), pred.numpy(), average="macro"))


# --- MI estimator and CCH gate ------------------------------------------------------------------------------

def test_gaussian_mi_closed_form():
    """Jointly Gaussian scalars: I = -1/2 log2(1 - rho^2) bits; independent ones: ~0 after de-biasing."""
    g = torch.Generator().manual_seed(1)
    n, rho = 20000, 0.8
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho ** 2) * torch.randn(n, 1, generator=g, dtype=torch.float64)
    exact = -0.5 * math.log2(1 - rho ** 2)
    assert gaussian_mi(x, y, ridge=0.0, nulls=0) == pytest.approx(exact, abs=0.02)
    assert gaussian_mi(x, y, ridge=0.0, nulls=3) == pytest.approx(exact, abs=0.02)
    noise = torch.randn(n, 3, generator=g, dtype=torch.float64)
    assert abs(gaussian_mi(x, noise)) < 0.01
    # deterministic: same inputs, same value
    assert gaussian_mi(x, y) == gaussian_mi(x, y)


def _class_features(y, dim, scale, g):
    protos = torch.randn(CLASSES, dim, generator=g, dtype=torch.float64)
    return scale * protos[y] + torch.randn(len(y), dim, generator=g, dtype=torch.float64)


def test_cch_gate_copy_distils_independent_does_not():
    """A student that is a copy of the teacher: I(H_t; H_s) is large (>= I(H_s; Y) by data processing):
    distil. A student whose class signal and noise are independent of the teacher's given Y (H_t - Y - H_s):
    I(H_t; H_s) <= I(H_s; Y): do not distil. Pure noise: both MIs ~ 0."""
    g = torch.Generator().manual_seed(2)
    y = torch.randint(CLASSES, (600,), generator=g)
    teacher = _class_features(y, 16, 2.0, g)
    mi_ts, mi_sy, ok = cch_gate(teacher, teacher.clone(), y, CLASSES)
    assert ok and mi_ts > mi_sy + 1.0
    student = _class_features(y, 16, 2.0, g)
    mi_ts, mi_sy, ok = cch_gate(teacher, student, y, CLASSES)
    assert not ok and mi_sy > mi_ts + 0.3
    noise = torch.randn(600, 16, generator=g, dtype=torch.float64)
    mi_ts, mi_sy, _ = cch_gate(teacher, noise, y, CLASSES)
    assert abs(mi_ts) < 0.05 and abs(mi_sy) < 0.05


# --- stage-2 weights --------------------------------------------------------------------------------------

def test_stage2_weights_direction_hand_and_clipping():
    """F1 (0.9, 0.5), equal MI shares, gamma 1, beta 0.5: deficits (0.1, 0.5) / 0.3 -> w = (1/3, 5/3)."""
    half = torch.tensor([0.5, 0.5])
    w = stage2_weights(torch.tensor([0.9, 0.5]), half, 1.0, 0.5, 0.1, 2.0, 1e-3).tolist()
    assert w == pytest.approx([1 / 3, 5 / 3])
    # weaker F1 -> larger weight, for any two modalities
    w = stage2_weights(torch.tensor([0.4, 0.8, 0.6]), torch.full((3,), 1 / 3), 1.0, 0.5, 0.1, 2.0, 1e-3)
    assert w[0] > w[2] > w[1]
    # equal modalities -> 1 each
    assert stage2_weights(torch.tensor([0.7, 0.7]), half, 1.0, 0.5, 0.1, 2.0, 1e-3).tolist() == pytest.approx([1, 1])
    # clipping: (0.99, 0.99, 0) -> 3 (0.01, 0.01, 1) / 1.02 = (0.029, 0.029, 2.94) -> (0.1, 0.1, 2.0)
    w = stage2_weights(torch.tensor([0.99, 0.99, 0.0]), torch.full((3,), 1 / 3), 1.0, 0.5, 0.1, 2.0, 1e-3)
    assert w.tolist() == pytest.approx([0.1, 0.1, 2.0])
    # under-used (smaller MI share) -> larger: shares (0.8, 0.2), beta 0.5 -> s = (0.625^.5, 2.5^.5)
    w = stage2_weights(torch.tensor([0.7, 0.7]), torch.tensor([0.8, 0.2]), 1.0, 0.5, 0.0, 9.0, 1e-3).tolist()
    s = [math.sqrt(0.5 / 0.8), math.sqrt(0.5 / 0.2)]
    assert w == pytest.approx([2 * v / sum(s) for v in s])
    # gamma = beta = 0 ablates both terms
    assert stage2_weights(torch.tensor([0.9, 0.1]), torch.tensor([0.9, 0.1]), 0.0, 0.0, 0.1, 2.0,
                          1e-3).tolist() == pytest.approx([1, 1])


def test_mi_shares():
    assert mi_shares(torch.tensor([3.0, 1.0, -0.5])).tolist() == pytest.approx([0.75, 0.25, 0.0])
    assert mi_shares(torch.tensor([-0.1, 0.0])).tolist() == pytest.approx([0.5, 0.5])


# --- the method's hooks on a toy model ----------------------------------------------------------------------

def _dataset(mods, n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(CLASSES, (n,), generator=g)
    return TensorDataset({m: torch.randn(n, 5, generator=g, dtype=torch.float64) + y[:, None] for m in mods}, y)


def _toy(mods=("A", "B"), fusion="concat", **overrides):
    cfg = make_config(method="mibalance", overrides={"model.hidden": 8, "model.feature_dim": 6,
                                                     "model.fusion": fusion, "data.n_val": 64, **overrides})
    torch.manual_seed(0)
    model = build_model(cfg.model, {m: 5 for m in mods}, CLASSES).double()
    splits = Splits(_dataset(mods, 32, 1), _dataset(mods, 32, 2), CLASSES, _dataset(mods, 64, 3))
    return cfg, model, build_method(cfg, model), splits


def _state(epoch, splits, window_open=False):
    return EpochState(epoch, [], {m: (window_open, 0.0) for m in splits.modalities}, splits, "cpu")


def test_stage1_loss_hand_and_teacher_untouched():
    """Distil epoch, teacher A, gate open for B: loss = f0 CE(f) + w_t CE(f_A) + (1-lam) CE(f_B)
    + lam T^2 KL(p_A^T || p_B^T); with w_t = 0 and f0 = 0 the teacher's encoder gets exactly zero gradient."""
    cfg, model, method, splits = _toy(**{"mibalance.teacher_weight": 0.0, "mibalance.distill_lambda": 0.7,
                                         "mibalance.temperature": 3.0})
    method.teacher, method.gate = "A", {"A": None, "B": True}  # as if decided at an earlier epoch
    method.on_epoch_start(_state(4, splits))  # warmup 0-1, distill 2-4
    assert method.stage == "distill" and method.distilled == {"A": False, "B": True}
    batch = next(splits.train.batches(16))
    out = model(batch.inputs)
    loss = method.loss(out, batch.labels)
    fa, fb = out.unimodal["A"].detach(), out.unimodal["B"]
    lp_b, lp_a = F.log_softmax(fb / 3.0, 1), F.log_softmax(fa / 3.0, 1)
    kl = (lp_a.exp() * (lp_a - lp_b)).sum(1).mean()
    hand = 0.3 * F.cross_entropy(fb, batch.labels) + 0.7 * 9.0 * kl
    torch.testing.assert_close(loss, hand)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().max() == 0 for p in model.encoders["A"].parameters())
    assert sum(p.grad.abs().sum() for p in model.encoders["B"].parameters()) > 0
    rec = method.on_epoch_end(_state(4, splits))
    assert rec["mibalance_teacher"] == "A" and rec["mibalance_distilled"] == {"A": False, "B": True}
    assert rec["reg_frac"] == {"A": 0.0, "B": 1.0} and rec["regulated_frac"] == 1.0


def test_warmup_loss_is_unimodal_ce():
    cfg, model, method, splits = _toy(**{"mibalance.stage1_fused_weight": 0.25})
    method.on_epoch_start(_state(0, splits))
    batch = next(splits.train.batches(16))
    out = model(batch.inputs)
    hand = 0.25 * F.cross_entropy(out.logits, batch.labels) + sum(
        F.cross_entropy(out.unimodal[m], batch.labels) for m in ("A", "B"))
    torch.testing.assert_close(method.loss(out, batch.labels), hand)
    assert method.on_epoch_end(_state(0, splits))["mibalance_stage"] == "warmup"


def test_gate_picks_best_f1_teacher_and_copy_student():
    """Teacher = best validation macro-F1; a student whose features copy the teacher's passes the gate,
    one with independent class signal does not."""
    cfg, model, method, splits = _toy(mods=("A", "B", "C"))
    g = torch.Generator().manual_seed(5)
    y = torch.randint(CLASSES, (400,), generator=g)
    h_a = _class_features(y, 6, 2.0, g)
    logits_a = F.one_hot(y, CLASSES).double()  # perfect
    logits_b = torch.randn(400, CLASSES, generator=g, dtype=torch.float64)  # chance
    ev = {"features": {"A": h_a, "B": h_a.clone(), "C": _class_features(y, 6, 2.0, g)},
          "unimodal": {"A": logits_a, "B": logits_b, "C": logits_b}, "labels": y, "num_classes": CLASSES}
    method._decide_gate(ev)
    assert method.teacher == "A" and method.gate == {"A": None, "B": True, "C": False}
    assert method.mi_ts["B"] > method.mi_sy["B"] and method.mi_ts["C"] < method.mi_sy["C"]


def test_gate_ablation_settings():
    for gate, expected in (("always", True), ("never", False)):
        cfg, model, method, splits = _toy(**{"mibalance.gate": gate})
        method.on_epoch_start(_state(2, splits))  # first distil epoch: decides from the validation split
        assert method.teacher in ("A", "B")
        student = "B" if method.teacher == "A" else "A"
        assert method.gate[student] is expected and method.distilled[student] is expected
        assert isinstance(method.mi_ts[student], float) and isinstance(method.mi_sy[student], float)


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_stage2_loss_hand_every_fusion(fusion):
    """Stage 2 with three modalities: loss = w0 CE(f) + sum_m w_m CE(f_m), w from stage2_weights on the
    logged validation F1 and MI shares."""
    cfg, model, method, splits = _toy(mods=("A", "B", "C"), fusion=fusion, **{"mibalance.fused_weight": 0.5})
    method.on_epoch_start(_state(5, splits))
    batch = next(splits.train.batches(16))
    out = model(batch.inputs)
    rec = method.on_epoch_end(_state(5, splits))
    mods = ("A", "B", "C")
    w = rec["mibalance_weights"]
    expect = stage2_weights(torch.tensor([rec["mibalance_val_f1"][m] for m in mods]),
                            torch.tensor([rec["mibalance_mi_share"][m] for m in mods]), 1.0, 0.5, 0.1, 2.0, 1e-3)
    assert [w[m] for m in mods] == pytest.approx(expect.tolist())
    assert rec["alpha"] == w and rec["reg_frac"] == {m: 1.0 for m in mods}
    assert sum(rec["mibalance_mi_share"].values()) == pytest.approx(1.0)
    hand = 0.5 * F.cross_entropy(out.logits, batch.labels) + sum(
        w[m] * F.cross_entropy(out.unimodal[m], batch.labels) for m in mods)
    loss = method.loss(out, batch.labels)
    torch.testing.assert_close(loss, hand)
    loss.backward()


def test_regulate_switch():
    """regulate=outside with the window open: no KD even when the gate passes, and every stage-2 weight is
    uniform_weight; regulate=window with it open: both act."""
    cfg, model, method, splits = _toy(**{"method.regulate": "outside", "mibalance.uniform_weight": 0.7})
    method.teacher, method.gate = "A", {"A": None, "B": True}
    method.on_epoch_start(_state(3, splits, window_open=True))
    assert method.distilled == {"A": False, "B": False}
    batch = next(splits.train.batches(16))
    out = model(batch.inputs)
    hand = sum(F.cross_entropy(out.unimodal[m], batch.labels) for m in ("A", "B"))
    torch.testing.assert_close(method.loss(out, batch.labels), hand)
    assert method.on_epoch_end(_state(3, splits, True))["regulated_frac"] == 0.0
    method.on_epoch_start(_state(6, splits, window_open=True))
    rec = method.on_epoch_end(_state(6, splits, True))
    assert rec["mibalance_weights"] == {"A": 0.7, "B": 0.7} and rec["alpha"] == {"A": None, "B": None}
    assert rec["reg_frac"] == {"A": 0.0, "B": 0.0}

    cfg, model, method, splits = _toy(**{"method.regulate": "window"})
    method.teacher, method.gate = "A", {"A": None, "B": True}
    method.on_epoch_start(_state(3, splits, window_open=True))
    assert method.distilled == {"A": False, "B": True}


def test_state_dict_roundtrip():
    cfg, model, method, splits = _toy(**{"mibalance.gate": "always", "mibalance.period": 3})
    method.on_epoch_start(_state(2, splits))
    method.on_epoch_start(_state(5, splits))
    other = build_method(cfg, model)
    other.load_state_dict(method.state_dict())
    assert other.teacher == method.teacher and other.gate == method.gate and other.weights == method.weights
    other.on_epoch_start(_state(6, splits))  # period 3: keeps the restored weights, no refresh
    assert other.applied == method.weights


def test_needs_validation_split():
    """make_config gives MI-Balance a validation split; without one (n_val 0) it fails naming data.n_val."""
    assert make_config(method="mibalance").data.n_val > 0
    cfg = make_config(method="mibalance", overrides={"epochs": 1, "data.n_train": 64, "data.n_test": 64,
                                                      "data.n_val": 0})
    with pytest.raises(ConfigError, match="data.n_val"):
        inforeg.train(cfg, progress=False)
    cfg, model, method, splits = _toy()
    with pytest.raises(ConfigError, match="data.n_val"):
        method.on_epoch_start(_state(0, Splits(splits.train, splits.test, CLASSES)))
    with pytest.raises(ConfigError, match="mibalance.gate"):
        _toy(**{"mibalance.gate": "maybe"})


# --- a short real run ---------------------------------------------------------------------------------------

def test_short_real_run_differs_from_joint():
    """Teaching data, 3 epochs: warm-up, distil (gate logged), multitask (weights logged); training differs
    from joint's on the same data."""
    mib = inforeg.train(make_config(method="mibalance", overrides=SMALL), progress=False)
    joint = inforeg.train(make_config(method="joint", overrides={k: v for k, v in SMALL.items()
                                                                  if not k.startswith("mibalance")}),
                          progress=False)
    h = mib.history
    assert [r["mibalance_stage"] for r in h] == ["warmup", "distill", "multitask"]
    teacher = h[1]["mibalance_teacher"]
    student = "B" if teacher == "A" else "A"
    assert teacher in ("A", "B")
    assert isinstance(h[1]["mibalance_gate"][student], bool)
    assert h[1]["mibalance_distilled"][student] == h[1]["mibalance_gate"][student]
    for key in ("mibalance_mi_teacher_student", "mibalance_mi_student_label"):
        assert math.isfinite(h[1][key][student]) and h[1][key][teacher] is None
    w = h[2]["mibalance_weights"]
    assert all(0.1 <= w[m] <= 2.0 for m in ("A", "B")) and w == h[2]["alpha"]
    assert all(h[2][k][m] is not None for k in ("mibalance_val_f1", "mibalance_mi_fused") for m in ("A", "B"))
    assert [r["train_loss"] for r in h] != pytest.approx([r["train_loss"] for r in joint.history], rel=1e-3)
    assert [r["test_acc"] for r in h] != [r["test_acc"] for r in joint.history]
    mib.to_json()  # every logged value is JSON (no NaN)
