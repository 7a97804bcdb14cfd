"""get_or_run_grid: one call over a nested grid, results in the grid's own shape."""
import pytest

from inforeg import make_config
from inforeg.experiments import get_or_run_grid, over_seeds
from inforeg.runs import get_or_run

SMALL = {"epochs": 2, "data.n_train": 128, "data.n_test": 128}


def test_grid_keeps_its_shape_and_matches_single_runs(tmp_path):
    """Nested dicts, lists and tuple keys come back with each config replaced by its own result."""
    grid = {"joint": over_seeds("joint", [0, 1], overrides=SMALL),
            ("InfoReg", "window"): {"first": over_seeds("inforeg", [0], overrides=SMALL)},
            "one": make_config(method="joint", seed=0, overrides=SMALL)}  # a duplicate of grid["joint"][0]
    out = get_or_run_grid(grid, cache_dir=tmp_path / "grid", progress=False, workers=1)
    assert list(out) == list(grid)
    assert [r.config["seed"] for r in out["joint"]] == [0, 1]
    assert out["InfoReg", "window"]["first"][0].config["method"]["name"] == "inforeg"
    for got, cfg in ((out["joint"][1], grid["joint"][1]), (out["one"], grid["one"]),
                     (out["InfoReg", "window"]["first"][0], grid["InfoReg", "window"]["first"][0])):
        assert got.config == cfg.to_json_dict()
        assert got.history[-1]["test_acc"] == get_or_run(cfg, cache_dir=tmp_path / "single").history[-1]["test_acc"]
    assert len(list((tmp_path / "grid").iterdir())) == 3  # the duplicate trained once


def test_grid_rejects_what_is_not_a_config(tmp_path):
    with pytest.raises(TypeError, match="expected RunConfigs"):
        get_or_run_grid({"joint": ["not a config"]}, cache_dir=tmp_path, progress=False)
