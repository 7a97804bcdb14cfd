"""Cost of the exact per-sample Tr F on a ResNet-18 audio-visual pair, as a multiple of a plain joint step.

The model is the package's own (`build_model`, `model.encoder=resnet18`, concat head, official init), in
training mode (BatchNorm on batch statistics). Entries: `joint` (forward, CE, zero_grad, backward, SGD step),
`meter` (the same with `FisherMeter` started before the forward and collected after the backward: every
step's exact per-sample Tr F per encoder and for the whole model), `loop` (`per_sample_sq_norms_loop` with
shares=True, the definition that BatchNorm in training mode needs, see inforeg/fisher.py) and `vmap`
(`per_sample_sq_norms_vmap`, shares=True: vmap over n of the batch gradient through sample n's rows; it holds
B copies of the batch's activations, so `--no-vmap` skips it). Defaults are
CREMA-D's shapes (batch 64, spectrogram 1 x 257 x 188, 3 frames of 3 x 224 x 224); on a small CPU use, e.g.,

    .venv/bin/python benchmarks/fisher_conv.py --batch 8 --image-size 112 --frames 1 --audio 128x94
    .venv/bin/python benchmarks/fisher_conv.py --device cuda            # CREMA-D shapes on a GPU

Warm-up, then `--repeats` rounds in which `joint` and `meter` run one step each in alternating order (the
loop runs in the first `--loop-repeats` rounds). CPU: one thread, this thread's CPU time; CUDA: wall time
between synchronizations. Medians over rounds; ratios divide by joint's median. The last lines read
`NAME ratio_to_joint=X.XX peak_mb=Y` (benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_cost import peak_mb  # noqa: E402  (first: it quiets the profiler before torch loads)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from inforeg.config import ModelConfig  # noqa: E402
from inforeg.fisher import FisherMeter, per_sample_sq_norms_loop, per_sample_sq_norms_vmap  # noqa: E402
from inforeg.models import build_model  # noqa: E402

REL_TOL = 1e-4  # meter against the per-sample loop (issue 7)
CLASSES = 6  # CREMA-D


def _loss(out, labels):
    return F.cross_entropy(out.logits, labels)


def _batch(args, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f, t = args.audio
    inputs = {"audio": torch.randn(args.batch, 1, f, t, generator=g),
              "visual": torch.randn(args.batch, args.frames, 3, args.image_size, args.image_size, generator=g)}
    labels = torch.randint(CLASSES, (args.batch,), generator=g)
    return {m: x.to(args.device) for m, x in inputs.items()}, labels.to(args.device)


def _groups(model):
    return {m: model.encoders[m] for m in model.modalities} | {"all": model}


def make_step(model, meter: FisherMeter | None, inputs, labels):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step():
        if meter is not None:
            meter.start()
        loss = _loss(model(inputs), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if meter is not None:
            meter.collect(len(labels))
        opt.step()

    return step


def timed(fn, device: str) -> float:
    """ms of one call: this thread's CPU time on CPU (one thread), wall time between syncs on CUDA."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        tic = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return 1e3 * (time.perf_counter() - tic)
    tic = time.thread_time()
    fn()
    return 1e3 * (time.thread_time() - tic)


def rel_diff(got: dict, ref: dict) -> float:
    return max(((got[g] - ref[g]).abs() / ref[g]).max().item() for g in ref)


def check(base, inputs, labels) -> tuple[float, dict]:
    """Max relative difference, over samples and groups, of the meter against the share loop; the loop's
    numbers."""
    model = copy.deepcopy(base)
    groups = _groups(model)
    meter = FisherMeter(groups)
    meter.start()
    _loss(model(inputs), labels).backward()
    got = meter.collect(len(labels))
    meter.close()
    model.zero_grad(set_to_none=True)
    ref = per_sample_sq_norms_loop(model, _loss, inputs, labels, groups, shares=True)
    return rel_diff(got, ref), ref


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--audio", type=lambda s: tuple(int(v) for v in s.split("x")), default=(257, 188),
                   help="spectrogram FREQxTIME (default 257x188)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--loop-repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-vmap", dest="vmap", action="store_false",
                   help="skip the vmap reference (it holds batch-size copies of the batch's activations)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_model(ModelConfig(encoder="resnet18", fusion="concat", init="official"),
                       {"audio": 1, "visual": 3}, CLASSES).to(args.device).train()
    inputs, labels = _batch(args)
    print(f"device {args.device}  threads {torch.get_num_threads()}  torch {torch.__version__}  batch {args.batch}"
          f"  audio 1x{args.audio[0]}x{args.audio[1]}  visual {args.frames}x3x{args.image_size}x{args.image_size}")

    rel, ref = check(base, inputs, labels)
    print(f"max rel diff meter vs loop {rel:.2e} (limit {REL_TOL:.0e})")

    joint_model, meter_model, ref_model = (copy.deepcopy(base) for _ in range(3))
    meter = FisherMeter(_groups(meter_model))
    entries = {"joint": make_step(joint_model, None, inputs, labels),
               "meter": make_step(meter_model, meter, inputs, labels),
               "loop": lambda: per_sample_sq_norms_loop(ref_model, _loss, inputs, labels, _groups(ref_model),
                                                        shares=True)}
    def vmap():
        return per_sample_sq_norms_vmap(ref_model, _loss, inputs, labels, _groups(ref_model), shares=True)

    if args.vmap:
        try:
            print(f"max rel diff vmap vs loop {rel_diff(vmap(), ref):.2e}")
            entries["vmap"] = vmap
        except (RuntimeError, MemoryError) as err:  # B copies of the batch's activations at once
            print(f"vmap: not run ({type(err).__name__}: {str(err)[:200]})")
    else:
        print("vmap: not run (--no-vmap)")

    for _ in range(args.warmup):
        entries["joint"](), entries["meter"]()
    times: dict[str, list[float]] = {n: [] for n in entries}
    for r in range(args.repeats):
        order = ["joint", "meter"] if r % 2 == 0 else ["meter", "joint"]
        if r < args.loop_repeats:
            order += [n for n in ("loop", "vmap") if n in entries]
        for name in order:
            times[name].append(timed(entries[name], args.device))
    med = {n: statistics.median(t) for n, t in times.items() if t}
    peaks = {n: peak_mb(entries[n], args.device) for n in ("joint", "meter")}
    meter.close()

    clock = "wall" if args.device.startswith("cuda") else "thread CPU"
    print(f"\n{'entry':8s} {clock + ' ms':>14s} {'min':>9s} {'max':>9s} {'ratio':>7s}")
    for n, m in med.items():
        print(f"{n:8s} {m:14.1f} {min(times[n]):9.1f} {max(times[n]):9.1f} {m / med['joint']:7.2f}")
    print()
    for n in ("joint", "meter", "loop", "vmap"):
        ratio = f"{med[n] / med['joint']:.2f}" if n in med else "nan"
        peak = f"{peaks[n]:.1f}" if n in peaks else "nan"
        print(f"{n} ratio_to_joint={ratio} peak_mb={peak}")
    return 0 if rel < REL_TOL else 1


if __name__ == "__main__":
    sys.exit(main())
