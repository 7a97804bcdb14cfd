"""The results cache (inforeg/runs.py): hits, entry layout, resume after a kill or a crash, atomic writes,
clear errors on damaged files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import inforeg.runs as runs
from inforeg.config import make_config
from inforeg.runs import FileCheckpoint, atomic_write, entry_dir, get_or_run, get_or_run_all, load_result
from inforeg.train import TIMING_KEYS

SMALL = {"epochs": 3, "data.n_train": 256, "data.n_test": 256}


def _comparable(result) -> dict:
    """A result as JSON, without the wall-clock field (the only one allowed to differ between runs)."""
    d = json.loads(result.to_json()) if hasattr(result, "to_json") else dict(result)
    d.pop("cache_entry", None)
    d["history"] = [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in d["history"]]
    return d


# --- cache hits and layout ---------------------------------------------------------------------------

def test_second_call_reads_the_cache(tmp_path, monkeypatch):
    """get_or_run twice gives the same numbers, and the second call does not train."""
    cfg = make_config(method="inforeg", overrides=SMALL)
    first = get_or_run(cfg, cache_dir=tmp_path, progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("get_or_run trained a run that is in the cache")

    monkeypatch.setattr(runs, "train", no_training)
    second = get_or_run(cfg, cache_dir=tmp_path, progress=False)
    assert second.to_json() == first.to_json()  # every number, the per-epoch seconds included
    assert second.test_acc == first.test_acc
    assert second.cfg == cfg


def test_entry_layout_after_completion(tmp_path):
    """A finished entry is <cache>/<hash>/ with config.json and result.json, and no checkpoint."""
    cfg = make_config(overrides=SMALL)
    result = get_or_run(cfg, cache_dir=tmp_path, progress=False)
    folder = tmp_path / cfg.hash()
    assert entry_dir(cfg, tmp_path) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.pt", "result.json"]
    assert [p.name for p in tmp_path.iterdir()] == [cfg.hash()]
    assert json.loads((folder / "config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))
    assert json.loads((folder / "result.json").read_text())["test_acc"] == result.test_acc
    assert len(result.history) == 3


def test_different_config_gets_a_different_folder(tmp_path):
    """Two configs differing in one field are cached in two folders with their own results."""
    a = make_config(overrides=SMALL)
    b = make_config(overrides={**SMALL, "optim.lr": 0.05})
    ra = get_or_run(a, cache_dir=tmp_path, progress=False)
    rb = get_or_run(b, cache_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.hash(), b.hash()])
    assert ra.cfg == a and rb.cfg == b
    assert ra.history[-1]["train_loss"] != rb.history[-1]["train_loss"]


def test_load_result_none_until_finished(tmp_path):
    """load_result is None for a run that has not been trained, the result once it has."""
    cfg = make_config(overrides=SMALL)
    assert load_result(cfg, tmp_path) is None
    result = get_or_run(cfg, cache_dir=tmp_path, progress=False)
    assert load_result(cfg, tmp_path).to_json() == result.to_json()


def test_force_retrains(tmp_path, monkeypatch):
    """force=True trains again even with a cached result."""
    cfg = make_config(overrides=SMALL)
    get_or_run(cfg, cache_dir=tmp_path, progress=False)
    calls = []
    real_train = runs.train
    monkeypatch.setattr(runs, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    again = get_or_run(cfg, cache_dir=tmp_path, progress=False, force=True)
    assert calls == [1]
    assert sorted(p.name for p in (tmp_path / cfg.hash()).iterdir()) == ["config.json", "model.pt", "result.json"]
    assert again.cfg == cfg


def test_get_or_run_all_keeps_order_and_caches(tmp_path, monkeypatch):
    """get_or_run_all returns one result per config, in order, each from its own cache entry."""
    cfgs = [make_config(seed=s, overrides=SMALL) for s in (1, 0)]
    results = get_or_run_all(cfgs, cache_dir=tmp_path, progress=False)
    assert [r.cfg.seed for r in results] == [1, 0]
    monkeypatch.setattr(runs, "train", lambda *a, **k: pytest.fail("trained again"))
    again = get_or_run_all(cfgs, cache_dir=tmp_path, progress=False)
    assert [r.to_json() for r in again] == [r.to_json() for r in results]


def test_result_of_another_config_is_rejected(tmp_path):
    """A result.json whose config does not match its folder's hash raises RuntimeError naming the file."""
    a = make_config(overrides=SMALL)
    b = make_config(seed=1, overrides=SMALL)
    get_or_run(a, cache_dir=tmp_path, progress=False)
    folder_b = entry_dir(b, tmp_path)
    folder_b.mkdir()
    (folder_b / "result.json").write_bytes((entry_dir(a, tmp_path) / "result.json").read_bytes())
    with pytest.raises(RuntimeError) as e:
        get_or_run(b, cache_dir=tmp_path, progress=False)
    assert str(folder_b / "result.json") in str(e.value)


