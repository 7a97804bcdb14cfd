"""CREMA-D: raw files of the real format (WAV, FLV, JPEG folders, split CSVs) -> prepared cache -> batches.

Checks the recipe against librosa and the official frame extraction, the cache against its manifest, the
batches the training loop reads, every kind of bad input, --skip-bad, and one training epoch on the CPU."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inforeg.config import make_config
from inforeg.data import DataError, load
from inforeg.data.cache import FrameRecipe, crop_boxes, finish_frames, load_cache, pick_frames
from inforeg.data.cremad import CLASSES, prepare
from inforeg.data.media import kept_frame, log_stft, stft_spectrogram
from media_files import cremad_raw, write_float_wav

SIZE = 32  # stored frame size in these tests


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad_raw")
    return root, cremad_raw(root)


@pytest.fixture(scope="module")
def cache(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("cremad_cache")
    manifest = prepare(raw[0], out, size=SIZE, workers=0, log=lambda s: None)
    return out, manifest


def _cfg(root, **over):
    return make_config(dataset="cremad", profile="full", device="cpu",
                       overrides={"data.root": str(root), "data.image_size": SIZE, **over})


# --- the recipe --------------------------------------------------------------------------------------

def test_log_stft_equals_librosa():
    """log(|STFT| + 1e-7) with n_fft 512, hop 353, Hann, centred, reflect padding equals librosa's within 1e-4."""
    librosa = pytest.importorskip("librosa")
    x = np.random.default_rng(0).uniform(-1, 1, 22050 * 3)
    ours = log_stft(torch.from_numpy(x)).numpy()
    ref = np.log(np.abs(librosa.stft(x, n_fft=512, hop_length=353, pad_mode="reflect")) + 1e-7)
    assert ours.shape == ref.shape == (257, 188)
    assert np.abs(ours - ref).max() < 1e-4


