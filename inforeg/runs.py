"""The results cache: `get_or_run(config)` returns a finished run or trains it, keyed by the config's hash.

Layout of one entry, `<cache>/<hash>/`:
  config.json      the full config (written first)
  checkpoint.pt    the state after the last finished epoch (replaced atomically each epoch)
  model.pt         the final weights (for features, t-SNE, probes after the fact)
  result.json      the RunResult; written atomically last, so only a complete run has one
A run killed at any moment leaves no result.json; rerunning resumes from checkpoint.pt and ends with
the same numbers as an uninterrupted run.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterable

import torch

from .config import RunConfig
from .paths import cache_dir as default_cache_dir
from .train import RunResult, progress_bar, train


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def checkpoint_seconds() -> float:
    """$INFOREG_CHECKPOINT_SECONDS: the least time between two checkpoints of a run (default 0: after every
    epoch). A run killed between two loses at most that much training; the dry run of the full profile sets
    it so that its tiny epochs do not each write a ResNet pair's 180 MB of weights and momenta."""
    value = os.environ.get("INFOREG_CHECKPOINT_SECONDS", "0")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"INFOREG_CHECKPOINT_SECONDS={value!r}: expected a number of seconds") from None
    if seconds < 0:
        raise ValueError(f"INFOREG_CHECKPOINT_SECONDS={value!r}: must not be negative")
    return seconds


class FileCheckpoint:
    """A run's checkpoint file, replaced atomically; a save within `min_interval` seconds of the last
    written one (or of the start) is skipped."""

    def __init__(self, path: Path, min_interval: float = 0.0):
        self.path = Path(path)
        self.min_interval = min_interval
        self.last = time.monotonic()

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # a checkpoint is written atomically, so this is damage from outside
            raise RuntimeError(f"{self.path}: cannot read the checkpoint ({e}); delete it to start the run "
                               "again from epoch 0") from e

    def save(self, state: dict) -> None:
        if self.min_interval and time.monotonic() - self.last < self.min_interval:
            return
        _save_torch(self.path, state)
        self.last = time.monotonic()