# --- resume ------------------------------------------------------------------------------------------

def _cli(cache, out, epochs):
    return [sys.executable, "-m", "inforeg", "train", "--dataset", "teaching", "--method", "inforeg",
            "--preset", "paper", "--seed", "0", "--epochs", str(epochs), "--cache-dir", str(cache), "--quiet",
            "--out", str(out)]




def _epochs_saved(ckpt) -> int:
    """Epochs in the checkpoint now (0 if there is none yet)."""
    try:
        return len(torch.load(ckpt, map_location="cpu", weights_only=False)["history"])
    except FileNotFoundError:
        return 0


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    """A CLI run killed with SIGKILL mid-run leaves a loadable checkpoint and no result; rerunning resumes
    and ends with exactly the numbers of an uninterrupted run."""
    epochs, kill_after = 12, 3  # killed inside epoch 3 or later: InfoReg may regulate from epoch 2
    for attempt in range(4):  # if the run outpaces the kill, make it longer (never skip the check)
        cache, out = tmp_path / f"killed{attempt}", tmp_path / f"killed{attempt}.json"
        cfg = make_config(method="inforeg", preset="paper", seed=0, overrides={"epochs": epochs})
        ckpt = entry_dir(cfg, cache) / "checkpoint.pt"
        proc = subprocess.Popen(_cli(cache, out, epochs), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while proc.poll() is None and _epochs_saved(ckpt) < kill_after and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
            assert proc.returncode == -signal.SIGKILL
            break
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        epochs *= 2
    else:
        pytest.fail("the run finished before it could be killed, even at %d epochs" % epochs)

    assert not (entry_dir(cfg, cache) / "result.json").exists()
    assert not out.exists()
    saved = FileCheckpoint(ckpt).load()
    done = len(saved["history"])
    assert kill_after <= done < epochs
    assert [h["epoch"] for h in saved["history"]] == list(range(done))

    subprocess.run(_cli(cache, out, epochs), cwd=tmp_path, check=True, capture_output=True,
                   timeout=300)
    resumed = json.loads(out.read_text())
    assert not ckpt.exists()
    assert (entry_dir(cfg, cache) / "result.json").exists()
    # the epochs before the kill come from the checkpoint (their wall-clock seconds included): a resume
    assert [h["seconds"] for h in resumed["history"][:done]] == [h["seconds"] for h in saved["history"]]

    ref_out = tmp_path / "uninterrupted.json"
    subprocess.run(_cli(tmp_path / "uninterrupted", ref_out, epochs), cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    reference = json.loads(ref_out.read_text())
    assert len(resumed["history"]) == epochs
    assert resumed["test_acc"] == reference["test_acc"]
    assert _comparable(resumed) == _comparable(reference)
    print(f"\nkilled after {done} of {epochs} epochs; resumed test_acc {resumed['test_acc']:.4f}")


class _CrashAfter(FileCheckpoint):
    """A checkpoint whose save fails (like a crash) once `limit` saves have succeeded."""

    limit = 3
    saves = 0

    def save(self, state):
        if _CrashAfter.saves >= _CrashAfter.limit:
            raise RuntimeError("simulated crash while saving")
        _CrashAfter.saves += 1
        super().save(state)


def test_resume_in_process_after_crash(tmp_path, monkeypatch):
    """A run that crashes after epoch k resumes from its checkpoint and equals an uninterrupted run."""
    overrides = {**SMALL, "epochs": 6, "method.regulate": "always"}  # regulation acts in the resumed part
    cfg = make_config(method="inforeg", overrides=overrides)
    monkeypatch.setattr(runs, "FileCheckpoint", _CrashAfter)
    _CrashAfter.saves = 0
    with pytest.raises(RuntimeError, match="simulated crash"):
        get_or_run(cfg, cache_dir=tmp_path / "crashed", progress=False)
    folder = entry_dir(cfg, tmp_path / "crashed")
    assert not (folder / "result.json").exists()
    saved = FileCheckpoint(folder / "checkpoint.pt").load()
    assert len(saved["history"]) == _CrashAfter.limit
    monkeypatch.undo()

    resumed = get_or_run(cfg, cache_dir=tmp_path / "crashed", progress=False)
    assert [h["seconds"] for h in resumed.history[:3]] == [h["seconds"] for h in saved["history"]]
    assert not (folder / "checkpoint.pt").exists()
    reference = get_or_run(cfg, cache_dir=tmp_path / "reference", progress=False)
    assert any(h["reg_frac"]["A"] > 0 or h["reg_frac"]["B"] > 0 for h in reference.history[3:])
    assert _comparable(resumed) == _comparable(reference)


def test_train_resumes_from_any_checkpointer(tmp_path):
    """train() with an in-memory Checkpointer that holds epoch-2 state finishes like a fresh run."""
    from inforeg.train import train

    cfg = make_config(method="inforeg", overrides={**SMALL, "epochs": 4, "method.regulate": "always"})

    class Memory:
        def __init__(self, state=None):
            self.state, self.saved = state, []

        def load(self):
            return self.state

        def save(self, state):
            self.saved.append(len(state["history"]))
            if len(state["history"]) == 2:
                self.state = torch.load(_roundtrip(state, tmp_path), weights_only=False)

    first = Memory()
    reference = train(cfg, progress=False, checkpoint=first)
    assert first.saved == [1, 2, 3]  # after every epoch but the last
    resumed = train(cfg, progress=False, checkpoint=Memory(first.state))
    assert _comparable(resumed) == _comparable(reference)


def _roundtrip(state, tmp_path):
    path = tmp_path / "state.pt"
    torch.save(state, path)
    return path


# --- atomic writes -----------------------------------------------------------------------------------

def test_atomic_write_replaces_content(tmp_path):
    """atomic_write creates parent folders, writes the bytes and leaves only the target file."""
    target = tmp_path / "a" / "b" / "file.json"
    atomic_write(target, b"first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["file.json"]


@pytest.mark.parametrize("step", ["replace", "fsync", "write"])
def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch, step):
    """If writing fails midway, the old content stays and no temporary file is left behind."""
    target = tmp_path / "result.json"
    target.write_bytes(b"old content")

    def fail(*args, **kwargs):
        raise OSError(f"simulated failure in {step}")

    if step == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                fail()

        monkeypatch.setattr(runs.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(runs.os, step, fail)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(target, b"new content that is much longer than the old one")
    monkeypatch.undo()
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["result.json"]


def test_atomic_write_failure_creates_nothing(tmp_path, monkeypatch):
    """A failed first write leaves neither the target nor a temporary file."""
    def fail(*args):
        raise OSError("simulated")

    monkeypatch.setattr(runs.os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write(tmp_path / "new.json", b"data")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


# --- damaged files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b'{"test_acc": 0.', b"", b"{}", b"null", b"[1, 2]", b"\xff\xfe\x00garbage"],
                         ids=["truncated", "empty", "empty-object", "null", "list", "binary"])
def test_corrupted_result_raises_naming_the_file(tmp_path, content):
    """A damaged result.json gives a RuntimeError that names the file (not a bare parser error)."""
    cfg = make_config(overrides=SMALL)
    folder = entry_dir(cfg, tmp_path)
    folder.mkdir(parents=True)
    (folder / "result.json").write_bytes(content)
    with pytest.raises(RuntimeError) as e:
        get_or_run(cfg, cache_dir=tmp_path, progress=False)
    assert str(folder / "result.json") in str(e.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupted_checkpoint_raises_naming_the_file(tmp_path, monkeypatch, damage):
    """A damaged checkpoint.pt gives a RuntimeError that names the file."""
    cfg = make_config(overrides={**SMALL, "epochs": 5})
    folder = entry_dir(cfg, tmp_path)
    path = folder / "checkpoint.pt"
    if damage == "garbage":
        folder.mkdir(parents=True)
        path.write_bytes(b"this is not a torch checkpoint")
    else:
        monkeypatch.setattr(runs, "FileCheckpoint", _CrashAfter)
        _CrashAfter.saves = 0
        with pytest.raises(RuntimeError, match="simulated crash"):
            get_or_run(cfg, cache_dir=tmp_path, progress=False)
        monkeypatch.undo()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError) as e:
        get_or_run(cfg, cache_dir=tmp_path, progress=False)
    assert str(path) in str(e.value)
    assert not (folder / "result.json").exists()


def test_checkpoint_interval_skips_saves_within_it(tmp_path, monkeypatch):
    """$INFOREG_CHECKPOINT_SECONDS: saves closer than that to the last one (or the start) are skipped; the
    result is the same; a bad value is named."""
    cfg = make_config(overrides={**SMALL, "epochs": 4})
    written = []
    monkeypatch.setattr(runs, "_save_torch", lambda path, obj: written.append(Path(path).name))
    monkeypatch.setenv("INFOREG_CHECKPOINT_SECONDS", "3600")
    slow = get_or_run(cfg, cache_dir=tmp_path / "hourly", progress=False)
    assert written == ["model.pt"]  # no epoch checkpoint within the hour, the final weights as always
    monkeypatch.setenv("INFOREG_CHECKPOINT_SECONDS", "0")
    written.clear()
    every = get_or_run(cfg, cache_dir=tmp_path / "every", progress=False)
    assert written == ["checkpoint.pt"] * 3 + ["model.pt"]  # after every epoch but the last
    assert _comparable(slow) == _comparable(every)
    monkeypatch.setenv("INFOREG_CHECKPOINT_SECONDS", "soon")
    with pytest.raises(ValueError, match="INFOREG_CHECKPOINT_SECONDS='soon'"):
        get_or_run(cfg, cache_dir=tmp_path / "bad", progress=False)