def test_spectrogram_tiles_cuts_and_clips_to_three_seconds():
    """Short clips repeat, long ones are cut at 3 s, samples are clipped to [-1, 1]; always 257 x 188."""
    rng = np.random.default_rng(1)
    short = rng.uniform(-2, 2, 22050 // 2)  # 0.5 s, with samples outside [-1, 1]
    tiled = np.clip(np.tile(short, 6), -1, 1)
    assert np.allclose(stft_spectrogram(short, 22050), log_stft(torch.from_numpy(tiled)).numpy(), atol=1e-5)
    long = rng.uniform(-1, 1, 22050 * 5)
    assert np.allclose(stft_spectrogram(long, 22050), log_stft(torch.from_numpy(long[:66150])).numpy(), atol=1e-5)
    assert stft_spectrogram(rng.uniform(-1, 1, 16000), 16000).shape == (257, 188)  # resampled from 16 kHz


def test_official_frame_extraction_rule():
    """Per second of video, the frames at multiples of int(fps / N) below N * interval are kept."""
    assert [k for k in range(60) if kept_frame(k, 30, 3)] == [0, 10, 20, 30, 40, 50]
    assert [k for k in range(30) if kept_frame(k, 29.97, 3)] == [0, 9, 18, 29]  # int(29.97) = 29: interval 9
    assert [k for k in range(50) if kept_frame(k, 25, 1)] == [0, 25]


# --- the prepared cache ------------------------------------------------------------------------------

def test_manifest_counts_shapes_and_recipe(cache, raw):
    out, manifest = cache
    clips = raw[1]
    assert manifest["dataset"] == "cremad" and manifest["classes"] == list(CLASSES)
    assert manifest["modalities"] == {"audio": {"kind": "spectrogram", "shape": [257, 188], "dtype": "float16"},
                                      "visual": {"kind": "frames", "shape": [3, SIZE, SIZE], "dtype": "uint8"}}
    assert {s: v["clips"] for s, v in manifest["splits"].items()} == {"train": 6, "test": 3}
    train_labels = [c["label"] for c in clips.values() if c["split"] == "train"]
    assert manifest["splits"]["train"]["label_counts"] == {e: train_labels.count(i) for i, e in enumerate(CLASSES)}
    assert manifest["recipe"]["fps"] == 3 and manifest["skipped"] == 0
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert not (out / "skipped.json").exists()


def test_cache_holds_the_recipes_output(cache, raw):
    """Spectrograms equal the recipe (float16), frames are those the official extraction keeps, in order."""
    out, _ = cache
    audio = np.load(out / "train.audio.npy", mmap_mode="r")
    frames = np.load(out / "train.visual.npy", mmap_mode="r")
    offsets = np.load(out / "train.visual.offsets.npy")
    names = (out / "train.clips.txt").read_text().split()
    for i, name in enumerate(names):
        clip = raw[1][name]
        expected = stft_spectrogram(clip["audio"], 16000)
        assert np.allclose(audio[i].astype(np.float32), expected, atol=0.02, rtol=2e-3)
        kept = [c for k, c in enumerate(clip["colours"]) if kept_frame(k, 30, 3)]
        assert offsets[i + 1] - offsets[i] == len(kept) == len(clip["colours"]) // 10
        mean_rgb = frames[offsets[i]:offsets[i + 1]].reshape(len(kept), 3, -1).mean(-1)
        assert np.abs(mean_rgb - np.array(kept)).max() < 12  # FLV1 is lossy
    assert np.load(out / "train.labels.npy").tolist() == [raw[1][n]["label"] for n in names]


def test_frame_folders_instead_of_videos(tmp_path):
    """Image-03-FPS/<clip>/*.jpg folders are used when present: every image, in name order."""
    clips = cremad_raw(tmp_path / "raw", n_train=2, n_test=1, video=False)
    manifest = prepare(tmp_path / "raw", tmp_path / "out", size=SIZE, workers=0, log=lambda s: None)
    assert "Image-03-FPS" in manifest["recipe"]["visual"]
    frames = np.load(tmp_path / "out" / "train.visual.npy")
    first = list(clips.values())[0]["colours"][::10]
    mean_rgb = frames[:len(first)].reshape(len(first), 3, -1).mean(-1)
    assert np.abs(mean_rgb - np.array(first)).max() < 6


# --- batches -----------------------------------------------------------------------------------------

def test_batches_have_the_shapes_the_models_take(cache):
    splits = load(_cfg(cache[0]).data, 0)
    assert splits.num_classes == 6 and splits.modalities == ("audio", "visual")
    assert splits.input_dims() == {"audio": 1, "visual": 3} and (len(splits.train), len(splits.test)) == (6, 3)
    batch = next(iter(splits.train.batches(4, torch.Generator().manual_seed(0)))).to("cpu")
    assert batch.inputs["audio"].shape == (4, 257, 188) and batch.inputs["audio"].dtype == torch.float32
    assert batch.inputs["visual"].shape == (4, 3, 3, SIZE, SIZE) and batch.inputs["visual"].dtype == torch.float32
    assert batch.labels.dtype == torch.long and len(batch) == 4
    assert torch.isfinite(batch.inputs["visual"]).all()
    assert sum(len(b) for b in splits.test.batches(1024)) == 3


def test_test_frames_are_evenly_spaced_and_deterministic(cache):
    """Test batches: frame floor((i + 0.5) n / 3) of each clip, resized and ImageNet-normalised; no randomness."""
    out, _ = cache
    test = load(_cfg(out).data, 0).test
    stored = np.load(out / "test.visual.npy")
    offsets = np.load(out / "test.visual.offsets.npy")
    first = torch.cat([b.to("cpu").inputs["visual"] for b in test.batches(2)])
    again = torch.cat([b.to("cpu").inputs["visual"] for b in test.batches(1024)])
    assert torch.equal(first, again)
    for i in range(3):
        n = offsets[i + 1] - offsets[i]
        picks = [math.floor((j + 0.5) * n / 3) for j in range(3)]
        expected = finish_frames(torch.from_numpy(stored[offsets[i] + np.array(picks)])[None], SIZE)
        assert torch.allclose(first[i], expected[0])


def test_official_random_test_frames_option(cache):
    """data.test_frames=random draws test frames at random (from the global seed), as the official code."""
    test = load(_cfg(cache[0], **{"data.test_frames": "random"}).data, 0).test
    torch.manual_seed(0)
    a = torch.cat([b.to("cpu").inputs["visual"] for b in test.batches(8)])
    torch.manual_seed(0)
    b = torch.cat([b.to("cpu").inputs["visual"] for b in test.batches(8)])
    torch.manual_seed(1)
    c = torch.cat([b.to("cpu").inputs["visual"] for b in test.batches(8)])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_batches_follow_the_generator(cache):
    """Same generator seed, same batches (order, frames, crops, flips); another seed, other batches."""
    train = load(_cfg(cache[0]).data, 0).train

    def epoch(seed):
        return [b.to("cpu") for b in train.batches(4, torch.Generator().manual_seed(seed))]

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(x.inputs["visual"], y.inputs["visual"]) and torch.equal(x.labels, y.labels)
               for x, y in zip(a, b))
    assert not torch.equal(a[0].inputs["visual"], c[0].inputs["visual"])
    assert sorted(torch.cat([x.labels for x in a]).tolist()) == sorted(train.labels.tolist())


