"""The prepared cache of an audio-visual dataset: written once by `prepare`, read by memory maps while training.

A cache folder holds, per split, uint8 frames (every frame extracted from a clip, resized to a fixed square)
and float16 spectrograms as .npy arrays, labels, clip names, and `manifest.json` (counts, shapes, recipe).
Augmentation is not in the cache: a batch leaves the dataset in stored form (uint8, float16) and
`batch.to(device)` finishes it on that device: crops and flips in training, resizing, ImageNet normalisation.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from .base import Batch, DataError, Splits

FORMAT, VERSION = "inforeg-cache", 1
MANIFEST, REPORT = "manifest.json", "skipped.json"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --- writing -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clip:
    """One clip to prepare: where its media are (modality -> file or folder) and its label."""

    split: str
    name: str
    label: int
    sources: dict[str, str]


@dataclass(frozen=True)
class Stored:
    """How a modality is stored: `spectrogram` (one float16 array a clip) or `frames` (uint8, any number a clip)."""

    kind: str
    shape: tuple[int, ...]  # of one spectrogram, or of one frame (3, size, size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.kind == "frames" else np.float16)


class NpyWriter:
    """Appends items of one shape to a .npy file; the header's first axis is fixed on close (numpy leaves
    room in the header for that), so the array never has to be held in memory or copied."""

    def __init__(self, path: Path, dtype: np.dtype, item_shape: tuple[int, ...]):
        self.path, self.dtype, self.item_shape, self.count = path, np.dtype(dtype), tuple(item_shape), 0
        self.file = open(path, "wb")
        self._header()
        self.data_start = self.file.tell()

    def _header(self) -> None:
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": (self.count, *self.item_shape)})

    def append(self, items: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(items, dtype=self.dtype).tobytes())
        self.count += len(items)

    def close(self) -> None:
        self.file.seek(0)
        self._header()
        if self.file.tell() != self.data_start:  # pragma: no cover (numpy reserves 21 digits)
            raise RuntimeError(f"{self.path}: the .npy header changed length")
        self.file.close()


def _read_one(read_clip: Callable[[Clip], dict], clip: Clip):
    try:
        return read_clip(clip)
    except DataError as e:
        return e


def _init_worker() -> None:
    torch.set_num_threads(1)


def _read_all(read_clip: Callable[[Clip], dict], clips: list[Clip], workers: int) -> Iterator:
    """(clip, arrays or DataError) in clip order; with workers > 1 in that many processes, a few ahead."""
    if workers <= 1:
        for clip in clips:
            yield clip, _read_one(read_clip, clip)
        return
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once CUDA or threads are up
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        todo = iter(clips)
        pending = deque((c, pool.submit(_read_one, read_clip, c)) for c in islice(todo, 4 * workers))
        try:
            while pending:
                clip, future = pending.popleft()
                yield clip, future.result()
                for c in islice(todo, 1):
                    pending.append((c, pool.submit(_read_one, read_clip, c)))
        finally:
            for _, future in pending:
                future.cancel()


def _check(clip: Clip, arrays: dict[str, np.ndarray], stored: dict[str, Stored]) -> None:
    """The arrays a reader returned have the stored shapes and finite values, else DataError on the source."""
    for m, s in stored.items():
        x, source = arrays[m], clip.sources[m]
        shape = x.shape if s.kind == "spectrogram" else x.shape[1:]
        if tuple(shape) != s.shape or (s.kind == "frames" and len(x) == 0):
            raise DataError(source, f"{m} has shape {tuple(x.shape)}, expected {s.shape}"
                                    + (" per frame" if s.kind == "frames" else ""))
        if s.kind == "spectrogram" and not np.isfinite(x.astype(s.dtype)).all():
            raise DataError(source, f"{m} features contain NaN or infinite values (also after float16)")


def prepare_cache(out: str | Path, dataset: str, classes: Iterable[str], clips: list[Clip], bad: list[dict],
                  read_clip: Callable[[Clip], dict], stored: dict[str, Stored], recipe: dict,
                  skip_bad: bool = False, workers: int | None = None, log: Callable[[str], None] = print,
                  splits: tuple[str, ...] = ("train", "test")) -> dict:
    """Read every clip (in `workers` processes), write the cache into `out`, return the manifest.

    `bad` lists the entries the list readers already rejected (unknown labels...; only with skip_bad). A clip
    whose media cannot be used raises DataError, or with skip_bad is left out and reported in skipped.json.
    The manifest is written last, so a cache interrupted half-way is never loaded.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    (out / REPORT).unlink(missing_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else workers
    writers: dict[tuple[str, str], NpyWriter] = {}
    offsets = {(s, m): [0] for s in splits for m, st in stored.items() if st.kind == "frames"}
    labels: dict[str, list[int]] = {s: [] for s in splits}
    names: dict[str, list[str]] = {s: [] for s in splits}
    bad = list(bad)
    tic = time.perf_counter()
    try:
        for s in splits:
            for m, st in stored.items():
                writers[s, m] = NpyWriter(out / f"{s}.{m}.npy", st.dtype, st.shape)
        for clip, arrays in tqdm(_read_all(read_clip, clips, workers), total=len(clips), desc=f"prepare {dataset}",
                                 unit="clip", leave=False):
            try:
                if isinstance(arrays, DataError):
                    raise arrays
                _check(clip, arrays, stored)
            except DataError as e:
                if not skip_bad:
                    raise
                bad.append({"split": clip.split, "clip": clip.name, "file": e.path, "problem": e.problem})
                continue
            for m, st in stored.items():
                x = arrays[m]
                writers[clip.split, m].append(x if st.kind == "frames" else x[None])
                if st.kind == "frames":
                    offsets[clip.split, m].append(offsets[clip.split, m][-1] + len(x))
            labels[clip.split].append(clip.label)
            names[clip.split].append(clip.name)
    finally:
        for w in writers.values():
            w.close()
    if skip_bad:
        (out / REPORT).write_text(json.dumps({"dataset": dataset, "skipped": bad}, indent=1) + "\n")
    for s in splits:
        if not labels[s]:
            raise DataError(out, f"no usable clip left in the {s} split" + (f" (see {REPORT})" if skip_bad else ""))
        np.save(out / f"{s}.labels.npy", np.asarray(labels[s], dtype=np.int64))
        (out / f"{s}.clips.txt").write_text("\n".join(names[s]) + "\n")
    for (s, m), off in offsets.items():
        np.save(out / f"{s}.{m}.offsets.npy", np.asarray(off, dtype=np.int64))
    classes = list(classes)
    manifest = {
        "format": FORMAT, "version": VERSION, "dataset": dataset, "classes": classes,
        "modalities": {m: {"kind": st.kind, "shape": list(st.shape), "dtype": st.dtype.name}
                       for m, st in stored.items()},
        "splits": {s: {"clips": len(labels[s]),
                       "frames": {m: int(offsets[s, m][-1]) for m, st in stored.items() if st.kind == "frames"},
                       "label_counts": {c: labels[s].count(i) for i, c in enumerate(classes)}} for s in splits},
        "skipped": len(bad), "recipe": recipe, "seconds": round(time.perf_counter() - tic, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    counts = ", ".join(f"{manifest['splits'][s]['clips']} {s}" for s in splits)
    size_gb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e9
    log(f"prepared {dataset}: {counts} clips in {manifest['seconds']:.0f} s, {size_gb:.2f} GB in {out}")
    if skip_bad:
        log(f"skipped {len(bad)} clips" + (f" (each with its reason in {out / REPORT})" if bad else ""))
    return manifest


# --- reading -----------------------------------------------------------------------------------------

def read_manifest(root: str | Path, dataset: str) -> dict:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(root, f"no {MANIFEST}: prepare the data first "
                              f"(python -m inforeg prepare {dataset} --raw RAW_DIR --out {root})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(path, f"not an {FORMAT} manifest of version {VERSION}: prepare the data again")
    if manifest.get("dataset") != dataset:
        raise DataError(path, f"this cache holds {manifest.get('dataset')!r}, not {dataset!r}")
    return manifest


def open_array(path: Path, shape: tuple | None = None, dtype: np.dtype | None = None) -> np.ndarray:
    """A memory-mapped .npy array, checked against the shape and dtype the manifest promises."""
    if not path.is_file():
        raise DataError(path, "missing cache file: prepare the data again")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise DataError(path, f"unreadable cache file ({e}): prepare the data again") from None
    if (shape is not None and array.shape != tuple(shape)) or (dtype is not None and array.dtype != dtype):
        raise DataError(path, f"holds {array.dtype} {array.shape}, the manifest says {dtype} {tuple(shape)}: "
                              "the cache is damaged; prepare the data again")
    return array


@dataclass(frozen=True)
class FrameRecipe:
    """Which frames a batch shows and how. train_pick: random (InfoReg: a sorted sample without
    replacement) | segments (Kinetics-Sounds: one at random within each equal part of the clip);
    test_pick: even (the centres of equal parts: deterministic) | random (the official code: test accuracy
    then depends on the seed)."""

    frames: int = 3
    size: int = 224
    train_pick: str = "random"
    test_pick: str = "even"


def pick_frames(counts: np.ndarray, t: int, mode: str, g: torch.Generator | None) -> np.ndarray:
    """(clips, t) frame indices within each clip, in time order. A clip with fewer than t frames repeats some."""
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    even = np.floor((np.arange(t) + 0.5) / t * counts[:, None]).astype(np.int64)
    if mode == "even":
        return even
    if mode == "segments":
        u = torch.rand(n, t, generator=g, dtype=torch.float64).numpy()
        return np.minimum(np.floor((np.arange(t) + u) / t * counts[:, None]).astype(np.int64), counts[:, None] - 1)
    if mode == "random":
        keys = torch.rand(n, int(counts.max()), generator=g).numpy()
        keys[np.arange(keys.shape[1])[None, :] >= counts[:, None]] = np.inf
        sample = np.sort(np.argsort(keys, axis=1, kind="stable")[:, :t], axis=1)
        return np.where((counts >= t)[:, None], sample, even)
    raise ValueError(f"unknown frame pick {mode!r}; known: even, segments, random")


def crop_boxes(n: int, height: int, width: int, g: torch.Generator,
               scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Tensor:
    """(n, 4) boxes (top, left, height, width): torchvision's RandomResizedCrop.get_params, drawn from `g`
    (10 tries at a random area and aspect ratio, else the whole image cut to the nearest allowed ratio)."""
    area = height * width
    target = area * torch.empty(n, 10, dtype=torch.float64).uniform_(*scale, generator=g)
    aspect = torch.exp(torch.empty(n, 10, dtype=torch.float64).uniform_(np.log(ratio[0]), np.log(ratio[1]),
                                                                        generator=g))
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = ok.long().argmax(1, keepdim=True)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (height - h + 1)).long()
    left = torch.floor(u[:, 1] * (width - w + 1)).long()
    fallback = ~ok.any(1)
    if fallback.any():  # torchvision's fallback: the centred crop of the whole image at the nearest allowed ratio
        fw, fh = width, height
        if width / height < ratio[0]:
            fh = round(width / ratio[0])
        elif width / height > ratio[1]:
            fw = round(height * ratio[1])
        h, w = torch.where(fallback, fh, h), torch.where(fallback, fw, w)
        top = torch.where(fallback, (height - fh) // 2, top)
        left = torch.where(fallback, (width - fw) // 2, left)
    return torch.stack([top, left, h, w], 1)


def finish_frames(x: Tensor, size: int, boxes: Tensor | None = None, flips: Tensor | None = None) -> Tensor:
    """uint8 (B, T, 3, H, W) on any device -> float32 (B, T, 3, size, size): each frame cropped to its box and
    resized (RandomResizedCrop) and flipped where asked, or just resized (test); then ImageNet-normalised."""
    b, t = x.shape[:2]
    x = x.flatten(0, 1).float().div_(255)
    if boxes is not None:
        x = torch.stack([TF.resized_crop(f, top, left, h, w, [size, size], antialias=True)
                         for f, (top, left, h, w) in zip(x, boxes.tolist())])
        x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)
    elif tuple(x.shape[-2:]) != (size, size):
        x = TF.resize(x, [size, size], antialias=True)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD).view(b, t, 3, size, size)


def _finish(raw: dict[str, Tensor], kinds: dict[str, str], size: int,
            augment: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    return {m: finish_frames(x, size, *augment.get(m, (None, None))) if kinds[m] == "frames" else x.float()
            for m, x in raw.items()}


class DeferredBatch(Batch):
    """A batch in stored form (uint8 frames, float16 spectrograms): `.to(device)` moves it, then finishes it
    there (the crops and flips were drawn when the batch was made). `.inputs` finishes it on the CPU."""

    def __init__(self, raw: dict[str, Tensor], labels: Tensor, finish: Callable[[dict], dict]):
        self.raw, self.labels, self._finish = raw, labels, finish

    @property
    def inputs(self) -> dict[str, Tensor]:  # type: ignore[override]
        return self._finish(self.raw)

    def to(self, device: str | torch.device) -> Batch:
        raw = {m: x.to(device, non_blocking=True) for m, x in self.raw.items()}
        return Batch(self._finish(raw), self.labels.to(device, non_blocking=True))


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """The items of `items`, produced by a background thread up to `depth` ahead (reading overlaps training)."""
    q: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as e:  # handed to the consumer
            put(_Raised(e))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()


def _take(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """array[rows], read from the memory map in ascending order (sequential on disk)."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    out[order] = array[rows[order]]
    return out


@dataclass
class CachedDataset:
    """One split of a prepared cache, read through memory maps, with the TensorDataset interface
    (`batches`, `__len__`, `labels`, `modalities`, `subset`, `select`, `input_dims`).

    `batches(size, generator)` is training: shuffled, frames picked at random, crops and flips; without a
    generator it is evaluation, in order, with `recipe.test_pick` frames and no augmentation, at most
    `eval_batch` clips a batch whatever is asked (frames take memory)."""

    arrays: dict[str, np.ndarray]  # modality -> (clips, ...) spectrograms or (all frames, 3, S, S)
    offsets: dict[str, np.ndarray]  # frame modalities -> (clips + 1,) start of each clip's frames
    labels: Tensor
    recipe: FrameRecipe = field(default_factory=FrameRecipe)
    index: np.ndarray | None = None  # rows of the split this dataset shows (None: all)
    eval_batch: int = 256
    prefetch_depth: int = 2

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = np.arange(len(self.labels))

    @property
    def kinds(self) -> dict[str, str]:
        return {m: "frames" if m in self.offsets else "spectrogram" for m in self.arrays}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.arrays)

    def __len__(self) -> int:
        return len(self.labels)

    def input_dims(self) -> dict[str, int]:
        """Input channels per modality: 1 for a spectrogram, 3 for RGB frames."""
        return {m: 3 if k == "frames" else 1 for m, k in self.kinds.items()}

    def frame_counts(self) -> dict[str, np.ndarray]:
        return {m: (off[1:] - off[:-1])[self.index] for m, off in self.offsets.items()}

    def subset(self, index: Tensor | np.ndarray) -> "CachedDataset":
        index = np.asarray(index, dtype=np.int64)
        return CachedDataset(self.arrays, self.offsets, self.labels[torch.as_tensor(index)], self.recipe,
                             self.index[index], self.eval_batch, self.prefetch_depth)

    def select(self, modalities: tuple[str, ...]) -> "CachedDataset":
        missing = [m for m in modalities if m not in self.arrays]
        if missing:
            raise ValueError(f"unknown modalities {missing}; this dataset has {list(self.arrays)}")
        return CachedDataset({m: self.arrays[m] for m in modalities},
                             {m: o for m, o in self.offsets.items() if m in modalities}, self.labels, self.recipe,
                             self.index, self.eval_batch, self.prefetch_depth)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[DeferredBatch]:
        train = generator is not None
        order = torch.randperm(len(self), generator=generator) if train else torch.arange(len(self))
        g = None  # private generator of frame picks and crops: the batches are made in another thread
        if train or (self.recipe.test_pick == "random" and self.offsets):
            g = torch.Generator().manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
        size = batch_size if train else min(batch_size, self.eval_batch)
        chunks = [order[i:i + size].numpy() for i in range(0, len(self), size)]
        return prefetch((self._batch(idx, train, g) for idx in chunks), self.prefetch_depth)

    def _batch(self, idx: np.ndarray, train: bool, g: torch.Generator | None) -> DeferredBatch:
        rows = self.index[idx]
        rc = self.recipe
        raw, augment = {}, {}
        for m, array in self.arrays.items():
            if m not in self.offsets:
                raw[m] = torch.from_numpy(_take(array, rows))
                continue
            start, stop = self.offsets[m][rows], self.offsets[m][rows + 1]
            picks = pick_frames(stop - start, rc.frames, rc.train_pick if train else rc.test_pick, g)
            frames = _take(array, (start[:, None] + picks).ravel())
            raw[m] = torch.from_numpy(frames).view(len(rows), rc.frames, *array.shape[1:])
            if train:
                augment[m] = (crop_boxes(len(frames), array.shape[2], array.shape[3], g),
                              torch.rand(len(frames), generator=g) < 0.5)
        if torch.cuda.is_available():
            raw = {m: x.pin_memory() for m, x in raw.items()}
        finish = partial(_finish, kinds=self.kinds, size=rc.size, augment=augment)
        return DeferredBatch(raw, self.labels[torch.from_numpy(idx)], finish)


def load_cache(root: str | Path, dataset: str, recipe: FrameRecipe) -> Splits:
    """The train and test splits of a prepared cache (checked against its manifest)."""
    root = Path(root)
    manifest = read_manifest(root, dataset)
    stored = {m: Stored(d["kind"], tuple(d["shape"])) for m, d in manifest["modalities"].items()}
    datasets = {}
    for split in ("train", "test"):
        if split not in manifest["splits"]:
            raise DataError(root / MANIFEST, f"no {split} split")
        info = manifest["splits"][split]
        n = info["clips"]
        labels = torch.from_numpy(np.array(open_array(root / f"{split}.labels.npy", (n,), np.dtype(np.int64))))
        if len(labels) and (labels.min() < 0 or labels.max() >= len(manifest["classes"])):
            raise DataError(root / f"{split}.labels.npy", "labels outside the manifest's classes")
        arrays, offsets = {}, {}
        for m, st in stored.items():
            if st.kind == "frames":
                total = info["frames"][m]
                offsets[m] = np.array(open_array(root / f"{split}.{m}.offsets.npy", (n + 1,), np.dtype(np.int64)))
                if offsets[m][0] != 0 or offsets[m][-1] != total or (np.diff(offsets[m]) < 1).any():
                    raise DataError(root / f"{split}.{m}.offsets.npy", "inconsistent frame offsets: prepare again")
                arrays[m] = open_array(root / f"{split}.{m}.npy", (total, *st.shape), st.dtype)
            else:
                arrays[m] = open_array(root / f"{split}.{m}.npy", (n, *st.shape), st.dtype)
        train_pick = manifest["recipe"].get("train_frames", recipe.train_pick)
        datasets[split] = CachedDataset(arrays, offsets, labels, FrameRecipe(
            recipe.frames, recipe.size, train_pick, recipe.test_pick))
    return Splits(datasets["train"], datasets["test"], len(manifest["classes"]))
