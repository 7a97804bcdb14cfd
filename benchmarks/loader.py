"""One epoch of CREMA-D-shaped data through the full profile's model: our prepared cache against an
on-the-fly loader that, per clip, decodes the WAV, resamples it and computes its STFT, and opens and augments
its JPEG frames, the way the official code's dataset does. Prints samples per second of each loader alone
and of loader + training step, and how busy the device was during the epoch with each.

The data is random content in CREMA-D's raw layout (AudioWAV/*.wav at 16 kHz, Image-03-FPS/<clip>/*.jpg
frames of 360 x 480, train.csv), written once into --root and prepared there with the package's own
`inforeg.data.cremad.prepare` (its time is printed too). Nothing of the real dataset is needed.

    .venv/bin/python benchmarks/loader.py --device cuda                     # 6,698 clips, batch 64, one epoch
    .venv/bin/python benchmarks/loader.py --clips 512 --max-steps 2         # small, on a CPU

Busy fraction: on CUDA, the GPU time of the training steps (CUDA events around each step: forward, backward,
SGD step) over the epoch's wall time; on a CPU, the steps' own wall time over the epoch's. The last lines
read `NAME samples_per_s=X busy=Y` (busy is nan for the loader-only entries).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.io import ImageReadMode, decode_image, write_jpeg  # noqa: E402
from torchvision.transforms import v2 as T  # noqa: E402

from inforeg import make_config  # noqa: E402
from inforeg.data.cache import IMAGENET_MEAN, IMAGENET_STD, FrameRecipe, load_cache  # noqa: E402
from inforeg.data.cremad import CLASSES, prepare  # noqa: E402
from inforeg.data.media import frame_files, read_audio, stft_spectrogram  # noqa: E402
from inforeg.models import build_model  # noqa: E402

FRAME_HW = (360, 480)  # CREMA-D's video size


# --- the raw data ------------------------------------------------------------------------------------------

def write_raw(root: Path, clips: int, seed: int = 0, log=print) -> list[tuple[str, int]]:
    """CREMA-D's raw layout with random content; reused when --root already holds it for this many clips."""
    done = root / f"raw-{clips}.done"
    names = [f"{1001 + i // 100}_R{i % 100:02d}_{CLASSES[i % 6]}_XX" for i in range(clips)]
    rows = [(n, i % 6) for i, n in enumerate(names)]
    if done.exists():
        return rows
    rng = np.random.default_rng(seed)
    tic = time.perf_counter()
    for i, name in enumerate(names):
        seconds = rng.uniform(1.3, 3.5)  # CREMA-D's clips last about 1.3 to 5 s
        samples = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * np.arange(int(16000 * seconds)) / 16000)
        samples += 0.05 * rng.standard_normal(len(samples))
        path = root / "AudioWAV" / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        folder = root / "Image-03-FPS" / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(max(3, int(seconds * 3))):  # 3 frames a second, as the official extraction keeps
            coarse = torch.from_numpy(rng.integers(0, 256, (3, 9, 12), dtype=np.uint8))
            image = F.interpolate(coarse[None].float(), size=FRAME_HW, mode="bilinear")[0].to(torch.uint8)
            write_jpeg(image, str(folder / f"{k:05d}.jpg"), quality=90)
        if (i + 1) % 1000 == 0:
            log(f"  raw data: {i + 1} / {clips} clips ({time.perf_counter() - tic:.0f} s)")
    (root / "train.csv").write_text("".join(f"{n},{CLASSES[c]}\n" for n, c in rows))
    (root / "test.csv").write_text("".join(f"{n},{CLASSES[c]}\n" for n, c in rows[:max(1, clips // 9)]))
    done.write_text("ok\n")
    return rows


# --- the on-the-fly loader ---------------------------------------------------------------------------------

class OnTheFly(torch.utils.data.Dataset):
    """Per item, what the official CREMA-D dataset does: read the WAV, resample, tile to 3 s, STFT; pick 3
    of the clip's frames at random, open each JPEG, RandomResizedCrop(224), flip, normalise."""

    def __init__(self, root: Path, rows: list[tuple[str, int]], frames: int = 3, size: int = 224):
        self.root, self.rows, self.frames = root, rows, frames
        self.transform = T.Compose([T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip(),
                                    T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        name, label = self.rows[i]
        samples, rate = read_audio(self.root / "AudioWAV" / f"{name}.wav")
        audio = torch.from_numpy(stft_spectrogram(samples, rate))[None]
        files = frame_files(self.root / "Image-03-FPS" / name)
        picks = sorted(random.sample(range(len(files)), self.frames))
        visual = torch.stack([self.transform(decode_image(str(files[k]), mode=ImageReadMode.RGB)) for k in picks])
        return {"audio": audio, "visual": visual}, label


def on_the_fly_batches(dataset: OnTheFly, batch: int, workers: int, device: str, max_steps: int | None):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         pin_memory=device.startswith("cuda"), drop_last=False,
                                         persistent_workers=False)
    for step, (inputs, labels) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        yield ({m: x.to(device, non_blocking=True) for m, x in inputs.items()}, labels.to(device, non_blocking=True))


def cache_batches(root: Path, batch: int, device: str, max_steps: int | None, seed: int = 0):
    splits = load_cache(root, "cremad", FrameRecipe(3, 224))
    g = torch.Generator().manual_seed(seed)
    for step, b in enumerate(splits.train.batches(batch, g)):
        if max_steps is not None and step >= max_steps:
            break
        b = b.to(device)  # crops, flips, resize and normalisation happen here, on the device
        yield b.inputs, b.labels.to(device)


# --- timing ------------------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def epoch(batches, device: str, step=None) -> tuple[float, float, int]:
    """(samples per second, busy fraction or nan, samples) of one pass over `batches`, with `step` or
    without (the loader alone: each batch is only made ready on the device)."""
    cuda = device.startswith("cuda")
    _sync(device)
    tic = time.perf_counter()
    busy, n, events = 0.0, 0, []
    for inputs, labels in batches:
        if step is None:
            n += len(labels)
            continue
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(inputs, labels)
            end.record()
            events.append((start, end))
        else:
            t = time.perf_counter()
            step(inputs, labels)
            busy += time.perf_counter() - t
        n += len(labels)
    _sync(device)
    wall = time.perf_counter() - tic
    if cuda and events:
        busy = sum(s.elapsed_time(e) for s, e in events) / 1000.0
    return n / wall, (busy / wall if step is not None else math.nan), n


def make_step(device: str):
    """The full profile's joint step on CREMA-D: ResNet-18 pair, official init, SGD(2e-3, 0.9, 1e-4).
    Returns (step(inputs, labels), the model)."""
    cfg = make_config("cremad", "joint", profile="full", device=device)
    torch.manual_seed(0)
    model = build_model(cfg.model, {"audio": 1, "visual": 3}, len(CLASSES)).to(device)
    oc = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay)

    def step(inputs, labels):
        loss = F.cross_entropy(model(inputs).logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, model


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=6698, help="training clips (CREMA-D: 6,698)")
    p.add_argument("--root", type=Path, default=None,
                   help="folder for the raw data and the cache (default: build/loader-bench-<clips>; reused)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                   help="DataLoader worker processes of the on-the-fly loader (and of prepare)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="batches per epoch (default: the whole epoch); the CPU needs a few, a step takes minutes")
    p.add_argument("--no-step", action="store_true", help="time the loaders alone")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    root = args.root or Path(__file__).resolve().parents[1] / "build" / f"loader-bench-{args.clips}"
    raw, cache = root / "raw", root / "cache"
    raw.mkdir(parents=True, exist_ok=True)
    print(f"== CREMA-D-shaped data: {args.clips} clips in {root}; batch {args.batch}, {args.device}, "
          f"{args.workers} workers, torch {torch.__version__}")
    tic = time.perf_counter()
    rows = write_raw(raw, args.clips)
    print(f"raw data ready in {time.perf_counter() - tic:.1f} s")
    if not (cache / "manifest.json").exists():
        tic = time.perf_counter()
        manifest = prepare(raw, cache, workers=args.workers, log=lambda s: None)
        took = time.perf_counter() - tic
        n = sum(split["clips"] for split in manifest["splits"].values())
        print(f"prepare: {n} clips (train and test) in {took:.1f} s, {n / took:.1f} clips/s with "
              f"{args.workers} workers")
    size = sum(f.stat().st_size for f in cache.iterdir()) / 2**30
    print(f"cache: {size:.2f} GiB in {cache}")

    fly = OnTheFly(raw, rows)
    entries = {
        "cache_loader": lambda: cache_batches(cache, args.batch, args.device, args.max_steps),
        "on_the_fly_loader": lambda: on_the_fly_batches(fly, args.batch, args.workers, args.device, args.max_steps),
    }
    results = []
    for name, batches in entries.items():
        sps, _, n = epoch(batches(), args.device)
        print(f"{name}: {sps:.1f} samples/s over {n} samples (loader alone)")
        results.append((name, sps, math.nan))
    if not args.no_step:
        step, _ = make_step(args.device)
        x, y = next(iter(entries["cache_loader"]()))
        step(x, y)  # warm-up: cuDNN algorithm choice, allocator
        _sync(args.device)
        for name, batches in entries.items():
            sps, busy, n = epoch(batches(), args.device, step)
            label = name.replace("_loader", "_train")
            print(f"{label}: {sps:.1f} samples/s over {n} samples, device busy {busy:.0%} of the epoch")
            results.append((label, sps, busy))
    print("# summary: NAME samples_per_s=X busy=Y")
    for name, sps, busy in results:
        print(f"{name} samples_per_s={sps:.1f} busy={busy:.2f}")


if __name__ == "__main__":
    main()
