"""inforeg.cost.step_cost: the structure of its answer and its errors (no timing is asserted: machines are noisy)."""
import importlib
import math

import pytest

from inforeg import cost, make_config

train = importlib.import_module("inforeg.train")  # the module: inforeg.train is also the function

SMALL = {"data.n_train": 256, "data.n_test": 128}


def test_step_cost_reports_every_method_against_the_reference():
    cfgs = {"joint": make_config(method="joint", overrides=SMALL), "OGM": make_config(method="ogm", overrides=SMALL)}
    probe = train.linear_probe
    out = cost.step_cost(cfgs, reference="joint", epochs=2, rounds=2)
    assert list(out) == ["joint", "OGM"]
    assert out["joint"]["ratio"] == 1.0 and out["joint"]["ratio_low"] == out["joint"]["ratio_high"] == 1.0
    for v in out.values():
        assert v["ms_per_step"] > 0 and math.isfinite(v["ratio"])
        assert v["ratio_low"] <= v["ratio"] <= v["ratio_high"]
    assert train.linear_probe is probe  # the probe skipped during the measurement is back


def test_step_cost_errors():
    cfgs = {"joint": make_config(method="joint", overrides=SMALL)}
    with pytest.raises(KeyError, match="reference 'ogm'"):
        cost.step_cost(cfgs, reference="ogm")
    with pytest.raises(ValueError, match="epochs >= 2"):
        cost.step_cost(cfgs, reference="joint", epochs=1)


def test_history_counts_the_steps_and_times_them():
    r = train.train(make_config(method="joint", overrides={**SMALL, "epochs": 2}), progress=False)
    assert [h["train_steps"] for h in r.history] == [4, 4]  # 256 samples in batches of 64
    assert all(0 < h["train_seconds"] <= h["seconds"] for h in r.history)
