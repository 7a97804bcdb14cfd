"""inforeg.launch with the serial and local backends: launch returns at once, collect reads the cache, the
results equal get_or_run's, and a killed worker's run is reported lost, never read as complete, and is the
only run the next launch trains again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import inforeg.launch as launch_mod
from inforeg import make_config
from inforeg.cli import main
from inforeg.launch import collect, launch, status, visible_gpus
from inforeg.runs import entry_dir, get_or_run, get_or_run_all, load_result
from inforeg.train import TIMING_KEYS

SMALL = {"epochs": 2, "data.n_train": 128, "data.n_test": 128}
LONG = {"epochs": 60, "data.n_train": 128, "data.n_test": 128}  # a few seconds: long enough to kill midway
ROOT = Path(__file__).resolve().parents[1]


def numbers(result) -> dict:
    """A result as JSON without the wall-clock times (the only fields allowed to differ between runs)."""
    d = json.loads(result.to_json())
    d["history"] = [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in d["history"]]
    return d


def reference(cfg, tmp_path):
    """The result of `cfg` trained in-process by get_or_run, in a cache of its own."""
    return numbers(get_or_run(cfg, cache_dir=tmp_path / "reference", progress=False))


def wait_until(predicate, timeout=120.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def attempt(cfg, cache) -> dict | None:
    path = entry_dir(cfg, cache) / "attempt.json"
    return json.loads(path.read_text()) if path.exists() else None


def started_midway(cfg, cache) -> bool:
    """The run is training and has saved at least one epoch's checkpoint."""
    a = attempt(cfg, cache)
    return a is not None and a["state"] == "running" and (entry_dir(cfg, cache) / "checkpoint.pt").exists()


# --- serial -----------------------------------------------------------------------------------------------

def test_serial_launch_returns_at_once_and_collect_equals_get_or_run(tmp_path):
    """A dict grid on the serial backend: launch returns while the runs train in a thread; collect mirrors
    the grid, first with None for what has not finished, then with get_or_run's numbers."""
    cache = tmp_path / "cache"
    grid = {"joint": [make_config(method="joint", seed=s, overrides=LONG) for s in (0, 1)],
            "InfoReg": [make_config(method="inforeg", seed=0, overrides=SMALL)]}
    t0 = time.monotonic()
    handle = launch(grid, backend="serial", cache_dir=cache)
    assert time.monotonic() - t0 < 2.0
    early = collect(grid, cache)
    assert not early.complete and early.results["joint"][1] is None and early.results["InfoReg"] == [None]
    assert {r.state for r in early.report} <= {"queued", "running", "done"} and len(early.report) == 3
    assert handle.wait(timeout=300).complete
    got = collect(grid, cache)
    assert got.complete and set(got.results) == {"joint", "InfoReg"}
    for name, cfgs in grid.items():
        assert [numbers(r) for r in got.results[name]] == [reference(c, tmp_path) for c in cfgs]
    rows = {r.hash: r for r in got.report}
    assert all(r.state == "done" and r.backend == "serial" and r.pid == os.getpid() for r in rows.values())
    assert "3 runs: 3 done" in str(got.report)
    single = grid["InfoReg"][0]  # other grid shapes: nested dicts, tuples and single configs, a generator
    nested = collect({"sweep": {0.5: (single,), 0.9: grid["joint"]}, "one": single}, cache)
    assert numbers(nested.results["sweep"][0.5][0]) == numbers(nested.results["one"]) == reference(single, tmp_path)
    assert isinstance(nested.results["sweep"][0.5], tuple) and len(nested.results["sweep"][0.9]) == 2
    assert [r.name for r in nested.report] == ["sweep/0.5", "sweep/0.9", "sweep/0.9"]
    from_generator = collect((c for c in grid["joint"]), cache).results
    assert [numbers(r) for r in from_generator] == [numbers(r) for r in got.results["joint"]]
    again = launch(grid, backend="serial", cache_dir=cache)
    assert again.started == [] and again.wait().complete