def _save_torch(path: Path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def entry_dir(cfg: RunConfig, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / cfg.hash()


def load_result(cfg: RunConfig, cache_dir: str | Path | None = None) -> RunResult | None:
    """The cached result of `cfg`, or None if it has not finished."""
    path = entry_dir(cfg, cache_dir) / "result.json"
    if not path.exists():
        return None
    try:
        result = RunResult.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RuntimeError(f"{path}: not a valid result ({type(e).__name__}: {e}); delete it to run again") from e
    if result.config != cfg.to_json_dict():
        raise RuntimeError(f"{path}: holds a different config than its hash says; delete the folder")
    return result


def get_or_run(cfg: RunConfig, cache_dir: str | Path | None = None, progress: bool | None = None,
               force: bool = False) -> RunResult:
    """The finished run of `cfg` from the cache, or train it (resuming a killed run) and cache it."""
    if not force:
        done = load_result(cfg, cache_dir)
        if done is not None:
            return done
    folder = entry_dir(cfg, cache_dir)
    atomic_write(folder / "config.json", json.dumps(cfg.to_dict(), indent=1, sort_keys=True).encode())
    checkpoint = FileCheckpoint(folder / "checkpoint.pt", checkpoint_seconds())
    if force and checkpoint.path.exists():
        checkpoint.path.unlink()
    result = train(cfg, progress=progress, checkpoint=checkpoint)
    _save_torch(folder / "model.pt", result.model_state)
    atomic_write(folder / "result.json", result.to_json().encode())
    if checkpoint.path.exists():
        checkpoint.path.unlink()
    return result


def default_workers() -> int:
    """Processes for a group of runs: $INFOREG_WORKERS, else one per CPU core (each run uses `threads`)."""
    return max(1, int(os.environ.get("INFOREG_WORKERS", os.cpu_count() or 1)))


def get_or_run_all(cfgs: Iterable[RunConfig], cache_dir: str | Path | None = None,
                   progress: bool | None = None, desc: str = "runs", workers: int | None = None
                   ) -> list[RunResult]:
    """`get_or_run` for each config, with one progress bar over the runs (their own epoch bars stay hidden).

    Runs missing from the cache train in `workers` worker processes at once (default: `default_workers()`),
    each a `python -m inforeg work` that writes into the same cache. Every run is seeded and
    single-threaded, so the results are exactly those of running them one after another.

    With $INFOREG_BACKEND set (serial, local, slurm, ray; options as JSON in $INFOREG_BACKEND_OPTIONS) the
    missing runs go through `inforeg.launch` on that backend instead, and this waits for them."""
    cfgs = list(cfgs)
    backend = os.environ.get("INFOREG_BACKEND", "").strip()
    if backend:
        from .launch import run_grid

        options = {"workers": workers} if backend == "local" and workers is not None else {}
        return run_grid(cfgs, backend, cache_dir=cache_dir, progress=progress, desc=desc, **options)
    todo = list(dict.fromkeys(c for c in cfgs if load_result(c, cache_dir) is None))
    workers = min(default_workers() if workers is None else workers, len(todo))
    with progress_bar(progress, total=len(cfgs), initial=len(cfgs) - len(todo), desc=desc, unit="run") as bar:
        if workers <= 1:
            for cfg in todo:
                get_or_run(cfg, cache_dir=cache_dir, progress=False)
                bar.update(1)
        else:
            _in_workers(todo, cache_dir, workers, bar)
    return [load_result(c, cache_dir) for c in cfgs]


def _in_workers(cfgs: list[RunConfig], cache_dir, workers: int, bar) -> None:
    """Train `cfgs` in `workers` subprocesses (round-robin shares), updating `bar` as results appear."""
    import subprocess
    import sys
    import time

    cache = Path(cache_dir if cache_dir is not None else default_cache_dir())
    with tempfile.TemporaryDirectory(prefix="inforeg-work-") as tmp:
        procs = []
        try:
            for w in range(workers):
                listing = Path(tmp) / f"worker{w}.json"
                listing.write_text(json.dumps([c.to_dict() for c in cfgs[w::workers]]))
                log = open(Path(tmp) / f"worker{w}.log", "w")
                cmd = [sys.executable, "-m", "inforeg", "work", str(listing), "--cache-dir", str(cache)]
                procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
            done = 0
            while True:
                running = any(p.poll() is None for p, _ in procs)
                finished = sum((entry_dir(c, cache) / "result.json").exists() for c in cfgs)
                bar.update(finished - done)
                done = finished
                if not running:
                    break
                time.sleep(0.5)
        finally:
            for p, log in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                log.close()
        failed = [(w, p.returncode) for w, (p, _) in enumerate(procs) if p.returncode != 0]
        if failed:
            w, code = failed[0]
            tail = (Path(tmp) / f"worker{w}.log").read_text()[-3000:]
            raise RuntimeError(f"a worker process failed (exit {code}); its last output:\n{tail}")


def load_model(cfg: RunConfig, cache_dir: str | Path | None = None):
    """The trained model of a finished run (trained now if it is not in the cache), in eval mode on the CPU,
    with the run's data splits: `model, splits = load_model(cfg)`."""
    from . import data as datasets
    from .models import build_model

    path = entry_dir(cfg, cache_dir) / "model.pt"
    if load_result(cfg, cache_dir) is None or not path.exists():
        get_or_run(cfg, cache_dir=cache_dir, progress=False, force=load_result(cfg, cache_dir) is not None)
    splits = datasets.load(cfg.data, cfg.seed)
    model = build_model(cfg.model, splits.input_dims(), splits.num_classes)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:
        raise RuntimeError(f"{path}: cannot load the trained weights ({e}); delete the folder to retrain") from e
    return model.eval(), splits


def features(cfg: RunConfig, split: str = "test", cache_dir: str | Path | None = None, device: str | None = None):
    """Each encoder's features on a split of a finished run: ({modality: (N, D) array}, labels array), computed
    on `device` (None: the run's own, e.g. the GPU that trained a full-profile run; the arrays are on the CPU)."""
    from .config import resolve_device
    from .train import evaluate

    model, splits = load_model(cfg, cache_dir)
    dataset = getattr(splits, split)
    if dataset is None:
        raise ValueError(f"this run has no {split!r} split")
    device = resolve_device(device or cfg.device)
    return evaluate(model.to(device), dataset, device, features=True)["features"], dataset.labels.numpy()
