"""Scale-out: `launch(grid, backend=...)` starts the runs of a grid that the cache lacks and returns at once;
`collect(grid)` reads the finished ones from the cache and reports the others.

    handle = launch(grid, backend="local")      # a list of RunConfigs, or {name: [RunConfig, ...]}
    handle.status()                             # a Report: one row per run, with its state
    handle.wait()
    got = collect(grid)                         # got.results mirrors the grid (None where not finished)
    print(got.report)                           # what is done / running / queued / failed / lost / missing

Backends (the options each takes are keyword arguments of `launch`):
  serial  in this process, one run after another, in a background thread; `blocking=True` runs them in the
          caller's thread and lets an exception through (for pdb)
  local   worker processes on this machine: one per visible GPU, each pinned to it with CUDA_VISIBLE_DEVICES
          before torch starts; without a GPU one per CPU core ($INFOREG_WORKERS). Options `workers`, `gpus`.
          The workers outlive the launching process, so a notebook kernel that restarts loses nothing.
  slurm   a submitit job array (extra `inforeg[slurm]`); any submitit AutoExecutor parameter as an option:
          slurm_array_parallelism (how many run at once), timeout_min (default 240), slurm_partition, mem_gb,
          gpus_per_node, cpus_per_task, ... The cache folder must be shared by the nodes.
  ray     one Ray task per run (extra `inforeg[ray]`): the Ray already initialised in this process, else
          ray.init(address=...) with option `address`, else a local Ray. Options num_cpus (1), num_gpus
          (1 when the cluster has GPUs), max_retries (0: a killed task is reported lost, not rerun by Ray).

Records. Next to each cache entry `<cache>/<hash>/`, two files, each with one writer, replaced atomically:
  launch.json   by the launcher: the launch that asked for the run, its backend, when
  attempt.json  by the run itself: state (running, done, failed, interrupted), host, pid, job id, log,
                a heartbeat every HEARTBEAT_S seconds
and one per launch, `<cache>/.launches/<launch id>/launch.json`: the backend, the launching process, the
worker processes or job ids, and the logs (kept in that folder for local and slurm). From these the state
of a run that has not finished is read: `running` while its process or job lives, `lost` once its worker
or job is gone (killed, timed out, node lost), `queued` before it starts. result.json, written atomically
and last by `runs.get_or_run`, is the only sign of a finished run, so a killed run never reads as complete;
a relaunch trains only the runs that are missing, failed or lost, and resumes a lost one from its checkpoint.
"""
from __future__ import annotations

import argparse
import getpass
import importlib
import inspect
import json
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import RunConfig, from_dict
from .paths import cache_dir as default_cache_dir
from .runs import atomic_write, default_workers, get_or_run, load_result

BACKENDS = ("serial", "local", "slurm", "ray")
STATES = ("done", "running", "queued", "failed", "lost", "missing")
HEARTBEAT_S = 10.0
STALE_S = 120.0  # a run on another host whose heartbeat is this old is lost
HOST = socket.gethostname()
LAUNCHES = ".launches"  # per-launch folders inside the cache

# A grid: a list of RunConfigs, or a dict name -> list (what the notebooks build); nesting and tuples are fine
Grid = RunConfig | Sequence[Any] | Mapping[Any, Any]


# --- records ----------------------------------------------------------------------------------------------

def _cache(cache_dir) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir())


