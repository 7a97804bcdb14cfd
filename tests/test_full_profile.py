"""The full profile's plumbing without a GPU or the data: what each notebook studies (`study`), the random caches
in the real formats (`inforeg.data.synthetic`), `python -m inforeg check` and `./run_all.sh full`'s refusals.
The dry run of every notebook's full path is tests/test_run_all_full.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inforeg import make_config
from inforeg.cli import main
from inforeg.config import ConfigError
from inforeg.data import check_prepared, is_synthetic, load, synthetic
from inforeg.data.cache import read_manifest
from inforeg.experiments import DATASETS, over_seeds, study

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> Path:
    """Random CREMA-D, Kinetics-Sounds and CMU-MOSI caches, small spectrograms and frames."""
    root = tmp_path_factory.mktemp("synthetic")
    for name in ("cremad", "kinetics_sounds"):
        synthetic.write_audio_visual(name, root / name, n_train=12, n_test=6, spec_shape=(17, 12), frame_size=8,
                                     log=lambda _: None)
    synthetic.write_mosi(root / "mosi", n_train=12, n_val=6, n_test=6, log=lambda _: None)
    return root


def test_study_of_each_profile():
    ci, full = study("ci"), study("full")
    assert (ci.dataset, ci.modalities, ci.lead, ci.weak, ci.real) == ("teaching", ("A", "B"), "A", "B", False)
    assert (full.dataset, full.modalities, full.lead, full.weak, full.real) == ("cremad", ("audio", "visual"),
                                                                                "audio", "visual", True)
    assert study("full", "kinetics_sounds").modalities == ("audio", "visual")
    assert study("full", "mosi").lead == "text" and study("ci", "teaching3").modalities == ("A", "B", "C")


@pytest.mark.parametrize("profile, dataset, words", [
    ("ci", "cremad", "real datasets need the full profile"),
    ("full", "teaching", "the full profile is for real datasets"),
    ("ci", "imagenet", "unknown dataset 'imagenet'"),
    ("gpu", None, "unknown profile 'gpu'"),
])
def test_study_refuses_a_dataset_its_profile_cannot_run(profile, dataset, words):
    with pytest.raises(ConfigError, match=words):
        study(profile, dataset)


def test_announce_is_silent_in_ci_and_says_what_the_prose_describes_elsewhere(capsys):
    study("ci").announce()
    assert capsys.readouterr().out == ""  # the stored ci outputs do not change
    study("full").announce()
    out = capsys.readouterr().out
    assert "CREMA-D" in out and "audio is expected to lead" in out and "describes the stored outputs" in out


def test_over_seeds_takes_the_profiles_dataset():
    assert over_seeds("joint", [0], profile="ci")[0].data.name == "teaching"
    cfg = over_seeds("joint", [0], profile="full", device="cpu")[0]
    assert (cfg.data.name, cfg.model.encoder) == ("cremad", "resnet18")


def test_datasets_table_names_the_modalities_the_loaders_give(caches):
    for name in ("teaching", "teaching3", "tabular"):
        splits = load(make_config(dataset=name).data, 0)
        assert tuple(splits.train.modalities) == DATASETS[name]["modalities"], name
    for name in ("cremad", "kinetics_sounds", "mosi"):
        cfg = make_config(dataset=name, profile="full", device="cpu", overrides={"data.root": str(caches / name)})
        assert tuple(load(cfg.data, 0).train.modalities) == DATASETS[name]["modalities"], name
    for d in DATASETS.values():
        assert {d["lead"], d["weak"]} <= set(d["modalities"])


def test_synthetic_caches_have_the_real_format_and_say_they_are_random(caches):
    manifest = read_manifest(caches / "cremad", "cremad")
    assert manifest["classes"] == ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"] and is_synthetic(manifest)
    assert manifest["modalities"]["audio"] == {"kind": "spectrogram", "shape": [17, 12], "dtype": "float16"}
    assert manifest["modalities"]["visual"] == {"kind": "frames", "shape": [3, 8, 8], "dtype": "uint8"}
    assert "SYNTHETIC" in check_prepared("cremad", caches / "cremad")
    ks = read_manifest(caches / "kinetics_sounds", "kinetics_sounds")
    assert len(ks["classes"]) == 31 and ks["recipe"]["train_frames"] == "segments"
    mosi = read_manifest(caches / "mosi", "mosi")
    assert mosi["recipe"]["infinite_values_set_to_0"] == 24 and is_synthetic(mosi)  # one -inf a sample


def test_synthetic_audio_carries_the_label_more_strongly_than_the_frames(caches):
    """Class means differ far more than the noise in the audio (the leading modality), less in the frames."""
    cfg = make_config(dataset="cremad", profile="full", device="cpu",
                      overrides={"data.root": str(caches / "cremad"), "data.image_size": 8, "data.frames": 2})
    batch = next(iter(load(cfg.data, 0).train.batches(12)))
    x, y = batch.inputs, batch.labels.numpy()

    def separation(v):
        v = v.flatten(1).double().numpy()
        means = np.stack([v[y == c].mean(0) for c in range(6)])
        return np.linalg.norm(means - means.mean(0), axis=1).mean() / np.sqrt(v.shape[1])

    assert separation(x["audio"]) > 2 * separation(x["visual"]) > 0


def test_full_profile_trains_on_a_synthetic_cache(caches):
    from inforeg.train import train

    cfg = make_config(dataset="cremad", method="inforeg", profile="full", device="cpu",
                      overrides={"data.root": str(caches / "cremad"), "epochs": 1, "data.image_size": 8,
                                 "data.frames": 2, "optim.batch_size": 6})
    h = train(cfg, progress=False).history[0]
    assert h["trace"]["audio"] > 0 and h["trace"]["visual"] > 0  # the exact Tr F on the ResNet-18 pair


def test_check_needs_a_gpu_and_the_real_caches(tmp_path, caches, monkeypatch, capsys):
    monkeypatch.setenv("INFOREG_DATA_DIR", str(tmp_path))
    assert main(["check", "full"]) == 2
    err = capsys.readouterr().err
    if not torch.cuda.is_available():
        assert "no CUDA GPU is visible" in err
    assert f"{tmp_path / 'cremad'}: no manifest.json: prepare the data first" in err and "mosi" in err
    assert main(["check", "ci"]) == 0
    monkeypatch.setenv("INFOREG_DATA_DIR", str(caches))
    assert main(["check", "full", "--no-gpu"]) == 2  # random stand-ins are not the datasets
    assert "holds random content" in capsys.readouterr().err
    assert main(["check", "full", "--no-gpu", "--allow-synthetic"]) == 0
    out = capsys.readouterr().out
    assert "cremad: 12 train, 6 test in" in out and "mosi: 12 train, 6 val, 6 test in" in out


def test_synthetic_command_writes_caches_check_accepts(tmp_path, monkeypatch, capsys):
    assert main(["synthetic", "--out", str(tmp_path), "--datasets", "cremad,mosi", "--train", "8", "--test", "4",
                 "--spectrogram", "9x7", "--size", "8"]) == 0
    monkeypatch.setenv("INFOREG_DATA_DIR", str(tmp_path))
    capsys.readouterr()
    assert main(["check", "full", "--no-gpu", "--allow-synthetic"]) == 0
    assert read_manifest(tmp_path / "cremad", "cremad")["modalities"]["audio"]["shape"] == [9, 7]
    with pytest.raises(SystemExit):
        main(["synthetic", "--out", str(tmp_path), "--spectrogram", "9by7"])
    assert "--spectrogram expects FxT" in capsys.readouterr().err


def _run_all(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(["bash", str(ROOT / "run_all.sh"), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, words", [
    (["gpu"], "unknown profile 'gpu'"),
    (["--dry-run"], "--dry-run is for the full profile"),
    (["--backend", "slurm"], "--backend is for the full profile"),
    (["full", "--backend", "mpi"], "unknown backend 'mpi'"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
])
def test_run_all_refuses_bad_arguments(args, words):
    run = _run_all(*args)
    assert run.returncode == 2 and words in run.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_run_all_full_refuses_without_gpu_or_data(tmp_path):
    """Nothing runs: the check names what is missing and points at the dry run."""
    run = _run_all("full", env={"INFOREG_DATA_DIR": str(tmp_path)})
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no CUDA GPU is visible" in run.stderr and "--dry-run" in run.stderr
    assert "== 00_quickstart" not in run.stdout


def test_run_all_only_names_existing_notebooks(tmp_path):
    run = _run_all("full", "--dry-run", "--only", "99", env={"INFOREG_DRY_RUN_DIR": str(tmp_path)})
    assert run.returncode == 2 and "--only 99: no notebook has these numbers" in run.stderr


def test_step_cost_measures_methods_on_a_prepared_cache(caches):
    """08's cost column on real data: inforeg.cost.step_cost trains from a memory-mapped cache (no `.inputs`)."""
    from inforeg.cost import step_cost

    over = {"data.root": str(caches / "cremad"), "data.image_size": 8, "data.frames": 2, "optim.batch_size": 6}
    cfgs = {m: make_config(dataset="cremad", method=m, profile="full", device="cpu", overrides=over)
            for m in ("joint", "inforeg")}
    out = step_cost(cfgs, reference="joint", epochs=2, rounds=1)
    assert out["joint"]["ratio"] == 1.0 and out["inforeg"]["ms_per_step"] > 0
