"""Random stand-ins for the real datasets' prepared caches, to try the full profile's code on any machine.

`write(dataset, out)` writes a small cache of CREMA-D, Kinetics-Sounds or CMU-MOSI in the very format that
`python -m inforeg prepare` writes (the same writers: `cache.prepare_cache`, `mosi.write_cache`), with random
content instead of media. The content carries the label in every modality, strongly in the first (audio, or
text for CMU-MOSI) and weakly in the others, so that one modality leads joint training as on the real data.
Nothing learnt from it means anything: it exists so that `./run_all.sh full --dry-run` and the tests can run
every notebook's full-profile path in minutes, on a CPU, without the data. Spectrograms may be smaller than
the real recipe's (`spec_shape`) to keep a CPU run short; the ResNet-18 encoders take any size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import cremad, kinetics_sounds
from .cache import Clip, Stored, prepare_cache

AV_CLASSES = {"cremad": cremad.CLASSES,
              "kinetics_sounds": tuple(str(i) for i in range(kinetics_sounds.NUM_CLASSES))}
SIGNAL = {"lead": 1.0, "other": 0.3}  # the label's pattern, in units of the noise's standard deviation
MARK = "random content (inforeg.data.synthetic): nothing learnt from it means anything"  # recipe["synthetic"]


def _class_patterns(label: int, spec_shape: tuple[int, int], frame_size: int, seed: int):
    """A class's spectrogram and frame patterns, the same in every clip of the class."""
    pattern = np.random.default_rng([seed, 0, label])
    return pattern.standard_normal(spec_shape), pattern.standard_normal((3, frame_size, frame_size))


def _av_clip(clip: Clip, patterns: tuple, spec_shape: tuple[int, int], frame_size: int, frames: int,
             seed: int) -> dict:
    """A clip's spectrogram (noise plus its class's pattern) and frames (grey plus a weaker class pattern)."""
    spec_pattern, frame_pattern = patterns
    rng = np.random.default_rng([seed, 1 + (clip.split == "test"), int(clip.name.rsplit("_", 1)[1])])
    audio = rng.standard_normal(spec_shape) + SIGNAL["lead"] * spec_pattern
    pixels = 128 + 40 * (rng.standard_normal((frames, 3, frame_size, frame_size)) + SIGNAL["other"] * frame_pattern)
    return {"audio": audio.astype(np.float32), "visual": np.clip(pixels, 0, 255).astype(np.uint8)}


def write_audio_visual(dataset: str, out: str | Path, n_train: int = 48, n_test: int = 24,
                       spec_shape: tuple[int, int] | None = None, frame_size: int = 32, frames: int = 4,
                       seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """A random CREMA-D or Kinetics-Sounds cache; returns its manifest. spec_shape None: the real recipe's
    (257 x 188 for CREMA-D, 1024 x 128 for Kinetics-Sounds)."""
    if dataset not in AV_CLASSES:
        raise ValueError(f"unknown audio-visual dataset {dataset!r}; known: {', '.join(AV_CLASSES)}")
    real = {"cremad": cremad.SPEC_SHAPE,
            "kinetics_sounds": (kinetics_sounds.FBANK_FRAMES, kinetics_sounds.FBANK_BINS)}[dataset]
    spec_shape = tuple(spec_shape or real)
    classes = AV_CLASSES[dataset]
    clips = [Clip(split, f"{split}_{i}", i % len(classes), {"audio": f"synthetic:{split}_{i}",
                                                            "visual": f"synthetic:{split}_{i}"})
             for split, n in (("train", n_train), ("test", n_test)) for i in range(n)]
    stored = {"audio": Stored("spectrogram", spec_shape), "visual": Stored("frames", (3, frame_size, frame_size))}
    recipe = {"synthetic": f"{MARK}; seed {seed}", "size": frame_size,
              "train_frames": "random" if dataset == "cremad" else "segments"}
    patterns = {label: _class_patterns(label, spec_shape, frame_size, seed) for label in {c.label for c in clips}}

    def read(clip: Clip) -> dict:
        return _av_clip(clip, patterns[clip.label], spec_shape, frame_size, frames, seed)

    return prepare_cache(out, dataset, classes, clips, [], read, stored, recipe, workers=0, log=log)


def write_mosi(out: str | Path, n_train: int = 48, n_val: int = 24, n_test: int = 24, steps: int = 8,
               seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """A random CMU-MOSI cache (text 300-d, audio 5-d with some -inf as in the real pickles, vision 20-d);
    returns its manifest."""
    from .mosi import check_splits, write_cache

    rng = np.random.default_rng(seed)
    dims = {"text": 300, "audio": 5, "vision": 20}
    direction = {m: rng.standard_normal(d) for m, d in dims.items()}
    data = {}
    for split, n in (("train", n_train), ("valid", n_val), ("test", n_test)):
        sentiment = rng.uniform(-3, 3, n)
        sign = np.where(sentiment >= 0, 1.0, -1.0)[:, None, None]
        part = {"labels": sentiment.reshape(n, 1, 1)}
        for i, (m, d) in enumerate(dims.items()):
            strength = SIGNAL["lead"] if i == 0 else SIGNAL["other"]
            part[m] = rng.standard_normal((n, steps, d)) + strength * sign * direction[m]
        part["audio"][:, 0, 0] = -np.inf  # the real audio features hold -inf, which prepare sets to 0
        data[split] = part
    splits, replaced = check_splits(data, Path(out))
    return write_cache(splits, out, "inforeg.data.synthetic", replaced, log, synthetic=f"{MARK}; seed {seed}")