def _read_json(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as e:  # written atomically, so this is damage from outside
        raise RuntimeError(f"{path}: not a valid launch record ({e}); delete it") from e


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def _proc_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks (tells a reused pid apart); None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state is field 3, starttime field 22
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _me() -> dict:
    return {"host": HOST, "pid": os.getpid(), "start": _proc_start(os.getpid())}


def _proc_alive(proc: dict) -> bool | None:
    """Whether a recorded process still runs: True / False on this host, None (cannot tell) elsewhere."""
    if proc.get("host") != HOST or not proc.get("pid"):
        return None
    try:
        os.kill(proc["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not Path("/proc/self/stat").exists():  # no procfs (macOS): the pid exists, trust it
        return True
    start = _proc_start(proc["pid"])
    return start is not None and proc.get("start") in (None, start)


def _slurm_job_id() -> str | None:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def _slurm_active() -> set[str] | None:
    """Ids of this user's jobs that SLURM still has pending or running (array tasks one by one), or None
    if squeue cannot answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


# --- one run, wherever it executes ------------------------------------------------------------------------

class _Attempt:
    """attempt.json of one run: written when it starts, every HEARTBEAT_S seconds, and when it ends."""

    def __init__(self, path: Path, record: dict):
        self.path, self.record = path, record
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self._write()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="inforeg-heartbeat")
        self.thread.start()

    def _write(self) -> None:
        _write_json(self.path, self.record)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            with self.lock:
                if self.stopped.is_set():
                    return
                self.record["heartbeat"] = time.time()
                self._write()

    def end(self, **changes) -> None:
        with self.lock:
            self.stopped.set()
            self.record.update(changes, finished=time.time())
            self._write()
        self.thread.join()


def run_one(cfg_dict: dict, cache_dir: str, launch_id: str, backend: str, log: str | None = None) -> str:
    """Train one run of a launch into the cache (what every backend executes), keeping its attempt.json.
    Returns the run's hash; raises what the run raised, after recording it."""
    cfg = from_dict(cfg_dict)
    cache = Path(cache_dir)
    if load_result(cfg, cache) is not None:
        return cfg.hash()
    now = time.time()
    attempt = _Attempt(cache / cfg.hash() / "attempt.json", {
        "launch_id": launch_id, "backend": backend, "state": "running", **_me(),
        "job_id": _slurm_job_id() if backend == "slurm" else None,
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "log": log, "started": now, "heartbeat": now})
    try:
        get_or_run(cfg, cache_dir=cache, progress=False)
    except Exception as e:
        attempt.end(state="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        raise
    except BaseException as e:  # KeyboardInterrupt, SystemExit: stopped from outside, not a failure of the run
        attempt.end(state="interrupted", error=type(e).__name__)
        raise
    attempt.end(state="done")
    return cfg.hash()


# --- the state of each run --------------------------------------------------------------------------------

@dataclass
class RunStatus:
    """Where one run of a grid stands."""
    name: str
    config: RunConfig
    state: str  # one of STATES
    backend: str | None = None
    launch_id: str | None = None
    job_id: str | None = None
    host: str | None = None
    pid: int | None = None
    log: str | None = None
    detail: str = ""  # why it failed or was lost
    test_acc: float | None = None

    @property
    def hash(self) -> str:
        return self.config.hash()

    def to_dict(self) -> dict:
        return {"name": self.name, "hash": self.hash, "method": self.config.label, "seed": self.config.seed,
                "state": self.state, "backend": self.backend, "launch_id": self.launch_id,
                "job_id": self.job_id, "host": self.host, "pid": self.pid, "log": self.log,
                "detail": self.detail, "test_acc": self.test_acc}


class Report(list):
    """A list of RunStatus, one per distinct run of a grid, printed as a table."""

    def counts(self) -> dict[str, int]:
        return {s: n for s in STATES if (n := sum(r.state == s for r in self))}

    def of(self, state: str) -> list[RunStatus]:
        return [r for r in self if r.state == state]

    @property
    def complete(self) -> bool:
        return all(r.state == "done" for r in self)

    @property
    def in_flight(self) -> bool:
        return any(r.state in ("queued", "running") for r in self)

    def summary(self) -> str:
        return f"{len(self)} runs: " + ", ".join(f"{n} {s}" for s, n in self.counts().items()) if self else "0 runs"

    def table(self) -> str:
        named = any(r.name for r in self)  # a dict grid names its groups; a list grid does not
        head = ("name",) * named + ("method", "seed", "hash", "state", "test_acc", "backend", "where", "detail / log")
        rows = [head]
        for r in self:
            where = f"job {r.job_id}" if r.job_id else f"pid {r.pid} on {r.host}" if r.pid else ""
            why = r.detail.split("\n")[0] if r.state in ("failed", "lost") else r.log or ""
            rows.append((r.name,) * named + (
                r.config.label, str(r.config.seed), r.hash, r.state, "" if r.test_acc is None else f"{r.test_acc:.4f}",
                r.backend or "", where, why))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows)

    def __str__(self) -> str:
        return self.summary() + "\n" + self.table()

    __repr__ = __str__


class _Probe:
    """Reads the records of one cache, asking SLURM and the per-launch files at most once per status call."""

    def __init__(self, cache: Path):
        self.cache = cache
        self._infos: dict[str, dict | None] = {}
        self._active: set[str] | None | bool = False  # False: not asked yet

    def info(self, launch_id: str) -> dict | None:
        if launch_id not in self._infos:
            self._infos[launch_id] = _read_json(self.cache / LAUNCHES / launch_id / "launch.json")
        return self._infos[launch_id]

    def slurm_active(self) -> set[str] | None:
        if self._active is False:
            self._active = _slurm_active()
        return self._active

    def attempt_alive(self, attempt: dict) -> tuple[bool, str]:
        where = f"pid {attempt.get('pid')} on {attempt.get('host')}"
        if attempt.get("backend") == "slurm" and attempt.get("job_id"):
            active = self.slurm_active()
            if active is not None:
                return attempt["job_id"] in active, f"job {attempt['job_id']} ended before the run finished"
        alive = _proc_alive(attempt)
        if alive is not None:
            return alive, f"its process ({where}) ended before the run finished"
        age = time.time() - attempt.get("heartbeat", 0)
        return age < STALE_S, f"no heartbeat from {where} for {age:.0f} s"

    def queued_alive(self, launch: dict, key: str) -> tuple[bool, str]:
        info = self.info(launch["launch_id"])
        if info is None:
            return True, ""
        if info.get("submit_error"):
            return False, f"the launch failed: {info['submit_error']}"
        if info["state"] == "finished":
            return False, "its launch ended before the run started"
        backend = info["backend"]
        if backend == "local" and info["state"] == "submitted":
            if all(_proc_alive(w) is False for w in info["workers"]):
                return False, "every worker process ended before the run started"
            return True, ""
        if backend == "slurm" and info["state"] == "submitted":
            job, active = info["jobs"].get(key), self.slurm_active()
            if job is None or active is None:
                return True, ""
            return job in active, f"job {job} left the queue before the run started"
        return _proc_alive(info["launcher"]) is not False, "the launching process ended before the run started"

    def status(self, name: str, cfg: RunConfig) -> RunStatus:
        key = cfg.hash()
        folder = self.cache / key
        st = RunStatus(name, cfg, "missing")
        finished = (folder / "result.json").exists()  # looked at first: the records may change meanwhile
        launch, attempt = _read_json(folder / "launch.json"), _read_json(folder / "attempt.json")
        if attempt is not None and (launch is None or attempt["launch_id"] == launch["launch_id"]):
            st.backend, st.launch_id, st.job_id = attempt["backend"], attempt["launch_id"], attempt.get("job_id")
            st.host, st.pid, st.log = attempt.get("host"), attempt.get("pid"), attempt.get("log")
            state = attempt["state"]
            if finished:
                st.state = "done"
            elif state == "failed":
                st.state, st.detail = "failed", attempt.get("error", "")
            elif state == "interrupted":
                st.state, st.detail = "lost", f"interrupted ({attempt.get('error')})"
            elif state == "done":  # finished, but result.json is gone since
                st.detail = "result.json was removed after the run finished"
            else:
                alive, why = self.attempt_alive(attempt)
                st.state, st.detail = ("running", "") if alive else ("lost", why)
        elif launch is not None:
            st.backend, st.launch_id = launch["backend"], launch["launch_id"]
            if finished:
                st.state = "done"
            else:
                alive, why = self.queued_alive(launch, key)
                st.state, st.detail = ("queued", "") if alive else ("lost", why)
        elif finished:
            st.state = "done"
        if st.state in ("lost", "missing") and (folder / "result.json").exists():  # it finished while we looked
            st.state, st.detail = "done", ""
        if st.launch_id:
            info = self.info(st.launch_id) or {}
            st.job_id = st.job_id or info.get("jobs", {}).get(key)
            st.log = st.log or info.get("logs", {}).get(key)
        return st


def _normalize(grid: Grid) -> Any:
    """The grid with a top-level generator read once into a list (nested levels are dicts, lists, tuples)."""
    return grid if isinstance(grid, (RunConfig, Mapping, list, tuple)) else list(grid)


def _entries(grid: Any, name: str = "") -> list[tuple[str, RunConfig]]:
    """(name, config) for every config of a grid, in order; a config's name is the path of dict keys to it."""
    if isinstance(grid, RunConfig):
        return [(name, grid)]
    if isinstance(grid, Mapping):
        if {"data", "method", "seed"} <= set(grid):
            raise TypeError(f"grid entry {name!r}: a config as a dict; make it a RunConfig with "
                            "inforeg.config.from_dict")
        return [e for k, v in grid.items() for e in _entries(v, f"{name}/{k}" if name else str(k))]
    if isinstance(grid, (list, tuple)):
        return [e for v in grid for e in _entries(v, name)]
    raise TypeError(f"grid entry {name!r}: expected a RunConfig (in dicts, lists or tuples), got "
                    f"{type(grid).__name__}")


def _mirror(grid: Any, done: dict) -> Any:
    """The grid's structure with each config's result in its place (None if it has not finished)."""
    if isinstance(grid, RunConfig):
        return done.get(grid.hash())
    if isinstance(grid, Mapping):
        return {k: _mirror(v, done) for k, v in grid.items()}
    return type(grid)(_mirror(v, done) for v in grid)


def _distinct(entries: list[tuple[str, RunConfig]]) -> list[tuple[str, RunConfig]]:
    seen: dict[str, tuple[str, RunConfig]] = {}
    for name, cfg in entries:
        seen.setdefault(cfg.hash(), (name, cfg))
    return list(seen.values())


def _report(entries: list[tuple[str, RunConfig]], cache: Path) -> Report:
    probe = _Probe(cache)
    return Report(probe.status(name, cfg) for name, cfg in _distinct(entries))


def status(grid: Grid, cache_dir: str | Path | None = None) -> Report:
    """The state of every distinct run of `grid`, read from the cache and the launch records."""
    return _report(_entries(_normalize(grid)), _cache(cache_dir))


@dataclass
class Collected:
    """What `collect` returns: `results` mirrors the grid (same dicts, lists, tuples) with a RunResult where
    the run has finished and None where it has not; `report` says where each run stands."""
    results: Any
    report: Report = field(repr=False)

    @property
    def complete(self) -> bool:
        return self.report.complete

    def require(self):
        """The results, or a RuntimeError with the report if any run has not finished."""
        if not self.complete:
            raise RuntimeError(f"not every run has finished:\n{self.report}")
        return self.results

    def __repr__(self) -> str:
        return f"Collected({self.report.summary()})\n{self.report.table()}"


def collect(grid: Grid, cache_dir: str | Path | None = None) -> Collected:
    """The finished results of `grid` from the cache, and a report on the runs that have not finished."""
    cache = _cache(cache_dir)
    grid = _normalize(grid)
    report = _report(_entries(grid), cache)
    done = {r.hash: load_result(r.config, cache) for r in report if r.state == "done"}
    for r in report:
        if r.hash in done:
            r.test_acc = done[r.hash].test_acc
    return Collected(_mirror(grid, done), report)


# --- launching --------------------------------------------------------------------------------------------

class LaunchHandle:
    """A launch in progress: `status()`, `wait()`, `cancel()`. `started` lists the runs this launch trains;
    the others of the grid were finished or already in flight."""

    def __init__(self, backend: str, launch_id: str, cache: Path, entries: list, started: list[RunConfig]):
        self.backend, self.launch_id, self.cache_dir = backend, launch_id, cache
        self.entries, self.started = entries, started
        self.folder = cache / LAUNCHES / launch_id
        self._thread: threading.Thread | None = None
        self._procs: list[subprocess.Popen] = []
        self._refs: list = []
        self._jobs: list = []
        self._stop = threading.Event()

    def __repr__(self) -> str:
        if not self.started:
            return f"<launch on {self.backend}: nothing to start, every run is finished or in flight>"
        return (f"<launch {self.launch_id}: {len(self.started)} runs started on {self.backend}, "
                f"records in {self.folder}>")

    def _info(self) -> dict:
        return _read_json(self.folder / "launch.json") or {}

    def _update_info(self, **changes) -> None:
        info = self._info()
        info.update(changes)
        _write_json(self.folder / "launch.json", info)

    def _settle(self) -> None:
        """Reap finished worker processes; note a Ray launch whose tasks have all ended."""
        for p in self._procs:
            p.poll()
        if self._refs and self._info().get("state") != "finished":
            import ray

            ready, _ = ray.wait(self._refs, num_returns=len(self._refs), timeout=0)
            if len(ready) == len(self._refs):
                self._update_info(state="finished")

    def status(self) -> Report:
        """Where every run of the launched grid stands now."""
        self._settle()
        return _report(self.entries, self.cache_dir)

    def wait(self, timeout: float | None = None, poll: float | None = None, progress: bool | None = False,
             desc: str = "runs") -> Report:
        """Block until no run of the grid is queued or running (or `timeout` seconds); returns the report."""
        from .train import progress_bar

        poll = poll if poll is not None else (5.0 if self.backend == "slurm" else 0.5)
        deadline = None if timeout is None else time.monotonic() + timeout
        report = self.status()
        with progress_bar(progress, total=len(report), initial=len(report.of("done")), desc=desc, unit="run") as bar:
            while report.in_flight and (deadline is None or time.monotonic() < deadline):
                time.sleep(poll)
                done = len(report.of("done"))
                report = self.status()
                bar.update(len(report.of("done")) - done)
        if not report.in_flight and self._thread is not None:
            self._thread.join()
        return report

    def cancel(self) -> None:
        """Stop this launch's runs: serial stops after the current run; local kills the workers; slurm
        cancels the jobs; ray cancels the tasks. Runs stopped midway are reported lost."""
        self._stop.set()
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for job in self._jobs:
            job.cancel(check=False)
        if self._refs:
            import ray

            for ref in self._refs:
                ray.cancel(ref, force=True)


def _import_optional(module: str, backend: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"the {backend} backend needs the package {module!r}, which is not installed: "
                          f"pip install 'inforeg[{backend}]' (or pip install {module})") from e


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (what each local worker is pinned to)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        gpus = []
        for g in (x.strip() for x in env.split(",")):
            if not g or g == "-1":  # CUDA stops at the first invalid entry
                break
            gpus.append(g)
        return gpus
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _serial(h: LaunchHandle, blocking: bool = False):
    def start(todo: list[RunConfig]) -> None:
        h._update_info(state="submitted")
        if blocking:
            work(todo)
        else:
            h._thread = threading.Thread(target=work, args=(todo,), name=f"inforeg-launch-{h.launch_id}")
            h._thread.start()

    def work(todo: list[RunConfig]) -> None:
        try:
            for cfg in todo:
                if h._stop.is_set():
                    break
                try:
                    run_one(cfg.to_dict(), str(h.cache_dir), h.launch_id, "serial")
                except Exception:
                    if blocking:
                        raise
                    traceback.print_exc()  # recorded in attempt.json; the next run goes on
        finally:
            h._update_info(state="finished")

    return start


def _local(h: LaunchHandle, workers: int | None = None, gpus: Sequence[int | str] | None = None):
    gpus = visible_gpus() if gpus is None else [str(g) for g in gpus]
    workers = workers if workers is not None else (len(gpus) or default_workers())
    if workers < 1:
        raise ValueError(f"the local backend needs at least 1 worker, got workers={workers}")

    def start(todo: list[RunConfig]) -> None:
        _write_json(h.folder / "runs.json", {"runs": [c.to_dict() for c in todo]})
        (h.folder / "claims").mkdir()
        started = []
        for w in range(min(workers, len(todo))):
            env = dict(os.environ)
            if gpus:  # set before the child's Python starts, so torch in it sees only this GPU
                env["CUDA_VISIBLE_DEVICES"] = gpus[w % len(gpus)]
            log = h.folder / f"worker{w}.log"
            cmd = [sys.executable, "-m", "inforeg.launch", str(h.folder), "--cache-dir", str(h.cache_dir),
                   "--log", str(log)]
            with open(log, "wb") as out:  # own session: a notebook kernel that restarts does not take them along
                p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
            h._procs.append(p)
            started.append({"host": HOST, "pid": p.pid, "start": _proc_start(p.pid),
                            "gpu": env["CUDA_VISIBLE_DEVICES"] if gpus else None, "log": str(log)})
        h._update_info(state="submitted", workers=started)

    return start


def _local_worker(argv: list[str] | None = None) -> int:
    """`python -m inforeg.launch FOLDER --cache-dir DIR --log LOG`: one local worker. It takes the runs of
    FOLDER/runs.json in order, each one no other worker of the launch has claimed, and trains it."""
    p = argparse.ArgumentParser(prog="python -m inforeg.launch")
    p.add_argument("folder", type=Path)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--log", default=None)
    args = p.parse_args(argv)
    failed = 0
    for d in json.loads((args.folder / "runs.json").read_text())["runs"]:
        try:  # the claim: creating the file is atomic, so each run goes to exactly one worker
            os.close(os.open(args.folder / "claims" / from_dict(d).hash(), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        try:
            run_one(d, args.cache_dir, args.folder.name, "local", log=args.log)
        except Exception:
            traceback.print_exc()
            failed += 1
    return 1 if failed else 0


def _slurm(h: LaunchHandle, **params):
    submitit = _import_optional("submitit", "slurm")
    executor = submitit.AutoExecutor(folder=h.folder / "submitit", cluster="slurm")
    try:
        executor.update_parameters(**{"name": "inforeg", "timeout_min": 240, **params})
    except (NameError, ValueError, TypeError) as e:  # submitit's own check of the parameters
        raise ValueError(f"the slurm backend cannot take these options: {e}") from e

    def start(todo: list[RunConfig]) -> None:
        n = len(todo)
        h._jobs = executor.map_array(run_one, [c.to_dict() for c in todo], [str(h.cache_dir)] * n,
                                     [h.launch_id] * n, ["slurm"] * n)
        h._update_info(state="submitted", jobs={c.hash(): j.job_id for c, j in zip(todo, h._jobs)},
                       logs={c.hash(): str(j.paths.stdout) for c, j in zip(todo, h._jobs)})

    return start


def _ray(h: LaunchHandle, address: str | None = None, num_cpus: float = 1, num_gpus: float | None = None,
         max_retries: int = 0):
    ray = _import_optional("ray", "ray")

    def start(todo: list[RunConfig]) -> None:
        if not ray.is_initialized():
            ray.init(address=address)
        gpus = num_gpus if num_gpus is not None else (1 if ray.cluster_resources().get("GPU", 0) > 0 else 0)
        task = ray.remote(run_one).options(num_cpus=num_cpus, num_gpus=gpus, max_retries=max_retries)
        h._refs = [task.remote(c.to_dict(), str(h.cache_dir), h.launch_id, "ray") for c in todo]
        h._update_info(state="submitted", address=address)

    return start


_BACKEND_SETUP = {"serial": _serial, "local": _local, "slurm": _slurm, "ray": _ray}


def launch(grid: Grid, backend: str = "serial", cache_dir: str | Path | None = None, **options: Any
           ) -> LaunchHandle:
    """Start the runs of `grid` that are not finished (missing, failed or lost) on `backend`; return at once.

    Runs already finished, queued or running (by another launch) are left alone. See the module docstring
    for the backends and their options (serial: `blocking=True` runs in this thread, for pdb)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    setup = _BACKEND_SETUP[backend]
    params = inspect.signature(setup).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [name for name in params if name != "h"]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(f"the {backend} backend does not take the option(s) {', '.join(unknown)}; it takes: "
                            f"{', '.join(accepted) or 'none'}")
    cache = _cache(cache_dir)
    entries = _entries(_normalize(grid))
    todo = [r.config for r in _report(entries, cache) if r.state in ("missing", "failed", "lost")]
    h = LaunchHandle(backend, time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], cache, entries, todo)
    start = setup(h, **options)  # checks the options and the extra before anything is recorded
    if not todo:
        return h
    _write_json(h.folder / "launch.json", {"launch_id": h.launch_id, "backend": backend, "state": "submitting",
                                            "launcher": _me(), "created": time.time(),
                                            "runs": [c.hash() for c in todo]})
    for cfg in todo:
        _write_json(cache / cfg.hash() / "launch.json",
                    {"launch_id": h.launch_id, "backend": backend, "submitted": time.time(), "launcher": _me()})
    try:
        start(todo)
    except BaseException as e:
        if h._info().get("state") != "finished":  # a blocking serial run that raised has recorded itself
            h._update_info(submit_error=f"{type(e).__name__}: {e}")
        raise
    return h


def options_from_env() -> dict:
    """Backend options from $INFOREG_BACKEND_OPTIONS, a JSON object (e.g. {"slurm_partition": "gpu"})."""
    text = os.environ.get("INFOREG_BACKEND_OPTIONS", "").strip()
    if not text:
        return {}
    try:
        options = json.loads(text)
    except ValueError as e:
        raise ValueError(f"$INFOREG_BACKEND_OPTIONS is not valid JSON ({e}): {text!r}") from e
    if not isinstance(options, dict):
        raise ValueError(f"$INFOREG_BACKEND_OPTIONS must be a JSON object, got {text!r}")
    return options


def run_grid(cfgs: Sequence[RunConfig], backend: str, cache_dir=None, progress: bool | None = None,
             desc: str = "runs", **options) -> list:
    """Launch `cfgs` on `backend`, wait, and return their results in order; raise with the report if any run
    did not finish. What `runs.get_or_run_all` does when $INFOREG_BACKEND is set."""
    cfgs = list(cfgs)
    handle = launch(cfgs, backend=backend, cache_dir=cache_dir, **{**options_from_env(), **options})
    handle.wait(progress=progress, desc=desc)
    return collect(cfgs, cache_dir).require()


if __name__ == "__main__":
    sys.exit(_local_worker())
