"""Kinetics-Sounds (PAPER.md section 7, BASELINES.md A.2): raw clips -> prepared cache, read by `load`.

Raw layout (the videos come from Kinetics-400; the lists are OGM-GE's or InfoReg's):
    RAW/train.txt, RAW/test.txt    one clip a line: `name,10,label` (OGM-GE's my_train.txt / my_test.txt)
                                   or `name label` (InfoReg's ks_*_overlap.txt); labels 0..30
    RAW/audio/<name>.wav           the clip's sound track (OGM-GE extracts it at 16 kHz)
    RAW/frames/<name>/*.jpg        frames at 1 fps (frame_00001.jpg, ...) or, if absent,
    RAW/video/<name>.mp4           the video, decoded with PyAV at 1 frame a second

Audio: Kaldi-style 128-bin log-mel fbank, 1,024 frames, normalised (media.kaldi_fbank), stored float16.
Frames: every 1 fps frame, resized to size x size, stored uint8; a batch shows 3, one per third of the clip.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from .base import DataError
from .cache import Clip, Stored, prepare_cache
from .media import FBANK_BINS, FBANK_FRAMES, kaldi_fbank, read_audio, read_frames

NAME = "kinetics_sounds"
NUM_CLASSES = 31


def read_list(path: Path, split: str, num_classes: int, skip_bad: bool) -> tuple[list[tuple[str, int]], list[dict]]:
    """(name, label) rows of a list file in either format, and the rows rejected (only with skip_bad)."""
    if not path.is_file():
        raise DataError(path, f"missing {split} list (lines `name,10,label` or `name label`)")
    rows, bad = [], []
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = [f.strip() for f in (text.split(",") if "," in text else text.split())]
        if not any(fields):
            continue
        name, label = fields[0], fields[-1]
        if len(fields) < 2 or not name:
            problem = f"line {line}: expected `name,10,label` or `name label`, got {text!r}"
        elif not label.isdigit() or int(label) >= num_classes:
            problem = f"line {line}: unknown label {label!r} for clip {name}; labels are 0..{num_classes - 1}"
        else:
            rows.append((name, int(label)))
            continue
        if not skip_bad:
            raise DataError(path, problem)
        bad.append({"split": split, "clip": name, "file": str(path), "problem": problem})
    return rows, bad


def read_clip(clip: Clip, size: int) -> dict[str, np.ndarray]:
    samples, rate = read_audio(clip.sources["audio"])
    try:
        audio = kaldi_fbank(samples, rate)
    except ValueError as e:
        raise DataError(clip.sources["audio"], str(e)) from None
    return {"audio": audio, "visual": read_frames(clip.sources["visual"], 1, size)}


def prepare(raw: str | Path, out: str | Path, size: int = 224, train_list: str | Path | None = None,
            test_list: str | Path | None = None, num_classes: int = NUM_CLASSES, skip_bad: bool = False,
            workers: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Write the cache of Kinetics-Sounds into `out`; returns its manifest. See the module docstring for RAW."""
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(raw, "missing raw data folder")
    lists = {"train": Path(train_list) if train_list else raw / "train.txt",
             "test": Path(test_list) if test_list else raw / "test.txt"}
    clips, bad = [], []
    for split, path in lists.items():
        rows, rejected = read_list(path, split, num_classes, skip_bad)
        bad += rejected
        for name, label in rows:
            folder, video = raw / "frames" / name, raw / "video" / f"{name}.mp4"
            visual = video if not folder.exists() and video.exists() else folder
            clips.append(Clip(split, name, label, {"audio": str(raw / "audio" / f"{name}.wav"),
                                                    "visual": str(visual)}))
    recipe = {
        "audio": "mono, DC removed, Kaldi fbank (torchaudio.compliance.kaldi): 128 mel bins, Hanning, 25 ms / 10 ms, "
                 f"htk_compat, no energy, no dither; zero-padded or cut to {FBANK_FRAMES} frames; "
                 "(x + 4.503877) / (2 * 5.141276)",
        "visual": f"frames/<name>/ images, or video/<name>.mp4 at 1 frame a second (PyAV); {size}x{size}, uint8",
        "size": size, "train_frames": "segments",
        "lists": {s: str(p) for s, p in lists.items()},
    }
    classes = [str(i) for i in range(num_classes)]
    stored = {"audio": Stored("spectrogram", (FBANK_FRAMES, FBANK_BINS)), "visual": Stored("frames", (3, size, size))}
    return prepare_cache(out, NAME, classes, clips, bad, partial(read_clip, size=size), stored, recipe, skip_bad,
                         workers, log)
