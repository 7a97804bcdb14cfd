"""Kinetics-Sounds: both list formats, the Kaldi fbank recipe, 1 fps frames (folders or video), bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inforeg.config import make_config
from inforeg.data import DataError, load
from inforeg.data.kinetics_sounds import prepare, read_list
from media_files import colours, write_frames, write_video, write_wav

SIZE = 24
NORMALISED_ZERO = (0 + 4.503877) / (2 * 5.141276)  # what zero padding becomes


def _official_fbank(samples: np.ndarray, rate: int) -> np.ndarray:
    """OGM-GE's process_audio.py, written out independently of the package."""
    from torchaudio.compliance import kaldi

    w = torch.from_numpy(samples)[None]
    w = w - w.mean()
    fbank = kaldi.fbank(w, htk_compat=True, sample_frequency=rate, use_energy=False, window_type="hanning",
                        num_mel_bins=128, dither=0.0, frame_shift=10)
    p = 1024 - fbank.shape[0]
    fbank = torch.nn.ZeroPad2d((0, 0, 0, p))(fbank) if p > 0 else fbank[:1024]
    return ((fbank - (-4.503877)) / (5.141276 * 2)).numpy()


@pytest.fixture(scope="module")
def ks(tmp_path_factory):
    """5 train and 2 test clips; clip 0 is 11 s long (cut at 1,024 frames), clip 3 comes as an MP4."""
    root = tmp_path_factory.mktemp("ks_raw")
    clips = {}
    for i in range(7):
        name = f"clip{i}_{i:06d}_{i + 10:06d}"
        audio = write_wav(root / "audio" / f"{name}.wav", 11.0 if i == 0 else 1.0 + 0.5 * i, seed=i)
        fill = colours(10 if i != 1 else 4, seed=i)
        if i == 3:
            write_video(root / "video" / f"{name}.mp4", [c for c in fill for _ in range(10)], fps=10, codec="mpeg4")
        else:
            write_frames(root / "frames" / name, fill, pattern="frame_{:05d}.jpg")
        clips[name] = {"label": (5 * i) % 31, "audio": audio, "colours": fill}
    names = list(clips)
    (root / "train.txt").write_text("".join(f"{n},10,{clips[n]['label']}\n" for n in names[:5]))  # OGM-GE lists
    (root / "test.txt").write_text("".join(f"{n} {clips[n]['label']}\n" for n in names[5:]))  # InfoReg lists
    out = tmp_path_factory.mktemp("ks_cache")
    manifest = prepare(root, out, size=SIZE, workers=0, log=lambda s: None)
    return root, out, manifest, clips


def test_both_list_formats(tmp_path):
    (tmp_path / "a.txt").write_text("--4-0ihtnBU_000058_000068,10,4\n-3Mwkq-7TV4_2,10,23\n\n")
    (tmp_path / "b.txt").write_text("--4-0ihtnBU_000058_000068 4\n-3Mwkq-7TV4_2 23\n")
    a = read_list(tmp_path / "a.txt", "train", 31, False)
    assert a == read_list(tmp_path / "b.txt", "train", 31, False)
    assert a[0] == [("--4-0ihtnBU_000058_000068", 4), ("-3Mwkq-7TV4_2", 23)]


def test_manifest_and_fbank(ks):
    root, out, manifest, clips = ks
    assert {s: v["clips"] for s, v in manifest["splits"].items()} == {"train": 5, "test": 2}
    assert manifest["modalities"]["audio"] == {"kind": "spectrogram", "shape": [1024, 128], "dtype": "float16"}
    assert manifest["classes"] == [str(i) for i in range(31)] and manifest["recipe"]["train_frames"] == "segments"
    audio = np.load(out / "train.audio.npy")
    names = (out / "train.clips.txt").read_text().split()
    for i, name in enumerate(names):
        expected = _official_fbank(clips[name]["audio"], 16000)
        assert np.allclose(audio[i].astype(np.float32), expected, atol=2e-3, rtol=2e-3)
    # 1.0 + 0.5 i seconds -> about 100 (1 + 0.5 i) frames, the rest is normalised zero padding
    assert np.allclose(audio[1, 200:].astype(np.float32), NORMALISED_ZERO, atol=1e-3)
    assert not np.allclose(audio[0, 1000:].astype(np.float32), NORMALISED_ZERO, atol=1e-3)  # 11 s: cut


