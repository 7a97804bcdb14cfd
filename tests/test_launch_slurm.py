"""inforeg.launch's slurm backend against a real single-node SLURM cluster (Debian's slurm-wlm and munge on
127.0.0.1) that scripts/slurm_cluster.sh installs if needed, starts for this test and stops after it.

Needs root and apt-get when slurm-wlm is not installed, and the `slurm` extra (submitit). Without them the
test fails, saying what is missing, unless INFOREG_SKIP_SLURM=1 is set: then it is skipped with that reason."""
from __future__ import annotations

import importlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_launch import LONG, SMALL, attempt, numbers, reference, started_midway, wait_until

from inforeg import make_config
from inforeg.launch import collect, launch
from inforeg.runs import entry_dir

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm_cluster.sh"


def _unavailable(reason: str):
    if os.environ.get("INFOREG_SKIP_SLURM") == "1":
        pytest.skip(f"{reason} (INFOREG_SKIP_SLURM=1)")
    pytest.fail(f"{reason}; set INFOREG_SKIP_SLURM=1 to skip this test instead")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    try:
        importlib.import_module("submitit")
    except ImportError:
        _unavailable("submitit is not installed, so the slurm backend cannot be tested: pip install 'inforeg[slurm]'")
    folder = tmp_path_factory.mktemp("slurm")
    # 4 CPUs declared on a 2-core machine, so that the array's cap of 2 is what holds the other jobs back
    env = {**os.environ, "INFOREG_SLURM_DIR": str(folder), "INFOREG_SLURM_CPUS": "4"}
    t0 = time.monotonic()
    start = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900)
    print(f"slurm_cluster.sh start: {time.monotonic() - t0:.1f} s\n{start.stderr}")
    if start.returncode == 3:
        _unavailable(f"no SLURM cluster can be started here: {start.stderr.strip()}")
    assert start.returncode == 0, f"slurm_cluster.sh start failed:\n{start.stdout}\n{start.stderr}"
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")  # for submitit's sbatch and for squeue
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        stop = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr


def _squeue(job: str) -> list[tuple[str, str, str]]:
    """(task id, state, reason) of the array `job`'s tasks that SLURM still holds."""
    out = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i %T %r"], capture_output=True, text=True)
    return [tuple(line.split(maxsplit=2)) for line in out.stdout.splitlines() if line.strip()]


def test_slurm_array_with_a_cap_a_cancelled_job_and_the_rerun(slurm_cluster, tmp_path):
    """Four runs as a submitit job array capped at 2 running at once; the job of the long run is cancelled
    with scancel midway: it is reported lost, the other three finish, no partial result reads as complete,
    and the next launch submits only the lost run, which ends with an uninterrupted run's numbers."""
    cache = tmp_path / "cache"  # the shared cache folder: the jobs run on this same machine
    # long enough to outlast scancel: here its SIGKILL reaches the task about 4.7 s after the cancel (submitit
    # ignores the SIGTERM before it), whatever KillWait says; 150 epochs (~5 s) once finished first on CI
    long = make_config(seed=0, overrides={**LONG, "epochs": 450})
    short = [make_config(seed=s, overrides=SMALL) for s in (1, 2, 3)]
    grid = {"long": [long], "short": short}
    t0 = time.monotonic()
    handle = launch(grid, backend="slurm", cache_dir=cache, slurm_array_parallelism=2, timeout_min=10)
    assert time.monotonic() - t0 < 10.0
    jobs = [r.job_id for r in handle.status()]
    array = jobs[0].split("_")[0]
    assert jobs == [f"{array}_{i}" for i in range(4)]
    throttle = subprocess.run(["scontrol", "show", "job", array], capture_output=True, text=True).stdout
    assert "ArrayTaskThrottle=2" in throttle

    seen = {"most_running": 0, "reasons": set()}
    watching = threading.Event()

    def watch():  # sample the queue while the array runs
        while not watching.is_set():
            tasks = _squeue(array)
            seen["most_running"] = max(seen["most_running"], sum(state == "RUNNING" for _, state, _ in tasks))
            seen["reasons"] |= {reason for _, state, reason in tasks if state == "PENDING"}
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_until(lambda: started_midway(long, cache), timeout=300, what="the long run's job to checkpoint")
        killed = attempt(long, cache)["job_id"]
        assert killed == jobs[0]
        subprocess.run(["scancel", killed], check=True)
        report = {r.hash: r for r in handle.wait(timeout=600, poll=1.0)}
    finally:
        watching.set()
        watcher.join()
    assert seen["most_running"] == 2
    assert "JobArrayTaskLimit" in seen["reasons"]  # the cap, not the 4 CPUs, held the others back

    assert report[long.hash()].state == "lost"
    assert f"job {killed} ended before the run finished" in report[long.hash()].detail
    assert [report[c.hash()].state for c in short] == ["done"] * 3
    assert not (entry_dir(long, cache) / "result.json").exists()
    got = collect(grid, cache)
    assert got.results["long"] == [None]
    assert [numbers(r) for r in got.results["short"]] == [reference(c, tmp_path) for c in short]
    assert all(Path(r.log).exists() for r in got.report)  # submitit's log of each job

    rerun = launch(grid, backend="slurm", cache_dir=cache, slurm_array_parallelism=2, timeout_min=10)
    assert rerun.started == [long]
    assert rerun.wait(timeout=600, poll=1.0).complete
    got = collect(grid, cache)
    assert got.complete and numbers(got.results["long"][0]) == reference(long, tmp_path)
    assert attempt(long, cache)["backend"] == "slurm" and attempt(long, cache)["job_id"] != killed