def test_failed_run_is_reported_and_retried(tmp_path, monkeypatch):
    """A run that raises is reported failed with its error; the others still run; blocking=True lets the
    exception through (for pdb); a relaunch trains the failed run again."""
    cache = tmp_path / "cache"
    good, bad = (make_config(seed=s, overrides=SMALL) for s in (0, 1))
    real = launch_mod.get_or_run

    def broken(cfg, **kwargs):
        if cfg == bad:
            raise ValueError("a deliberate failure")
        return real(cfg, **kwargs)

    monkeypatch.setattr(launch_mod, "get_or_run", broken)
    report = launch([bad, good], backend="serial", cache_dir=cache).wait(timeout=120)
    states = {r.hash: r for r in report}
    assert states[good.hash()].state == "done"
    assert states[bad.hash()].state == "failed"
    assert states[bad.hash()].detail == "ValueError: a deliberate failure"
    assert "a deliberate failure" in str(report)
    with pytest.raises(ValueError, match="deliberate"):
        launch([bad], backend="serial", cache_dir=cache, blocking=True)
    monkeypatch.setattr(launch_mod, "get_or_run", real)
    retry = launch([bad, good], backend="serial", cache_dir=cache, blocking=True)
    assert retry.started == [bad]
    assert collect([bad, good], cache).complete