def test_frame_picks():
    """random: distinct frames in time order (repeats only when a clip is short); segments: one per third."""
    g = torch.Generator().manual_seed(0)
    counts = np.array([3, 9, 20, 2])
    for _ in range(20):
        p = pick_frames(counts, 3, "random", g)
        assert (np.diff(p[:3], axis=1) > 0).all() and (p < counts[:, None]).all()
        assert p[3].tolist() == [0, 1, 1]  # 2 frames: the evenly spaced picks
        s = pick_frames(counts, 3, "segments", g)
        assert ((s >= np.floor(np.arange(3) * counts[:, None] / 3)) & (s < np.ceil((np.arange(3) + 1) *
                                                                                 counts[:, None] / 3))).all()
    assert pick_frames(np.array([10]), 3, "even", None).tolist() == [[1, 5, 8]]


def test_crop_boxes_are_random_resized_crops():
    """Boxes lie inside the image, cover 8 % to 100 % of it with aspect 3/4 to 4/3 (torchvision's get_params)."""
    boxes = crop_boxes(2000, 40, 56, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 56).all()
    area = (h * w).double() / (40 * 56)
    assert area.min() > 0.07 and area.max() <= 1.0 and (w.double() / h).min() > 0.7 and (w.double() / h).max() < 1.4
    assert 0.4 < area.mean() < 0.65  # uniform area in [0.08, 1], minus rejected draws
    x = torch.randint(0, 256, (1, 2, 3, 40, 56), dtype=torch.uint8)
    full = torch.tensor([[0, 0, 40, 56]] * 2)
    flipped = finish_frames(x, 32, full, torch.tensor([True, False]))
    plain = finish_frames(x, 32)
    assert torch.allclose(flipped[0, 0], plain[0, 0].flip(-1), atol=1e-5)
    assert torch.allclose(flipped[0, 1], plain[0, 1], atol=1e-5)


def test_subsets_and_validation_split(cache):
    splits = load(_cfg(cache[0], **{"data.n_val": 2, "data.n_train": 3, "data.n_test": 2}).data, 0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3, 2, 2)
    only = load(_cfg(cache[0], **{"data.modalities": ("audio",)}).data, 0)
    assert only.modalities == ("audio",) and only.input_dims() == {"audio": 1}


# --- bad input ---------------------------------------------------------------------------------------

def _raw_with(tmp_path, damage):
    root = tmp_path / "raw"
    clips = cremad_raw(root, n_train=2, n_test=1)
    name = next(iter(clips))
    return root, name, damage(root, name)


def _truncate_wav(root, name):
    path = root / "AudioWAV" / f"{name}.wav"
    path.write_bytes(path.read_bytes()[:3000])
    return path, "truncated"


def _garbage_wav(root, name):
    path = root / "AudioWAV" / f"{name}.wav"
    path.write_bytes(b"this is not a wav file" * 10)
    return path, "unreadable audio"


def _nan_wav(root, name):
    path = root / "AudioWAV" / f"{name}.wav"
    samples = np.zeros(8000, np.float32)
    samples[100] = np.nan
    write_float_wav(path, samples)
    return path, "NaN"


def _missing_wav(root, name):
    path = root / "AudioWAV" / f"{name}.wav"
    path.unlink()
    return path, "missing audio file"


def _missing_video(root, name):
    path = root / "VideoFlash" / f"{name}.flv"
    path.unlink()
    return path, "missing video file"


def _corrupt_video(root, name):
    path = root / "VideoFlash" / f"{name}.flv"
    path.write_bytes(b"FLV\x01" + bytes(range(256)) * 4)
    return path, "video"


def _unknown_label(root, name):
    path = root / "train.csv"
    path.write_text(path.read_text().replace(f"{name},NEU", f"{name},BORED"))
    return path, "unknown label 'BORED'"


def _missing_split(root, name):
    path = root / "test.csv"
    path.unlink()
    return path, "missing test split file"


@pytest.mark.parametrize("damage", [_truncate_wav, _garbage_wav, _nan_wav, _missing_wav, _missing_video,
                                    _corrupt_video, _unknown_label, _missing_split])
