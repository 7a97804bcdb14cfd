"""inforeg.launch's ray backend against a local Ray that the test starts (ray.init(num_cpus=2)) and shuts down.

Needs the `ray` extra (pip install 'inforeg[ray]'). Without it the tests fail, saying so, unless
INFOREG_SKIP_RAY=1 is set: then they are skipped with that reason."""
from __future__ import annotations

import os
import signal
import time

import pytest
from test_launch import LONG, SMALL, attempt, numbers, reference, started_midway, wait_until

from inforeg import make_config
from inforeg.launch import collect, launch
from inforeg.runs import entry_dir


@pytest.fixture(scope="module")
def local_ray():
    try:
        import ray
    except ImportError:
        if os.environ.get("INFOREG_SKIP_RAY") == "1":
            pytest.skip("ray is not installed and INFOREG_SKIP_RAY=1")
        pytest.fail("ray is not installed, so the ray backend cannot be tested: pip install 'inforeg[ray]' "
                    "(or set INFOREG_SKIP_RAY=1 to skip these tests)")
    t0 = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")  # loopback only
    print(f"local Ray started in {time.monotonic() - t0:.1f} s")
    yield ray
    ray.shutdown()


def test_ray_tasks_give_get_or_run_results(local_ray, tmp_path):
    """Three runs as Ray tasks: launch returns before they finish; the numbers equal get_or_run's."""
    cache = tmp_path / "cache"
    cfgs = [make_config(method=m, seed=s, overrides=SMALL) for m, s in (("joint", 0), ("inforeg", 1), ("joint", 2))]
    t0 = time.monotonic()
    handle = launch(cfgs, backend="ray", cache_dir=cache)
    assert time.monotonic() - t0 < 5.0
    assert not handle.status().complete
    assert handle.wait(timeout=300).complete
    got = collect(cfgs, cache)
    assert [numbers(r) for r in got.results] == [reference(c, tmp_path) for c in cfgs]
    assert {attempt(c, cache)["backend"] for c in cfgs} == {"ray"}
    assert all(attempt(c, cache)["pid"] != os.getpid() for c in cfgs)  # they ran in Ray's worker processes


def test_killed_ray_worker_run_is_lost_then_the_only_one_rerun(local_ray, tmp_path):
    """SIGKILL the Ray worker process training the long run: it is reported lost (Ray does not retry it:
    max_retries=0), the short run finishes, and the next launch trains only the lost one, to the numbers of
    an uninterrupted run."""
    cache = tmp_path / "cache"
    long, short = make_config(seed=0, overrides=LONG), make_config(seed=1, overrides=SMALL)
    handle = launch([long, short], backend="ray", cache_dir=cache)
    wait_until(lambda: started_midway(long, cache), what="the long run to checkpoint")
    victim = attempt(long, cache)["pid"]
    os.kill(victim, signal.SIGKILL)
    report = {r.hash: r for r in handle.wait(timeout=300)}
    assert report[long.hash()].state == "lost" and f"pid {victim}" in report[long.hash()].detail
    assert report[short.hash()].state == "done"
    assert not (entry_dir(long, cache) / "result.json").exists()
    assert collect([long, short], cache).results[0] is None

    rerun = launch([long, short], backend="ray", cache_dir=cache)
    assert rerun.started == [long]
    assert rerun.wait(timeout=300).complete
    assert numbers(collect([long], cache).results[0]) == reference(long, tmp_path)