def test_frames_from_folders_and_video(ks):
    """Every 1 fps frame is stored; an MP4 is decoded at 1 frame a second."""
    _, out, _, clips = ks
    offsets = np.load(out / "train.visual.offsets.npy")
    frames = np.load(out / "train.visual.npy")
    names = (out / "train.clips.txt").read_text().split()
    assert np.diff(offsets).tolist() == [len(clips[n]["colours"]) for n in names]
    for i in (0, 3):  # a JPEG folder, the MP4
        mean_rgb = frames[offsets[i]:offsets[i + 1]].reshape(-1, 3, SIZE * SIZE).mean(-1)
        assert np.abs(mean_rgb - np.array(clips[names[i]]["colours"])).max() < 12


def test_test_frames_one_per_third(ks):
    """Test: frames 1, 5 and 8 of 10 (the middle of each third); train: one at random within each third."""
    _, out, _, _ = ks
    cfg = make_config(dataset="kinetics_sounds", profile="full", device="cpu",
                      overrides={"data.root": str(out), "data.image_size": SIZE})
    splits = load(cfg.data, 0)
    assert splits.num_classes == 31
    test = next(iter(splits.test.batches(8))).to("cpu")
    assert test.inputs["audio"].shape == (2, 1024, 128) and test.inputs["visual"].shape == (2, 3, 3, SIZE, SIZE)
    stored = torch.from_numpy(np.load(out / "test.visual.npy"))
    from inforeg.data.cache import finish_frames

    assert torch.allclose(test.inputs["visual"][0], finish_frames(stored[[1, 5, 8]][None], SIZE)[0])
    assert splits.train.recipe.train_pick == "segments"


@pytest.mark.parametrize("line, problem", [("clipX,10,31", "unknown label '31'"), ("clipX,10,cat", "unknown label"),
                                           ("clipX", "expected")])
def test_bad_list_lines(tmp_path, line, problem):
    path = tmp_path / "train.txt"
    path.write_text(f"clipA,10,3\n{line}\n")
    with pytest.raises(DataError, match=problem) as e:
        read_list(path, "train", 31, False)
    assert str(path) in str(e.value) and "line 2" in str(e.value)
    rows, bad = read_list(path, "train", 31, True)
    assert rows == [("clipA", 3)] and len(bad) == 1 and bad[0]["file"] == str(path)


def test_missing_list_and_media(ks, tmp_path):
    root = ks[0]
    with pytest.raises(DataError, match="missing test list") as e:
        prepare(root, tmp_path / "out", test_list=tmp_path / "nope.txt", workers=0, log=lambda s: None)
    assert "nope.txt" in str(e.value)
    lst = tmp_path / "train.txt"
    lst.write_text("ghost_000001_000011,10,2\n")
    with pytest.raises(DataError, match="missing audio file") as e:
        prepare(root, tmp_path / "out", train_list=lst, workers=0, log=lambda s: None)
    assert "ghost_000001_000011.wav" in str(e.value)
    with pytest.raises(DataError, match="no usable clip left in the train split"):
        prepare(root, tmp_path / "out", train_list=lst, size=SIZE, skip_bad=True, workers=0, log=lambda s: None)
    report = json.loads((tmp_path / "out" / "skipped.json").read_text())["skipped"]
    assert [r["clip"] for r in report] == ["ghost_000001_000011"] and "missing audio file" in report[0]["problem"]
