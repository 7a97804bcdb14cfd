"""`python -m inforeg ...`: the train contract (JSON keys), --set, clear exit-2 errors, methods, config."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from inforeg.cli import main
from inforeg.config import make_config, valid_keys

QUICK = ["--epochs", "2", "--set", "data.n_train=256", "--set", "data.n_test=256"]


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """The default cache lives in tmp, so that no test writes into the repository."""
    monkeypatch.setenv("INFOREG_CACHE_DIR", str(tmp_path / "default_cache"))


def _train(tmp_path, *extra, name="r.json"):
    out = tmp_path / name
    code = main(["train", *QUICK, "--cache-dir", str(tmp_path / "cache"), "--quiet", "--out", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def _exits_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


# --- the train contract ------------------------------------------------------------------------------

def test_train_contract_json_keys(tmp_path):
    """`python -m inforeg train --dataset teaching --method inforeg --preset paper --seed 0 --out r.json`
    writes a JSON summary with the results, the per-epoch history and the config."""
    cmd = [sys.executable, "-m", "inforeg", "train", "--dataset", "teaching", "--method", "inforeg", "--preset",
           "paper", "--seed", "0", "--out", "r.json", *QUICK, "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())

    mods = ["A", "B"]
    assert 0.0 <= r["test_acc"] <= 1.0
    assert sorted(r["test_acc_by_modality"]) == mods
    assert sorted(r["probe_acc_by_modality"]) == mods
    assert all(0.0 <= v <= 1.0 for v in [*r["test_acc_by_modality"].values(), *r["probe_acc_by_modality"].values()])
    assert r["config"]["method"]["name"] == "inforeg" and r["config"]["method"]["preset"] == "paper"
    assert r["config"]["data"]["name"] == "teaching" and r["config"]["seed"] == 0
    assert r["config"]["epochs"] == 2 and r["config"]["data"]["n_train"] == 256

    history = r["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    for h in history:
        for key in ("epoch", "train_loss", "test_acc", "test_acc_by_modality", "trace", "trace_official",
                    "grad_norm", "window", "alpha", "reg_frac", "regulated_frac"):
            assert key in h, key
        assert sorted(h["trace"]) == ["A", "B", "all"]
        assert sorted(h["trace_official"]) == ["A", "B", "all"]
        assert all(v > 0 for v in h["trace"].values())
        for key in ("test_acc_by_modality", "grad_norm", "window", "alpha", "reg_frac"):
            assert sorted(h[key]) == mods, key
        assert all(isinstance(v, bool) for v in h["window"].values())
        assert isinstance(h["train_loss"], float) and h["train_loss"] > 0
    assert history[-1]["test_acc"] == r["test_acc"]
    assert history[-1]["test_acc_by_modality"] == r["test_acc_by_modality"]
    # the run went through the cache given on the command line
    assert r["cache_entry"] == str(tmp_path / "cache" / make_config(
        method="inforeg", overrides={"epochs": 2, "data.n_train": 256, "data.n_test": 256}).hash())
    assert (tmp_path / "cache").is_dir() and not (tmp_path / "default_cache").exists()


def test_set_changes_recorded_config(tmp_path):
    """--set key=value (repeatable) changes the config the JSON records, and the run follows it."""
    r = _train(tmp_path, "--set", "method.beta=0.5", "--set", "data.modalities=B", "--set", "optim.lr=0.02")
    assert r["config"]["method"]["beta"] == 0.5
    assert r["config"]["data"]["modalities"] == ["B"]
    assert r["config"]["optim"]["lr"] == 0.02
    assert sorted(r["test_acc_by_modality"]) == ["B"]  # the run really trained B alone
    assert sorted(r["history"][0]["trace"]) == ["B", "all"]


def test_seed_and_method_options_are_recorded(tmp_path):
    """--seed, --method, --preset and --dataset land in the recorded config."""
    r = _train(tmp_path, "--seed", "3", "--method", "joint", "--dataset", "teaching3")
    assert r["config"]["seed"] == 3
    assert r["config"]["method"]["name"] == "joint"
    assert r["config"]["data"]["name"] == "teaching3"
    assert sorted(r["test_acc_by_modality"]) == ["A", "B", "C"]


def test_train_to_stdout_without_out(tmp_path, capsys):
    """Without --out, the JSON summary goes to standard output."""
    assert main(["train", *QUICK, "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert "test_acc" in r and len(r["history"]) == 2


def test_no_cache_writes_no_cache(tmp_path):
    """--no-cache trains without touching the cache (cache_entry is null)."""
    out = tmp_path / "r.json"
    assert main(["train", *QUICK, "--no-cache", "--quiet", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["cache_entry"] is None
    assert not (tmp_path / "default_cache").exists()


def test_default_cache_follows_environment(tmp_path):
    """Without --cache-dir the run is cached under $INFOREG_CACHE_DIR."""
    out = tmp_path / "r.json"
    assert main(["train", *QUICK, "--quiet", "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["cache_entry"]
    assert entry.startswith(str(tmp_path / "default_cache"))
    assert (tmp_path / "default_cache" / os.path.basename(entry) / "result.json").exists()


# --- errors ------------------------------------------------------------------------------------------

def test_unknown_option_exits_2(tmp_path, capsys):
    """An unknown command-line option exits with code 2 and names the option."""
    err = _exits_2(["train", "--bogus-option", "1", "--out", str(tmp_path / "r.json")], capsys)
    assert "--bogus-option" in err
    assert not (tmp_path / "r.json").exists()


def test_unknown_key_exits_2(tmp_path, capsys):
    """--set with an unknown key exits with code 2 and names the key."""
    err = _exits_2(["train", "--set", "method.betaa=0.5", "--out", str(tmp_path / "r.json")], capsys)
    assert "method.betaa" in err
    assert not (tmp_path / "r.json").exists()


def test_bad_value_exits_2(tmp_path, capsys):
    """--set method.beta=abc exits with code 2 naming the key and the value."""
    err = _exits_2(["train", "--set", "method.beta=abc", "--out", str(tmp_path / "r.json")], capsys)
    assert "method.beta" in err and "abc" in err
    assert not (tmp_path / "r.json").exists()


def test_bad_value_fails_clearly_in_a_real_process(tmp_path):
    """The real `python -m inforeg` exits 2 on a bad value, with one error line and no traceback."""
    cmd = [sys.executable, "-m", "inforeg", "train", "--set", "method.beta=abc", "--out", "r.json"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "method.beta" in proc.stderr and "abc" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("argv, needle", [
    (["train", "--set", "method.beta"], "key=value"),
    (["train", "--method", "foo"], "foo"),
    (["train", "--preset", "nope"], "nope"),
    (["train", "--dataset", "nope"], "nope"),
    (["train", "--epochs", "zero"], "zero"),
    (["train", "--epochs", "0"], "epochs"),
    (["frobnicate"], "frobnicate"),
    (["config", "--set", "window.rule=sideways"], "window.rule"),
])
def test_other_errors_exit_2(argv, needle, capsys):
    """Malformed --set, unknown method / preset / dataset / command, bad numbers: exit 2 naming the problem."""
    err = _exits_2(argv, capsys)
    assert needle in err


def test_unknown_method_lists_known_methods(capsys):
    """An unknown --method lists the known ones."""
    err = _exits_2(["train", "--method", "foo"], capsys)
    assert "joint" in err and "inforeg" in err


# --- methods and config ------------------------------------------------------------------------------

def test_methods_lists_joint_and_inforeg(capsys):
    """`python -m inforeg methods` lists joint and inforeg, one per line with a description."""
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines if line.strip()]
    assert "joint" in names and "inforeg" in names
    assert all(len(line.split()) > 1 for line in lines if line.strip())


def test_config_keys_lists_every_key(capsys):
    """`python -m inforeg config --keys` prints every key --set accepts."""
    assert main(["config", "--keys"]) == 0
    keys = capsys.readouterr().out.split()
    assert keys == valid_keys()
    for key in ("method.beta", "data.modalities", "window.K", "optim.lr", "epochs", "seed"):
        assert key in keys


def test_config_prints_resolved_config(capsys):
    """`python -m inforeg config --method inforeg --preset official` prints the resolved config as JSON."""
    assert main(["config", "--method", "inforeg", "--preset", "official", "--seed", "2"]) == 0
    d = json.loads(capsys.readouterr().out)
    expected = json.loads(json.dumps(make_config(method="inforeg", preset="official", seed=2).to_dict()))
    assert d == expected
    assert d["method"]["score"] == "sum" and d["window"]["rule"] == "official"


def test_star_method_sets_unimodal_weight(capsys, tmp_path):
    """--method 'inforeg*' is InfoReg with method.unimodal_weight 1 (in config and in a trained run)."""
    assert main(["config", "--method", "inforeg*"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["method"]["name"] == "inforeg" and d["method"]["unimodal_weight"] == 1.0
    assert main(["config", "--method", "inforeg"]) == 0
    assert json.loads(capsys.readouterr().out)["method"]["unimodal_weight"] == 0.0
    r = _train(tmp_path, "--method", "inforeg*")
    assert r["config"]["method"]["unimodal_weight"] == 1.0 and r["config"]["method"]["name"] == "inforeg"


def test_epochs_option_overrides_profile(capsys):
    """--epochs sets the number of epochs; without it the profile's 30 stay."""
    assert main(["config", "--epochs", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 7
    assert main(["config"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 30
