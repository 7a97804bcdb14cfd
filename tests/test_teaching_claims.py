"""The teaching dataset shows what the paper is about (../shared/TEACHING.md, default set-up, seeds 0-4):
joint training leaves B under-trained, and InfoReg (paper preset) recovers part of the gap.

About 15 runs of 30 epochs; `pytest -s` prints the table of numbers. Under ./run_tests.sh they go to the
run's shared cache ($INFOREG_CACHE_DIR), where notebook 00_quickstart later finds the same configs."""
from __future__ import annotations

import os

import numpy as np
import pytest

from inforeg.config import make_config
from inforeg.experiments import get_or_run_grid

SEEDS = range(5)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """B alone, joint and InfoReg (paper) on the default teaching dataset, seeds 0-4, 30 epochs."""
    cfgs = {
        "B alone": [make_config(method="joint", seed=s, overrides={"data.modalities": ("B",)}) for s in SEEDS],
        "joint": [make_config(method="joint", seed=s) for s in SEEDS],
        "inforeg": [make_config(method="inforeg", preset="paper", seed=s) for s in SEEDS],
    }
    cache = os.environ.get("INFOREG_CACHE_DIR") or tmp_path_factory.mktemp("teaching_claims")
    out = get_or_run_grid(cfgs, cache_dir=cache, progress=False)
    assert all(r.cfg.epochs == 30 for rs in out.values() for r in rs)
    _print_table(out)
    return out


def _print_table(out) -> None:
    rows = [("B alone", "overall", lambda r: r.test_acc),
            ("B alone", "B probe", lambda r: r.probe_acc_by_modality["B"]),
            ("joint", "overall", lambda r: r.test_acc),
            ("joint", "B split", lambda r: r.test_acc_by_modality["B"]),
            ("joint", "B probe", lambda r: r.probe_acc_by_modality["B"]),
            ("inforeg", "overall", lambda r: r.test_acc),
            ("inforeg", "B split", lambda r: r.test_acc_by_modality["B"]),
            ("inforeg", "B probe", lambda r: r.probe_acc_by_modality["B"])]
    print("\nteaching dataset, 30 epochs, accuracy % per seed")
    print(f"{'run':9s} {'metric':8s} " + " ".join(f"s{s:<4d}" for s in SEEDS) + "  mean")
    for name, metric, get in rows:
        vals = [100 * get(r) for r in out[name]]
        print(f"{name:9s} {metric:8s} " + " ".join(f"{v:5.1f}" for v in vals) + f"  {np.mean(vals):5.1f}")
    gains = [100 * (i.test_acc - j.test_acc) for i, j in zip(out["inforeg"], out["joint"])]
    print(f"{'gain':9s} {'overall':8s} " + " ".join(f"{g:+5.1f}" for g in gains) + f"  {np.mean(gains):+5.1f}")


def _mean(results, name, get) -> float:
    return 100 * float(np.mean([get(r) for r in results[name]]))


def test_b_alone_beats_b_inside_joint_on_the_split_head(results):
    """B trained alone beats B's split head inside joint training by at least 15 points (mean of 5 seeds)."""
    alone = _mean(results, "B alone", lambda r: r.test_acc_by_modality["B"])
    inside = _mean(results, "joint", lambda r: r.test_acc_by_modality["B"])
    assert alone - inside >= 15, (alone, inside)


def test_b_alone_beats_b_inside_joint_with_the_probe(results):
    """B trained alone beats a linear probe on joint training's B features by at least 5 points (mean)."""
    alone = _mean(results, "B alone", lambda r: r.probe_acc_by_modality["B"])
    inside = _mean(results, "joint", lambda r: r.probe_acc_by_modality["B"])
    assert alone - inside >= 5, (alone, inside)


def test_b_alone_runs_really_used_b_only(results):
    """The B-alone runs trained one modality, B, and their overall accuracy is B's."""
    for r in results["B alone"]:
        assert list(r.test_acc_by_modality) == ["B"]
        assert r.test_acc == r.test_acc_by_modality["B"]


def test_inforeg_beats_joint_on_the_mean(results):
    """InfoReg (paper preset) beats joint training by at least 3 points overall, mean of 5 seeds."""
    gain = _mean(results, "inforeg", lambda r: r.test_acc) - _mean(results, "joint", lambda r: r.test_acc)
    assert gain >= 3, gain


def test_inforeg_beats_joint_on_every_seed(results):
    """InfoReg beats joint training by at least 3 points overall on each of seeds 0-4."""
    for i, j in zip(results["inforeg"], results["joint"]):
        assert i.cfg.seed == j.cfg.seed
        assert 100 * (i.test_acc - j.test_acc) >= 3, (i.cfg.seed, i.test_acc, j.test_acc)


def test_inforeg_regulates_the_dominant_modality_early(results):
    """InfoReg's gain comes from regulation: A is regulated in some epochs, never before epoch 2."""
    for r in results["inforeg"]:
        reg_a = r.series("reg_frac", "A")
        assert reg_a[0] == 0 and reg_a[1] == 0
        assert max(reg_a) > 0