def test_killed_serial_launcher_leaves_its_runs_lost(tmp_path):
    """The process running a serial launch (a notebook kernel) is killed midway: the run it was training and
    the one it had not started are reported lost; neither reads as complete; a relaunch finishes both."""
    cache = tmp_path / "cache"
    first, second = (make_config(seed=s, overrides=LONG) for s in (0, 1))
    listing = tmp_path / "grid.json"
    listing.write_text(json.dumps([first.to_dict(), second.to_dict()]))
    script = ("import json, sys; from inforeg.config import from_dict; from inforeg.launch import launch\n"
              "cfgs = [from_dict(d) for d in json.load(open(sys.argv[1]))]\n"
              "launch(cfgs, backend='serial', cache_dir=sys.argv[2]).wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(listing), str(cache)], cwd=ROOT)
    try:
        wait_until(lambda: started_midway(first, cache) or proc.poll() is not None,
                   what="the first run to checkpoint")
        assert proc.poll() is None, "the launching process ended by itself"
    finally:
        proc.kill()
        proc.wait()
    report = {r.hash: r for r in status([first, second], cache)}
    assert report[first.hash()].state == "lost"
    assert "ended before the run finished" in report[first.hash()].detail
    assert report[second.hash()].state == "lost"
    assert "before the run started" in report[second.hash()].detail
    assert collect([first, second], cache).results == [None, None]
    again = launch([first, second], backend="serial", cache_dir=cache, blocking=True)
    assert again.started == [first, second]
    got = collect([first, second], cache)
    assert got.complete and numbers(got.results[0]) == reference(first, tmp_path)


# --- local ------------------------------------------------------------------------------------------------

def test_local_workers_give_get_or_run_results_pinned_to_their_gpus(tmp_path):
    """Three runs on two local workers pinned to "GPUs" 0 and 1 (CPU configs: the pinning is what each worker
    process saw in CUDA_VISIBLE_DEVICES at start): launch returns at once; the numbers equal get_or_run's."""
    cache = tmp_path / "cache"
    cfgs = [make_config(method=m, seed=s, overrides=SMALL) for m, s in (("joint", 0), ("inforeg", 1), ("joint", 2))]
    t0 = time.monotonic()
    handle = launch(cfgs, backend="local", cache_dir=cache, gpus=["0", "1"])
    assert time.monotonic() - t0 < 5.0
    assert not handle.status().complete
    info = json.loads((handle.folder / "launch.json").read_text())
    assert [w["gpu"] for w in info["workers"]] == ["0", "1"]
    assert handle.wait(timeout=300).complete
    got = collect(cfgs, cache)
    assert [numbers(r) for r in got.results] == [reference(c, tmp_path) for c in cfgs]
    workers = {w["pid"]: w["gpu"] for w in info["workers"]}
    for cfg in cfgs:
        a = attempt(cfg, cache)
        assert a["backend"] == "local" and a["state"] == "done" and workers[a["pid"]] == a["gpu"]
    assert all(r.log and Path(r.log).exists() for r in got.report)


def test_killed_local_worker_run_is_lost_then_the_only_one_rerun(tmp_path):
    """SIGKILL the worker training the long run: collect reports it lost (its checkpoint and a stray
    temporary file are not a result), the other runs finish, and the next launch trains only the lost run,
    ending with the numbers of an uninterrupted run."""
    cache = tmp_path / "cache"
    long = make_config(seed=0, overrides=LONG)
    short = [make_config(seed=s, overrides=SMALL) for s in (1, 2)]
    grid = [long, *short]
    handle = launch(grid, backend="local", cache_dir=cache, workers=2)
    wait_until(lambda: started_midway(long, cache), what="the long run to checkpoint")
    victim = attempt(long, cache)["pid"]
    assert victim in [p.pid for p in handle._procs]
    os.kill(victim, signal.SIGKILL)
    report = handle.wait(timeout=300)
    rows = {r.hash: r for r in report}
    assert rows[long.hash()].state == "lost"
    assert f"pid {victim}" in rows[long.hash()].detail
    assert [rows[c.hash()].state for c in short] == ["done", "done"]

    folder = entry_dir(long, cache)
    assert (folder / "checkpoint.pt").exists() and not (folder / "result.json").exists()
    (folder / ".result.json.partial.tmp").write_text('{"test_acc": 0.5')  # what a killed atomic write leaves
    got = collect(grid, cache)
    assert got.results[0] is None and load_result(long, cache) is None
    assert [numbers(r) for r in got.results[1:]] == [reference(c, tmp_path) for c in short]
    assert "1 lost" in got.report.summary()
    with pytest.raises(RuntimeError, match="not every run has finished"):
        got.require()

    finished = {c.hash(): (entry_dir(c, cache) / "result.json").stat().st_mtime_ns for c in short}
    rerun = launch(grid, backend="local", cache_dir=cache)
    assert rerun.started == [long]
    assert rerun.wait(timeout=300).complete
    assert {c.hash(): (entry_dir(c, cache) / "result.json").stat().st_mtime_ns for c in short} == finished
    assert numbers(collect(grid, cache).results[0]) == reference(long, tmp_path)


def test_a_run_in_flight_is_not_launched_twice(tmp_path):
    """While a local launch trains a run, a second launch of the same grid leaves it alone."""
    cache = tmp_path / "cache"
    cfg = make_config(seed=3, overrides=LONG)
    first = launch([cfg], backend="local", cache_dir=cache, workers=1)
    wait_until(lambda: started_midway(cfg, cache), what="the run to start")
    assert status([cfg], cache)[0].state == "running"
    assert launch([cfg], backend="local", cache_dir=cache).started == []
    assert first.wait(timeout=300).complete


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    """The local backend's GPUs are CUDA_VISIBLE_DEVICES's entries, up to the first invalid one, as CUDA reads
    them."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,0")
    assert visible_gpus() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


# --- errors, the get_or_run_all hook, the CLI -------------------------------------------------------------

def test_bad_backend_and_options_are_clear_errors(tmp_path, monkeypatch):
    cfg = make_config(overrides=SMALL)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        launch([cfg], backend="gpu", cache_dir=tmp_path)
    with pytest.raises(TypeError, match="local backend does not take the option.*slurm_partition"):
        launch([cfg], backend="local", cache_dir=tmp_path, slurm_partition="gpu")
    with pytest.raises(TypeError, match="grid entry 'a': a config as a dict; make it a RunConfig"):
        launch({"a": [cfg.to_dict()]}, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="grid entry 'a/b': expected a RunConfig .* got str"):
        launch({"a": {"b": ["joint"]}}, cache_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"pip install 'inforeg\[slurm\]'"):
        launch([cfg], backend="slurm", cache_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'inforeg\[ray\]'"):
        launch([cfg], backend="ray", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing recorded for a launch that could not start


def test_get_or_run_all_honours_inforeg_backend(tmp_path, monkeypatch):
    """With INFOREG_BACKEND=local, get_or_run_all goes through launch and gives its default path's numbers;
    bad INFOREG_BACKEND_OPTIONS is a clear error."""
    cfgs = [make_config(method=m, seed=s, overrides=SMALL) for m, s in (("joint", 0), ("inforeg", 1))]
    default = get_or_run_all(cfgs, cache_dir=tmp_path / "default", workers=1, progress=False)
    monkeypatch.setenv("INFOREG_BACKEND", "local")
    via = get_or_run_all(cfgs, cache_dir=tmp_path / "local", workers=2, progress=False)
    assert [numbers(r) for r in via] == [numbers(r) for r in default]
    assert attempt(cfgs[0], tmp_path / "local")["backend"] == "local"
    monkeypatch.setenv("INFOREG_BACKEND_OPTIONS", "{workers: 2}")
    with pytest.raises(ValueError, match="INFOREG_BACKEND_OPTIONS is not valid JSON"):
        get_or_run_all([make_config(seed=9, overrides=SMALL)], cache_dir=tmp_path / "x", progress=False)


def test_cli_launch_and_collect(tmp_path, capsys):
    """`python -m inforeg launch GRID.json --backend local --wait`, then `collect --json` over the same grid
    given as config options and --seeds; bad input is a clear error (exit 2) naming the file or option."""
    cache = tmp_path / "cache"
    cfgs = [make_config(seed=s, overrides=SMALL) for s in (0, 1)]
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([c.to_dict() for c in cfgs]))

    def cli(*args):
        with pytest.raises(SystemExit) as exit:
            sys.exit(main(list(args)))
        out = capsys.readouterr()
        return exit.value.code or 0, out.out, out.err

    code, out, _ = cli("collect", str(grid), "--cache-dir", str(cache), "--require-complete")
    assert code == 1 and "2 runs: 2 missing" in out
    run = subprocess.run([sys.executable, "-m", "inforeg", "launch", str(grid), "--backend", "local", "--workers",
                          "2", "--wait", "--cache-dir", str(cache)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "2 runs: 2 done" in run.stdout
    report_file = tmp_path / "report.json"
    code, out, _ = cli("collect", "--epochs", "2", "--set", "data.n_train=128", "--set", "data.n_test=128",
                       "--seeds", "0-1", "--cache-dir", str(cache), "--json", str(report_file))
    assert code == 0 and "2 runs: 2 done" in out
    report = json.loads(report_file.read_text())
    assert report["complete"] and report["summary"] == {"done": 2}
    expected = {c.hash(): load_result(c, cache).test_acc for c in cfgs}
    assert {r["hash"]: r["result"]["test_acc"] for r in report["runs"]} == expected
    assert {r["hash"]: r["backend"] for r in report["runs"]} == {c.hash(): "local" for c in cfgs}

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code, _, err = cli("launch", str(broken), "--cache-dir", str(cache))
    assert code == 2 and f"{broken}: cannot read the grid" in err
    code, _, err = cli("launch", str(grid), "--backend", "local", "--partition", "gpu", "--cache-dir", str(cache))
    assert code == 2 and "does not take the option(s) slurm_partition" in err
    code, _, err = cli("collect", "--seeds", "0-x", "--cache-dir", str(cache))
    assert code == 2 and "--seeds expects" in err
    code, _, err = cli("launch", str(grid), "--seeds", "0-1", "--cache-dir", str(cache))
    assert code == 2 and "--seeds and --set do not apply" in err
