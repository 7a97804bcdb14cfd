"""Tiny raw files in the real datasets' formats, for the loader tests: WAV, FLV / MP4, JPEG frame folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np

EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")


def write_wav(path: Path, seconds: float, rate: int = 16000, seed: int = 0,
              samples: np.ndarray | None = None) -> np.ndarray:
    """A tone with noise as 16-bit PCM (CREMA-D's format); returns the samples as a decoder reads them back."""
    import wave

    if samples is None:
        rng = np.random.default_rng(seed)
        t = np.arange(int(seconds * rate)) / rate
        samples = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(len(t))
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return pcm.astype(np.float32) / 32768


def write_float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    """A 32-bit float WAV, which can hold NaN (PCM cannot)."""
    import av

    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.asarray(samples, np.float32)[None], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)


def colours(n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """n distinct, well separated solid colours (frame k of a clip is filled with colours[k])."""
    rng = np.random.default_rng(seed)
    return [tuple(int(c) for c in rng.integers(16, 240, 3)) for _ in range(n)]


def write_video(path: Path, fill: list[tuple[int, int, int]], fps: int = 30, size: tuple[int, int] = (48, 64),
                codec: str = "flv") -> None:
    """A video whose frame k is a solid colour fill[k] (codec flv: CREMA-D's Sorenson FLV1)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for colour in fill:
            image = np.empty((*size, 3), np.uint8)
            image[:] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames(folder: Path, fill: list[tuple[int, int, int]], size: tuple[int, int] = (36, 48),
                 pattern: str = "{:05d}.jpg") -> None:
    """A frame folder of JPEGs, frame k a solid colour fill[k]."""
    import torch
    from torchvision.io import write_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    for k, colour in enumerate(fill):
        image = torch.tensor(colour, dtype=torch.uint8)[:, None, None].expand(3, *size).contiguous()
        write_jpeg(image, str(folder / pattern.format(k)), quality=95)


def cremad_raw(root: Path, n_train: int = 6, n_test: int = 3, video: bool = True) -> dict[str, dict]:
    """A CREMA-D folder: AudioWAV/, VideoFlash/*.flv (or Image-03-FPS/ frame folders), train.csv, test.csv.

    Returns {clip: {"label", "split", "colours", "audio"}}; clip i lasts 1 + i % 3 * 1/3 s of 30 fps video."""
    clips, rows = {}, {"train": [], "test": []}
    for i in range(n_train + n_test):
        emo = EMOTIONS[i % 6]
        name = f"10{i:02d}_DFA_{emo}_XX"
        split = "train" if i < n_train else "test"
        fill = colours(30 + 10 * (i % 3), seed=i)
        audio = write_wav(root / "AudioWAV" / f"{name}.wav", 0.5 + 0.25 * (i % 4), seed=i)
        if video:
            write_video(root / "VideoFlash" / f"{name}.flv", fill)
        else:
            write_frames(root / "Image-03-FPS" / name, fill[::10])
        rows[split].append(f"{name},{emo}")
        clips[name] = {"label": EMOTIONS.index(emo), "split": split, "colours": fill, "audio": audio}
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return clips
