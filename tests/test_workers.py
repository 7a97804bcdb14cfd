"""get_or_run_all trains missing runs in worker processes with exactly the numbers of a serial run."""
import json

import pytest

from inforeg import make_config
from inforeg.runs import get_or_run_all
from inforeg.train import TIMING_KEYS

SMALL = {"epochs": 2, "data.n_train": 128, "data.n_test": 128}


def _numbers(result):
    d = json.loads(result.to_json())
    d["history"] = [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in d["history"]]
    return d


def test_two_workers_give_the_serial_results(tmp_path):
    """Three configs in two worker processes equal the same configs trained in-process, in input order."""
    cfgs = [make_config(method=m, seed=s, overrides=SMALL) for m, s in (("joint", 0), ("inforeg", 1), ("joint", 2))]
    parallel = get_or_run_all(cfgs, cache_dir=tmp_path / "par", workers=2, progress=False)
    serial = get_or_run_all(cfgs, cache_dir=tmp_path / "ser", workers=1, progress=False)
    assert [_numbers(r) for r in parallel] == [_numbers(r) for r in serial]
    assert [r.config["seed"] for r in parallel] == [0, 1, 2]


def test_a_failing_worker_is_reported(tmp_path):
    """A worker that cannot write its results makes get_or_run_all raise with the worker's output."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    cfgs = [make_config(seed=s, overrides=SMALL) for s in range(2)]
    with pytest.raises(RuntimeError, match="worker process failed"):
        get_or_run_all(cfgs, cache_dir=blocked, workers=2, progress=False)
