"""Raw media to arrays: WAV audio and its two spectrogram recipes, videos, frame folders.

Readers raise `DataError` naming the file and the problem (missing, unreadable, truncated, empty, NaN);
feature functions raise ValueError, which the per-clip readers of the dataset modules turn into DataError.
"""
from __future__ import annotations

import functools
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from .base import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# CREMA-D audio (OGM-GE's CramedDataset): 3 s at 22,050 Hz, log-magnitude STFT -> 257 x 188.
STFT_RATE, STFT_SECONDS, N_FFT, HOP = 22050, 3, 512, 353
# Kinetics-Sounds audio (OGM-GE's process_audio.py): Kaldi fbank, 1024 frames, AudioSet statistics.
FBANK_FRAMES, FBANK_BINS, FBANK_MEAN, FBANK_STD = 1024, 128, -4.503877, 5.141276


# --- audio -------------------------------------------------------------------------------------------

def _wav_truncation(path: Path) -> str | None:
    """What is wrong with a RIFF/WAVE file whose sample data is shorter than its header says, else None.

    Decoders read such a file without complaint (they just return fewer samples), so we check first."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # not a plain RIFF/WAVE file: the decoder judges it
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None  # no data chunk: the decoder says so
            n = struct.unpack("<I", chunk[4:])[0]
            if chunk[:4] == b"data":
                have = size - f.tell()
                if n not in (0, 0xFFFFFFFF) and have < n:  # 0 and 0xFFFFFFFF: size unknown (streamed writers)
                    return f"truncated WAV: its header announces {n} bytes of samples, the file holds {have}"
                return None
            f.seek(n + (n & 1), 1)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples (channels averaged, as librosa.load does) and the sample rate, decoded with PyAV."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing audio file")
    problem = _wav_truncation(path)
    if problem:
        raise DataError(path, problem)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(path, "no audio stream")
            stream = container.streams.audio[0]
            to_float = av.AudioResampler(format="fltp")  # same rate and channels, float32 planar
            chunks = [f.to_ndarray() for frame in container.decode(stream) for f in to_float.resample(frame)]
            chunks += [f.to_ndarray() for f in to_float.resample(None)]
            rate = stream.rate
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise DataError(path, f"unreadable audio ({e})") from None
    x = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    if x.shape[1] == 0:
        raise DataError(path, "the audio file holds no samples")
    if not np.isfinite(x).all():
        raise DataError(path, "audio samples contain NaN or infinite values")
    return x.mean(0), int(rate)


def log_stft(wave: Tensor) -> Tensor:
    """log(|STFT| + 1e-7) with n_fft 512, hop 353, periodic Hann window, centred frames, reflect padding
    (librosa.stft's defaults before librosa 0.10, which OGM-GE and InfoReg used)."""
    window = torch.hann_window(N_FFT, dtype=wave.dtype, device=wave.device)
    spec = torch.stft(wave, N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    return torch.log(spec.abs() + 1e-7)


@functools.lru_cache(maxsize=8)
def _resampler(rate: int):
    """torchaudio's windowed-sinc resampler to 22,050 Hz (its kernel is built once per rate)."""
    import torchaudio

    return torchaudio.transforms.Resample(rate, STFT_RATE, dtype=torch.float64)


def stft_spectrogram(samples: np.ndarray, rate: int) -> np.ndarray:
    """CREMA-D's audio input (257, 188): resample to 22,050 Hz, tile and cut to 3 s, clip to [-1, 1], log_stft.

    The official code tiles 3 times, so clips under 1 s give fewer frames there; we tile as often as needed."""
    x = torch.from_numpy(np.asarray(samples, dtype=np.float64))
    if rate != STFT_RATE:
        x = _resampler(rate)(x)
    n = STFT_RATE * STFT_SECONDS
    if len(x) == 0:
        raise ValueError("no audio samples")
    x = x.repeat(max(3, -(-n // len(x))))[:n].clamp(-1.0, 1.0)
    return log_stft(x).float().numpy()


def kaldi_fbank(samples: np.ndarray, rate: int) -> np.ndarray:
    """Kinetics-Sounds' audio input (1024, 128): DC removed, Kaldi log-mel fbank (128 bins, Hanning window,
    25 ms frames every 10 ms, htk_compat, no energy, no dither), zero-padded or cut to 1,024 frames, then
    (x + 4.503877) / (2 * 5.141276) (AudioSet statistics; padding is normalised too, as in the official code)."""
    from torchaudio.compliance import kaldi

    x = torch.from_numpy(np.asarray(samples, dtype=np.float32))[None]
    x = x - x.mean()
    if x.shape[1] < rate * 25 // 1000:
        raise ValueError(f"audio shorter than one 25 ms frame ({x.shape[1]} samples at {rate} Hz)")
    fb = kaldi.fbank(x, htk_compat=True, sample_frequency=rate, use_energy=False, window_type="hanning",
                     num_mel_bins=FBANK_BINS, dither=0.0, frame_shift=10)
    fb = F.pad(fb, (0, 0, 0, FBANK_FRAMES - len(fb))) if len(fb) < FBANK_FRAMES else fb[:FBANK_FRAMES]
    return ((fb - FBANK_MEAN) / (2 * FBANK_STD)).numpy()


# --- frames ------------------------------------------------------------------------------------------

def _square(image: Tensor, size: int) -> Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size), antialiased bilinear (the test-time Resize((224, 224)))."""
    return TF.resize(image, [size, size], antialias=True)


def frame_files(folder: str | Path) -> list[Path]:
    """The images of a frame folder in name order (frame names are their indices, so that is time order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "missing frame folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(folder, "empty frame folder (no .jpg or .png images)")
    return files


def read_images(files: list[Path], size: int) -> np.ndarray:
    """uint8 (frames, 3, size, size) from image files."""
    from torchvision.io import ImageReadMode, decode_image

    out = []
    for f in files:
        try:
            image = decode_image(str(f), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError, OSError) as e:
            raise DataError(f, f"unreadable image ({e})") from None
        out.append(_square(image, size))
    return torch.stack(out).numpy()


def kept_frame(k: int, video_fps: float, fps: int) -> bool:
    """The official frame extraction (OGM-GE video_preprocessing.py) keeps frame k when, with
    n = int(video_fps) and interval = int(n / fps), its index within its second is a multiple of interval
    below interval * fps: `fps` evenly spaced frames per second."""
    n = max(int(video_fps), 1)
    interval = max(n // fps, 1)
    i = k % n
    return i < interval * fps and i % interval == 0


def read_video(path: str | Path, fps: int, size: int) -> np.ndarray:
    """uint8 (frames, 3, size, size): the frames the official extraction keeps at `fps` frames a second."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing video file")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise DataError(path, "the video has no frame rate")
            for k, frame in enumerate(container.decode(stream)):
                if kept_frame(k, float(rate), fps):
                    image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                    frames.append(_square(image, size))
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise DataError(path, f"unreadable video ({e})") from None
    if not frames:
        raise DataError(path, "no video frames could be decoded")
    return torch.stack(frames).numpy()


def read_frames(source: str | Path, fps: int, size: int) -> np.ndarray:
    """Frames from a frame folder, or from a video file decoded at `fps` frames a second."""
    source = Path(source)
    if source.suffix.lower() in (".flv", ".mp4", ".mkv", ".webm", ".avi"):
        return read_video(source, fps, size)
    return read_images(frame_files(source), size)