def test_bad_input_raises_naming_file_and_problem(tmp_path, damage):
    root, name, (path, problem) = _raw_with(tmp_path, damage)
    with pytest.raises(DataError) as e:
        prepare(root, tmp_path / "out", size=SIZE, workers=0, log=lambda s: None)
    assert str(path) in str(e.value) and problem in str(e.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_empty_frame_folder_raises(tmp_path):
    root = tmp_path / "raw"
    clips = cremad_raw(root, n_train=2, n_test=1, video=False)
    folder = root / "Image-03-FPS" / next(iter(clips))
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(DataError, match="empty frame folder") as e:
        prepare(root, tmp_path / "out", size=SIZE, workers=0, log=lambda s: None)
    assert str(folder) in str(e.value)


def test_skip_bad_prepares_the_rest_and_reports_every_clip(tmp_path):
    """--skip-bad: every unusable clip is listed with its file and reason; the counts are printed."""
    root = tmp_path / "raw"
    clips = list(cremad_raw(root, n_train=6, n_test=3))
    _truncate_wav(root, clips[0])
    _missing_video(root, clips[1])
    (root / "train.csv").write_text((root / "train.csv").read_text() + "1099_DFA_XXX_XX,NOPE\n")  # unknown label
    _corrupt_video(root, clips[7])
    lines = []
    manifest = prepare(root, tmp_path / "out", size=SIZE, workers=0, skip_bad=True, log=lines.append)
    report = json.loads((tmp_path / "out" / "skipped.json").read_text())["skipped"]
    assert {r["clip"] for r in report} == {clips[0], clips[1], clips[7], "1099_DFA_XXX_XX"}
    assert all(r["file"] and r["problem"] for r in report)
    assert {s: v["clips"] for s, v in manifest["splits"].items()} == {"train": 4, "test": 2}
    assert manifest["skipped"] == 4
    assert any("skipped 4 clips" in line for line in lines) and any("4 train, 2 test" in line for line in lines)
    assert len(load(_cfg(tmp_path / "out").data, 0).train) == 4


def test_damaged_or_missing_cache_is_named(cache, tmp_path):
    with pytest.raises(DataError, match="prepare cremad"):
        load(_cfg(tmp_path).data, 0)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in cache[0].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    np.save(bad / "test.audio.npy", np.zeros((2, 257, 188), np.float16))
    with pytest.raises(DataError, match="damaged") as e:
        load(_cfg(bad).data, 0)
    assert "test.audio.npy" in str(e.value)
    with pytest.raises(DataError, match="holds 'cremad', not 'kinetics_sounds'"):
        load_cache(cache[0], "kinetics_sounds", FrameRecipe())


def test_cli_prepare(tmp_path, capsys):
    """`python -m inforeg prepare cremad ...`: exit 0 and the counts; a bad clip: exit 2 naming it."""
    from inforeg.cli import main

    root = tmp_path / "raw"
    clips = list(cremad_raw(root, n_train=2, n_test=1))
    args = ["prepare", "cremad", "--raw", str(root), "--out", str(tmp_path / "out"), "--size", "16", "--workers", "0"]
    assert main(args) == 0
    assert "2 train, 1 test clips" in capsys.readouterr().out
    _missing_wav(root, clips[0])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{clips[0]}.wav: missing audio file" in err and "--skip-bad" in err
    assert main(args + ["--skip-bad"]) == 0
    assert "skipped 1 clips" in capsys.readouterr().out


# --- training ----------------------------------------------------------------------------------------

def test_one_training_epoch_on_the_cpu(cache):
    """The full profile (ResNet-18 pair, official init; the official preset's window reads the proxy, the exact
    Tr F is logged beside it) trains one InfoReg epoch from the cache."""
    from inforeg.train import train

    cfg = make_config(dataset="cremad", method="inforeg", preset="official", profile="full", device="cpu",
                      overrides={"data.root": str(cache[0]), "data.image_size": SIZE, "epochs": 1,
                                 "optim.batch_size": 4})
    assert (cfg.model.encoder, cfg.fisher, cfg.method.trace) == ("resnet18", True, "official")
    result = train(cfg, progress=False)
    h = result.history[0]
    assert math.isfinite(h["train_loss"]) and 0 <= result.test_acc <= 1
    assert h["trace_official"]["audio"] > 0 and h["trace_official"]["visual"] > 0
    tr = h["trace"]  # per sample, |g_all|^2 = |g_audio|^2 + |g_visual|^2 + |g_head|^2
    assert tr["audio"] > 0 and tr["visual"] > 0 and tr["all"] >= 0.999 * (tr["audio"] + tr["visual"])
    assert set(result.probe_acc_by_modality) == {"audio", "visual"}


def test_full_profile_has_the_paper_settings():
    """SGD lr 2e-3, momentum 0.9, wd 1e-4, StepLR(30, 0.1), batch 64, 50 epochs, ResNet-18 with the official
    init, device auto; the exact Tr F on the ResNets (conv and BatchNorm rules); CMU-MOSI gets transformers and
    the proxy trace (no exact rule for attention)."""
    cfg = make_config(dataset="cremad", profile="full")
    o = cfg.optim
    assert (o.lr, o.momentum, o.weight_decay, o.step_size, o.gamma, o.batch_size) == (2e-3, 0.9, 1e-4, 30, 0.1, 64)
    assert (cfg.epochs, cfg.model.encoder, cfg.model.init) == (50, "resnet18", "official")
    assert cfg.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert (cfg.fisher, cfg.method.trace) == (True, "exact")
    mosi = make_config(dataset="mosi", profile="full")
    assert (mosi.model.encoder, mosi.fisher, mosi.method.trace) == ("transformer", False, "official")
    assert make_config(dataset="cremad", profile="full", device="cpu").device == "cpu"
    assert make_config().device == "cpu"  # the ci profile stays on the CPU
