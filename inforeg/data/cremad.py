"""CREMA-D (PAPER.md section 7, BASELINES.md A.1): raw clips -> prepared cache (`prepare`), read by `load`.

Raw layout (github.com/CheyneyComputerScience/CREMA-D, plus the split lists of OGM-GE / InfoReg):
    RAW/AudioWAV/<clip>.wav          16 kHz speech
    RAW/VideoFlash/<clip>.flv        about 30 fps video, decoded with PyAV at `fps` frames a second
    RAW/Image-NN-FPS/<clip>/*.jpg    or frames already extracted at NN = fps frames a second (used if present)
    RAW/train.csv, RAW/test.csv      `clip,EMO` rows without header (6,698 / 744 in the official lists)

Audio: 257 x 188 log-magnitude STFT (media.stft_spectrogram), stored float16. Frames: every frame the
official extraction keeps, resized to size x size, stored uint8; a batch shows 3 of them.
"""
from __future__ import annotations

import csv
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from .base import DataError
from .cache import Clip, Stored, prepare_cache
from .media import HOP, N_FFT, STFT_RATE, STFT_SECONDS, read_audio, read_frames, stft_spectrogram

NAME = "cremad"
CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # label order of OGM-GE's class_dict
SPEC_SHAPE = (N_FFT // 2 + 1, STFT_RATE * STFT_SECONDS // HOP + 1)  # (257, 188)


def read_split(path: Path, split: str, skip_bad: bool) -> tuple[list[tuple[str, int]], list[dict]]:
    """(clip, label) rows of a split CSV, and the rows rejected (only with skip_bad; otherwise they raise)."""
    if not path.is_file():
        raise DataError(path, f"missing {split} split file (rows `clip,EMO`, e.g. 1001_DFA_ANG_XX,ANG)")
    rows, bad = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for line, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not any(row) or (line == 1 and row[-1].lower() == "label"):  # blank; a `name,label` header
                continue
            if len(row) != 2 or not row[0]:
                problem = f"line {line}: expected `clip,EMO`, got {','.join(row)!r}"
            elif row[1] not in CLASSES:
                problem = f"line {line}: unknown label {row[1]!r} for clip {row[0]}; known: {', '.join(CLASSES)}"
            else:
                rows.append((row[0], CLASSES.index(row[1])))
                continue
            if not skip_bad:
                raise DataError(path, problem)
            bad.append({"split": split, "clip": row[0] if row else "", "file": str(path), "problem": problem})
    return rows, bad


def read_clip(clip: Clip, fps: int, size: int) -> dict[str, np.ndarray]:
    samples, rate = read_audio(clip.sources["audio"])
    try:
        audio = stft_spectrogram(samples, rate)
    except ValueError as e:
        raise DataError(clip.sources["audio"], str(e)) from None
    return {"audio": audio, "visual": read_frames(clip.sources["visual"], fps, size)}


def prepare(raw: str | Path, out: str | Path, fps: int = 3, size: int = 224, train_csv: str | Path | None = None,
            test_csv: str | Path | None = None, skip_bad: bool = False, workers: int | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Write the cache of CREMA-D into `out`; returns its manifest. See the module docstring for RAW."""
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(raw, "missing raw data folder")
    frames_dir, video_dir = raw / f"Image-{fps:02d}-FPS", raw / "VideoFlash"
    if not frames_dir.is_dir() and not video_dir.is_dir():
        raise DataError(raw, f"neither {frames_dir.name}/ (extracted frames) nor VideoFlash/ (.flv videos) found")
    lists = {"train": Path(train_csv) if train_csv else raw / "train.csv",
             "test": Path(test_csv) if test_csv else raw / "test.csv"}
    clips, bad = [], []
    for split, path in lists.items():
        rows, rejected = read_split(path, split, skip_bad)
        bad += rejected
        for name, label in rows:
            visual = frames_dir / name if frames_dir.is_dir() else video_dir / f"{name}.flv"
            clips.append(Clip(split, name, label, {"audio": str(raw / "AudioWAV" / f"{name}.wav"),
                                                    "visual": str(visual)}))
    recipe = {
        "audio": f"mono, resampled to {STFT_RATE} Hz (torchaudio), tiled and cut to {STFT_SECONDS} s, clipped to "
                 f"[-1, 1], log(|STFT| + 1e-7) with n_fft {N_FFT}, hop {HOP}, Hann, centred, reflect padding",
        "visual": (f"frames of {frames_dir.name}/" if frames_dir.is_dir() else
                   f"VideoFlash/*.flv decoded with PyAV, {fps} frames a second as OGM-GE's extraction keeps them")
                  + f", resized to {size}x{size} (antialiased), uint8",
        "fps": fps, "size": size, "train_frames": "random",
        "lists": {s: str(p) for s, p in lists.items()},
    }
    stored = {"audio": Stored("spectrogram", SPEC_SHAPE), "visual": Stored("frames", (3, size, size))}
    return prepare_cache(out, NAME, CLASSES, clips, bad, partial(read_clip, fps=fps, size=size), stored, recipe,
                         skip_bad, workers, log)
