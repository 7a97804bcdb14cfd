"""Cost of one training step of InfoReg and of the exact per-sample Tr F, as multiples of a plain joint step.

Every variant is built from the package's own pieces (make_config, build_model, build_method, FisherMeter,
the per-sample references, inforeg.train) and timed in this one process: warm-up first, then `--repeats`
rounds in which every variant runs a block of steps in turn (round-robin, starting one further each round),
so that machine noise hits all of them alike. Per round a block gives one number: on CPU the median of its
per-step times (wall clock, and process CPU time with one thread), on CUDA its mean between two
synchronizations; the inforeg.train runs give the epoch's mean. The reported time is the median over rounds;
ratios divide by joint's median over the same rounds, taken with the same statistic.

    .venv/bin/python benchmarks/step_cost.py                # teaching MLP shapes, CPU, 1 thread
    .venv/bin/python benchmarks/step_cost.py --device cuda  # where a GPU is available
    .venv/bin/python benchmarks/step_cost.py --shapes resnet18-cremad   # batch 64, 1x257x188, 3x3x224x224
    .venv/bin/python benchmarks/step_cost.py --shapes resnet18-cremad --resnet-batch 8 --image-size 112 --frames 1

The last lines, one per entry, read `SHAPE/NAME ratio_to_joint=X.XX peak_mb=Y` (see benchmarks/README.md).
"""
from __future__ import annotations

import os

# The CPU memory measurement uses the torch profiler; keep its device probing and allocator notes quiet.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

import argparse  # noqa: E402
import copy  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from inforeg import data as datasets  # noqa: E402
from inforeg import make_config, train  # noqa: E402
from inforeg.data import Batch  # noqa: E402
from inforeg.fisher import FisherMeter, per_sample_sq_norms_loop, per_sample_sq_norms_vmap  # noqa: E402
from inforeg.methods import EpochState, build_method  # noqa: E402
from inforeg.models import build_model  # noqa: E402

REL_TOL = 1e-5  # hook-based meter against the per-sample loop
REL_TOL_SHARES = 1e-4  # the same for ResNet-18 (conv and BatchNorm rules, long float32 sums): issue 7's bound


# --------------------------------------------------------------------------------------------------------
# Shapes: what a block measures: the teaching MLPs, and the full profile's ResNet-18 pair at CREMA-D shapes
# (random content; `loop=False`: inforeg.train would need a prepared cache).
# --------------------------------------------------------------------------------------------------------

@dataclass
class Shape:
    name: str
    description: str
    dataset: str  # the config's data.name
    overrides: dict  # config overrides shared by every variant (model sizes, ...)
    # (args, config, how many batches) -> (input dims, classes, batches on the device, splits for the methods
    # that read data at the start of an epoch: PMR's prototypes, G-Blending's and MI-Balance's held-out passes)
    make_batches: Callable[..., tuple[dict[str, int], int, list[Batch], datasets.Splits]]
    loop: bool = True  # time inforeg.train too (needs a dataset the package can load)
    loop_overrides: Callable[[int, int], dict] = field(default=lambda batch, steps: {})
    shares: bool = False  # BatchNorm in the model: the per-sample references take each sample's share
    n_batches: int = 8  # distinct batches the step entries cycle through
    # this shape's values of --batch, --steps, --warmup, --repeats (None: the command line's)
    sizes: Callable[[argparse.Namespace], dict] = field(default=lambda args: {})


def _teaching_batches(args, cfg, n: int):
    """Full mini-batches of the teaching data (real inputs: modality A leads, so InfoReg regulates it)."""
    splits = datasets.load(replace(cfg.data, n_val=500), cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out: list[Batch] = []
    while len(out) < n:
        out += [b.to(args.device) for b in splits.train.batches(args.batch, gen) if len(b) == args.batch]
    return splits.input_dims(), splits.num_classes, out[:n], splits


def _cremad_batches(args, cfg, n: int):
    """CREMA-D-shaped batches of random content (a 1 x F x T log-spectrogram, `--frames` RGB frames, 6
    classes), the shapes of the prepared cache; splits of 2 such batches for the per-epoch passes."""
    f, t = args.audio
    g = torch.Generator().manual_seed(cfg.seed)

    def make(k: int) -> datasets.TensorDataset:
        inputs = {"audio": torch.randn(k, 1, f, t, generator=g),
                  "visual": torch.randn(k, args.frames, 3, args.image_size, args.image_size, generator=g)}
        return datasets.TensorDataset(inputs, torch.randint(CREMAD_CLASSES, (k,), generator=g))

    train_set = make(args.batch * n)
    batches = [Batch({m: x[i * args.batch:(i + 1) * args.batch] for m, x in train_set.inputs.items()},
                     train_set.labels[i * args.batch:(i + 1) * args.batch]).to(args.device) for i in range(n)]
    small = train_set.subset(torch.arange(2 * args.batch))
    splits = datasets.Splits(small, make(args.batch), CREMAD_CLASSES, make(args.batch))
    return {"audio": 1, "visual": 3}, CREMAD_CLASSES, batches, splits


CREMAD_CLASSES = 6

SHAPES = {
    "teaching-mlp": Shape(
        name="teaching-mlp",
        description="2 modalities (A, B), MLP encoders 256 -> 256 -> 64, concat head, 10 classes",
        dataset="teaching",
        overrides={"model.encoder": "mlp", "model.hidden": 256, "model.feature_dim": 64,
                   "model.fusion": "concat"},
        make_batches=_teaching_batches,
        # one epoch = `steps` full batches; a one-batch test set keeps the per-epoch evaluation small
        loop_overrides=lambda batch, steps: {"data.n_train": batch * steps, "data.n_test": batch},
    ),
    "resnet18-cremad": Shape(
        name="resnet18-cremad",
        description="ResNet-18 audio (1 x F x T spectrogram) and visual (frames of 3 x S x S, averaged) "
                    "encoders, official init, concat head, 6 classes: the full profile's CREMA-D model",
        dataset="cremad",
        overrides={"model.encoder": "resnet18", "model.init": "official", "model.fusion": "concat"},
        make_batches=_cremad_batches,
        loop=False,  # inforeg.train needs a prepared cache; the step entries use the same code per batch
        shares=True,
        n_batches=2,  # ResNet batches are large; two alternate
        sizes=lambda args: {"batch": args.resnet_batch, "steps": args.resnet_steps, "warmup": 1,
                            "repeats": args.resnet_repeats},
    ),
}


# --------------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------------

@dataclass
class Variant:
    name: str
    what: str
    fn: Callable[[], float | None]  # one call; returns its own per-step ms when it times itself (loops)
    calls: int  # calls per block (0: unsupported here, not timed)
    reports_ms: bool = False  # fn returns per-step ms (inforeg.train runs)
    warmup: int = 1  # warm-up calls
    after: Callable[[], str] | None = None  # a note printed after the run (e.g. regulated fraction)
    # per round, per (clock, statistic): ms per step of the block; clock wall | cpu, statistic mean | median
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, clock: str, stat: str, ms: float) -> None:
        self.samples.setdefault((clock, stat), []).append(ms)


class Cycler:
    def __init__(self, batches: list[Batch]):
        self.batches, self.i = batches, 0

    def __call__(self) -> Batch:
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b


def _config(shape: Shape, args, method: str, preset: str = "paper", **extra):
    over = dict(shape.overrides)
    over.update({"optim.batch_size": args.batch, "threads": args.threads})
    over.update(extra)
    return make_config(shape.dataset, method, preset, device=args.device, overrides=over)


def _opt(cfg, model):
    oc = cfg.optim
    return torch.optim.SGD(model.parameters(), lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay)


def _open_window(model, splits=None, epoch: int = 5) -> EpochState:
    """Every modality's prime learning window open (after min_epoch), so InfoReg's regulation acts."""
    device = str(next(model.parameters()).device)
    return EpochState(epoch, [], {m: (True, 1.0) for m in model.modalities}, splits, device)


def _note(method, state) -> str | None:
    """What the method did over the timed steps: the fraction of batches it regulated, per modality."""
    frac = method.on_epoch_end(state).get("reg_frac")
    if not frac:
        return None
    return "regulated fraction of batches: " + ", ".join(f"{m} {f:.2f}" for m, f in frac.items())


def step_variant(shape: Shape, args, base_model, batches: list[Batch], splits, name: str, what: str,
                 method_name: str, preset: str = "paper", meter: bool = False, hooks: bool = False) -> Variant:
    """One training step as inforeg/train.py runs it per batch: forward, the method's loss, zero_grad,
    backward, [FisherMeter collect], [the method's after_backward, window open], SGD step. The method's
    on_epoch_start runs once, before timing (per-epoch work is in the loop_* entries)."""
    cfg = _config(shape, args, method_name, preset)
    model = copy.deepcopy(base_model)
    method, opt, nxt = build_method(cfg, model), _opt(cfg, model), Cycler(batches)
    fisher = None
    if meter:
        try:
            fisher = FisherMeter(_groups(model))
        except TypeError as e:  # a layer without an exact rule: say so, keep the line
            return Variant(name, f"unsupported: {e}", lambda: None, 0)
    state = _open_window(model, splits)
    method.on_epoch_start(state)

    def step():
        b = nxt()
        if fisher is not None:
            fisher.start()
        out = model(b.inputs)
        loss = method.loss(out, b.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if fisher is not None:
            fisher.collect(len(b))
        if hooks:
            method.after_backward(out, b.labels, state)
        opt.step()

    return Variant(name, what, step, args.steps, after=(lambda: _note(method, state)) if hooks else None,
                   warmup=args.warmup)


def official_style_variant(shape: Shape, args, base_model, batches: list[Batch], name: str, what: str) -> Variant:
    """An InfoReg step written the way PAPER.md section 3 describes the official code's (we do not run that
    code: it fails on its first batch): the official preset's loss L + sum_m L_m; four backward passes (each
    unimodal loss and the fused loss on its own, their encoder gradients cloned, then the total); the score by
    a per-sample Python loop with a host sync per sample; c_m exp(tanh Delta) in Python; the proximal term
    added parameter by parameter; the per-layer trace read back with a host sync per layer; SGD step."""
    cfg = _config(shape, args, "inforeg", "official")
    model = copy.deepcopy(base_model)
    opt, nxt, mods = _opt(cfg, model), Cycler(batches), model.modalities
    enc = {m: list(model.encoders[m].parameters()) for m in mods}
    start = {m: [p.detach().clone() for p in enc[m]] for m in mods}
    c = dict(zip(mods, cfg.method.official_c))
    layers = [mod.weight for mod in model.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    trace = [0.0]

    def step():
        b = nxt()
        out = model(b.inputs)
        fused = F.cross_entropy(out.logits, b.labels)
        uni = {m: F.cross_entropy(out.unimodal[m], b.labels) for m in mods}
        kept = {}  # each loss's own gradients, cloned (the official code inspects them; the step does not use them)
        for key, part in [*uni.items(), ("fused", fused)]:  # backward passes 1-3
            opt.zero_grad(set_to_none=True)
            part.backward(retain_graph=True)
            kept[key] = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
        opt.zero_grad(set_to_none=True)
        (fused + sum(uni.values())).backward()  # pass 4: the gradient SGD uses
        score = {m: 0.0 for m in mods}
        for m in mods:
            prob = out.unimodal[m].detach().softmax(1)
            for i in range(len(b)):  # per sample, one host sync each
                score[m] += prob[i, b.labels[i]].item()
        for m in mods:
            others = [score[m] - score[k] for k in mods if k != m and score[k] < score[m]]
            if others:  # m leads: proximal gradient on every parameter of its encoder
                coef = c[m] * math.exp(math.tanh(sum(others) / len(others)))
                for p, p0 in zip(enc[m], start[m]):
                    p.grad.add_(coef * (p.detach() - p0))
        for w in layers:  # the trace, after the proximal term, one host sync per layer
            trace[0] += float((w.grad ** 2).mean())
        opt.step()

    return Variant(name, what, step, args.steps, warmup=args.warmup)


def reference_variant(shape: Shape, args, base_model, batches: list[Batch], name: str, what: str, ref) -> Variant:
    """Exact per-sample Tr F by a slow reference, alone (no optimizer step)."""
    cfg = _config(shape, args, "joint")
    model = copy.deepcopy(base_model)
    method, nxt, groups = build_method(cfg, model), Cycler(batches), _groups(model)

    def tr():
        b = nxt()
        ref(model, method.loss, b.inputs, b.labels, groups, **({"shares": True} if shape.shares else {}))
    n = max(1, args.steps // 15)
    return Variant(name, what, tr, n, warmup=max(1, args.warmup // 15))


def _groups(model) -> dict:
    """The loop's Tr F groups: each encoder and the whole model."""
    return {m: model.encoders[m] for m in model.modalities} | {"all": model}


BASELINES = (  # every baseline method of the comparison tables, as the loop runs it
    ("ogm", "OGM: leading encoder's weight gradients scaled"),
    ("ogm_ge", "OGM-GE: OGM + Gaussian noise on every encoder"),
    ("greedy", "Greedy: conditional learning speeds, re-balancing steps"),
    ("pmr", "PMR: prototype cross-entropy on the weaker modality"),
    ("agm", "AGM: Shapley-like mono logits (extra head passes), gradients scaled"),
    ("gblending", "G-Blending: weighted fused + unimodal losses"),
    ("mmpareto", "MMPareto: min-norm combination of multimodal and unimodal gradients"),
    ("mibalance", "MI-Balance (reconstructed): MI-gated distillation / weighted multitask"),
)


def build_variants(shape: Shape, args, base_model, batches: list[Batch], splits) -> list[Variant]:
    sv = functools.partial(step_variant, shape, args, base_model, batches, splits)
    rv = functools.partial(reference_variant, shape, args, base_model, batches)
    makers = [  # (name, builder): only the entries asked for (--only, --no-vmap) are built
        ("joint", lambda n: sv(n, "forward, CE, backward, SGD step", "joint")),
        ("joint_star", lambda n: sv(n, "joint + unimodal CEs (L + sum_m L_m): the loss of the official preset",
                                    "joint*")),
        ("joint_fisher", lambda n: sv(n, "joint + FisherMeter start()/collect() (exact per-sample Tr F)", "joint",
                                      meter=True)),
        ("inforeg_paper", lambda n: sv(n, "InfoReg paper preset: loss + after_backward, window open", "inforeg",
                                       "paper", hooks=True)),
        ("inforeg_official", lambda n: sv(n, "InfoReg official preset: loss + after_backward, window open",
                                          "inforeg", "official", hooks=True)),
        ("inforeg_official_style", lambda n: official_style_variant(
            shape, args, base_model, batches, n,
            "InfoReg as PAPER.md 3 describes the official code: 4 backwards, clones, per-sample loop, host syncs")),
        *[(m, functools.partial(lambda n, m, what: sv(n, what, m, hooks=True), m=m, what=what))
          for m, what in BASELINES],
        ("fisher_loop", lambda n: rv(n, "exact per-sample Tr F alone: per-sample loop, one backward each",
                                     per_sample_sq_norms_loop)),
        ("fisher_vmap", lambda n: rv(n, "exact per-sample Tr F alone: torch.func vmap(grad)",
                                     per_sample_sq_norms_vmap)),
    ]
    if shape.shares and args.no_vmap:
        makers = [(n, f) for n, f in makers if n != "fisher_vmap"]
    if args.only:  # joint stays: every ratio divides by it
        makers = [(n, f) for n, f in makers if n == "joint" or n in args.only]
    variants = [make(name) for name, make in makers]

    # the whole loop: inforeg.train, one epoch of `--loop-steps` batches per call (see EpochAtATime)
    if shape.loop and args.loop_steps > 0 and (not args.only or any(n.startswith("loop_") for n in args.only)):
        loops = (
            ("loop_joint", "joint", "paper", {"fisher": False, "method.trace": "official"},
             "train(): joint, fisher off (official proxy + grad norms only)"),
            ("loop_joint_fisher", "joint", "paper", {}, "train(): joint, fisher on (the default)"),
            # regulate=always: regulation acts in every timed epoch, whatever the window says
            ("loop_inforeg_paper", "inforeg", "paper", {"method.regulate": "always"},
             "train(): InfoReg paper, fisher on, regulate=always"),
            ("loop_inforeg_official", "inforeg", "official", {"method.regulate": "always"},
             "train(): InfoReg official, fisher on (its default), regulate=always"),
            ("loop_inforeg_official_nofisher", "inforeg", "official",
             {"method.regulate": "always", "fisher": False},
             "train(): InfoReg official, fisher off (its window needs only the proxy), regulate=always"),
            *[(f"loop_{m}", m, "paper", {"method.regulate": "always"}, f"train(): {what.split(':')[0]}, fisher on, "
               "regulate=always (its per-epoch work included)") for m, what in BASELINES],
        )
        for name, method_name, preset, extra, what in loops:
            over = dict(extra, epochs=10_000, **shape.loop_overrides(args.batch, args.loop_steps))
            if args.only and name not in args.only:
                continue
            cfg = _config(shape, args, method_name, preset, **over)
            loop = EpochAtATime(cfg, args.loop_steps)
            variants.append(Variant(name, what, loop, 1, reports_ms=True, after=loop.regulated))

    return variants


class _Pause(Exception):
    pass


class EpochAtATime:
    """inforeg.train, one epoch per call, through its own resume mechanism (the `checkpoint` argument).

    `save` (called after every epoch but the last) keeps the state and stops the run, so the next call
    resumes at the next epoch: the loop variants interleave with the others epoch by epoch, and the last
    epoch's linear probe never runs. Returns the epoch's per-step ms, from the loop's own `seconds` (it
    includes that epoch's bookkeeping and one evaluation of the one-batch test set)."""

    def __init__(self, cfg, steps: int):
        self.cfg, self.steps, self.state = cfg, steps, None

    def load(self) -> dict | None:
        return self.state

    def save(self, state: dict) -> None:
        self.state = state
        raise _Pause

    def __call__(self) -> float:
        try:
            train(self.cfg, progress=False, checkpoint=self)
        except _Pause:
            pass
        else:  # pragma: no cover - only if the run ever reaches its last epoch
            raise RuntimeError("the loop ran to its last epoch")
        return 1000.0 * self.state["history"][-1]["seconds"] / self.steps

    def regulated(self) -> str | None:
        if self.cfg.method.name == "joint":  # nothing to regulate
            return None
        hist = self.state["history"][1:]  # the timed epochs
        frac = {m: statistics.mean(h["reg_frac"][m] for h in hist) for m in hist[0]["reg_frac"]}
        return "regulated fraction of batches: " + ", ".join(f"{m} {f:.2f}" for m, f in frac.items())


def check_meter(shape: Shape, args, base_model, batch: Batch) -> tuple[str, bool]:
    """FisherMeter (hooks) against the per-sample loop and vmap, on one batch, for both losses."""
    lines, ok = [], True
    for method_name, label in (("joint", "joint loss"), ("joint*", "official loss L+sum L_m")):
        cfg = _config(shape, args, method_name)
        model = copy.deepcopy(base_model)
        method = build_method(cfg, model)
        groups = _groups(model)
        try:
            meter = FisherMeter(groups)
        except TypeError as e:
            return f"check: FisherMeter unsupported here ({e})", True
        meter.start()
        out = model(batch.inputs)
        method.loss(out, batch.labels).backward()
        hooks = meter.collect(len(batch))
        meter.close()
        share = {"shares": True} if shape.shares else {}
        model.zero_grad(set_to_none=True)
        loop = per_sample_sq_norms_loop(model, method.loss, batch.inputs, batch.labels, groups, **share)
        vmap = (per_sample_sq_norms_vmap(model, method.loss, batch.inputs, batch.labels, groups, **share)
                if not (shape.shares and args.no_vmap) else None)

        def rel(a, b):
            return max(float(((a[g] - b[g]).abs() / b[g].abs().clamp_min(1e-30)).max()) for g in groups)
        r_hook = rel(hooks, loop)
        r_vmap = f"{rel(vmap, loop):.2e}" if vmap is not None else "not run (--no-vmap)"
        tol = REL_TOL_SHARES if shape.shares else REL_TOL
        ok = ok and r_hook < tol
        lines.append(f"check ({label}, groups {', '.join(groups)}): max rel diff meter vs loop {r_hook:.2e} "
                     f"[{'ok' if r_hook < tol else 'FAIL'}, tol {tol:g}]; vmap vs loop {r_vmap}")
    return "\n".join(lines), ok


# --------------------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_block(v: Variant, device: str, cpu_clock: bool) -> None:
    """One block of `v.calls` calls: mean ms per step, and on CPU also the median of the per-call times
    (robust to other processes preempting a few steps), by the wall clock and by the process CPU time
    (which does not count time spent preempted; taken with --threads 1 only, where the step runs on this
    one thread: with more, idle OpenMP workers spin and count)."""
    if v.reports_ms:  # train(): the loop's own wall-clock epoch time
        ms = [v.fn() for _ in range(v.calls)]
        v.add("wall", "mean", statistics.mean(ms))
        return
    if device.startswith("cuda"):  # only the whole block, between two synchronizations
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(v.calls):
            v.fn()
        _sync(device)
        v.add("wall", "mean", 1000.0 * (time.perf_counter() - t0) / v.calls)
        return
    wall, cpu = [], []
    for _ in range(v.calls):
        w, c = time.perf_counter(), time.process_time()
        v.fn()
        cpu.append(1000.0 * (time.process_time() - c))
        wall.append(1000.0 * (time.perf_counter() - w))
    for clock, ms in (("wall", wall), ("cpu", cpu)) if cpu_clock else (("wall", wall),):
        v.add(clock, "mean", statistics.mean(ms))
        v.add(clock, "median", statistics.median(ms))


def peak_mb(fn: Callable, device: str) -> float:
    """Extra tensor memory at the peak of one call, above what was allocated when it started (MB).

    CUDA: torch.cuda.max_memory_allocated. CPU: the torch profiler's allocator events (every tensor
    allocation and free through the CPU allocator, in time order); the running sum's maximum."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile, record_function

    # Two calls; the second is measured. The profiler cannot see the frees of blocks allocated before it
    # started (the first call frees the previous step's gradients); the second call's frees are all seen.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
            with record_function("step_cost.measured"):
                fn()
        events = list(prof.profiler.kineto_results.events())
    mark = next(e for e in events if e.name() == "step_cost.measured")
    mem = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    level = sum(n for t, n in mem if t < mark.start_ns())
    cur = peak = level
    for t, n in mem:
        if mark.start_ns() <= t <= mark.end_ns():
            cur += n
            peak = max(peak, cur)
    return (peak - level) / 2**20


def run_shape(shape: Shape, args) -> tuple[list[tuple[str, float, float]], bool]:
    """Time every variant of one shape block; (summary rows, whether the meter check passed)."""
    args = argparse.Namespace(**{**vars(args), **shape.sizes(args)})
    cfg = _config(shape, args, "joint")
    dims, classes, batches, splits = shape.make_batches(args, cfg, shape.n_batches)
    torch.manual_seed(cfg.seed)
    base_model = build_model(cfg.model, dims, classes).to(args.device)
    check, check_ok = check_meter(shape, args, base_model, batches[0])
    variants = build_variants(shape, args, base_model, batches, splits)
    active = [v for v in variants if v.calls > 0]

    cpu_clock = not args.device.startswith("cuda") and args.threads == 1
    t_start = time.perf_counter()
    for v in active:
        for _ in range(v.warmup):
            v.fn()
    for r in range(args.repeats):  # round-robin, starting one further each round
        k = r % len(active)
        for v in active[k:] + active[:k]:
            time_block(v, args.device, cpu_clock)
    elapsed = time.perf_counter() - t_start

    joint = next(v for v in variants if v.name == "joint")
    cuda = args.device.startswith("cuda")
    clocks = ("wall", "cpu") if cpu_clock else ("wall",)
    print(f"== {shape.name}: {shape.description}; batch {args.batch}, {args.device}, "
          f"{args.threads} thread(s), torch {torch.__version__}, python {platform.python_version()}")
    print(check)
    print(f"timing: {args.warmup} warm-up steps, {args.repeats} interleaved rounds of {args.steps} steps "
          f"(per-sample references: {max(1, args.steps // 15)} call(s); train(): one epoch of {args.loop_steps} "
          f"steps per round after one warm-up epoch), {elapsed:.1f} s")
    if cuda:
        print("ms: median over rounds of the block's mean step time (wall clock, between two synchronizations)")
        print("peak_mb: CUDA max_memory_allocated during one call, above memory_allocated at its start")
    else:
        print("ms: median over rounds of the block's median step time, wall clock (wall)"
              + (" and process CPU time (cpu)" if cpu_clock else "")
              + "; train() runs: of the epoch's mean wall time per step, their ratio to joint's block mean")
        print("peak_mb: extra CPU tensor memory at the peak of one call, above its start (torch profiler "
              "allocator events)")
    print(f"summary ratio: {args.clock} clock; peak_mb is nan where not measured (train() runs)")
    head = f"{'name':31s} {'wall ms':>8s} {'min':>7s} {'max':>7s} {'ratio':>6s}"
    if cpu_clock:
        head += f" {'cpu ms':>8s} {'ratio':>6s}"
    print(head + f" {'peak_mb':>8s}  what")

    def stat(v: Variant, clock: str) -> tuple[list[float], float] | None:
        """(samples, ratio to joint) of one clock, or None where that clock was not taken."""
        key = (clock, "mean") if (v.reports_ms or cuda) else (clock, "median")
        if key not in v.samples:
            return None
        ref = joint.samples[key]
        return v.samples[key], statistics.median(v.samples[key]) / statistics.median(ref)

    rows = []
    for v in variants:
        if not v.samples:
            rows.append((v.name, math.nan, math.nan))
            print(f"{v.name:31s} {'-':>8s}  {v.what}")
            continue
        mem = math.nan if (v.reports_ms or args.no_memory) else peak_mb(v.fn, args.device)
        line = f"{v.name:31s}"
        ratios = {}
        for clock in clocks:
            got = stat(v, clock)
            if got is None:
                line += f" {'-':>8s} {'-':>6s}"
                continue
            samples, ratios[clock] = got
            med = statistics.median(samples)
            line += f" {med:8.3f}" + (f" {min(samples):7.3f} {max(samples):7.3f}" if clock == "wall" else "")
            line += f" {ratios[clock]:6.2f}"
        # train() runs have only the wall clock: they report it whatever --clock says
        rows.append((v.name, ratios.get(args.clock, ratios["wall"]), mem))
        print(line + f" {mem:8.2f}  {v.what}")
        note = v.after() if v.after is not None else None
        if note:
            print(f"{'':31s} {note}")
    return rows, check_ok


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=11, help="interleaved rounds; the median is reported")
    p.add_argument("--warmup", type=int, default=10, help="warm-up steps per variant")
    p.add_argument("--steps", type=int, default=20, help="steps per variant per round")
    p.add_argument("--loop-steps", type=int, default=32,
                   help="batches per epoch in the train() runs (0: skip them)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="which clock the summary ratios use (cpu: process CPU time; CPU device only)")
    p.add_argument("--shapes", default="teaching-mlp", help=f"comma-separated, from {', '.join(SHAPES)}")
    p.add_argument("--only", type=lambda v: [n.strip() for n in v.split(",") if n.strip()], default=None,
                   help="comma-separated entries to run (joint always runs: the ratios divide by it)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement (peak_mb=nan)")
    r = p.add_argument_group("resnet18-cremad shape (CREMA-D: batch 64, 1x257x188 audio, 3 frames of 3x224x224)")
    r.add_argument("--resnet-batch", type=int, default=64)
    r.add_argument("--image-size", type=int, default=224, help="frame side S")
    r.add_argument("--frames", type=int, default=3)
    r.add_argument("--audio", type=lambda v: tuple(int(x) for x in v.lower().split("x")), default=(257, 188),
                   help="spectrogram FREQxTIME")
    r.add_argument("--resnet-steps", type=int, default=1, help="steps per variant per round")
    r.add_argument("--resnet-repeats", type=int, default=5, help="interleaved rounds")
    r.add_argument("--no-vmap", action="store_true", help="skip the vmap reference (it holds a batch of "
                   "activations per sample)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if args.clock == "cpu" and (args.device.startswith("cuda") or args.threads != 1):
        p.error("--clock cpu needs --device cpu and --threads 1 (other threads spin-wait on the CPU clock)")
    for s in args.shapes.split(","):
        if s not in SHAPES:
            p.error(f"unknown shape {s!r}; known: {', '.join(SHAPES)}")
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    summary, all_ok = [], True
    for s in args.shapes.split(","):
        rows, ok = run_shape(SHAPES[s], args)
        summary += [(f"{s}/{name}", ratio, mem) for name, ratio, mem in rows]
        all_ok = all_ok and ok
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS {rss:.0f} MB (whole process, torch included); total {time.perf_counter() - t0:.1f} s")
    print("# summary: NAME ratio_to_joint=X.XX peak_mb=Y")
    for name, ratio, mem in summary:
        print(f"{name} ratio_to_joint={ratio:.2f} peak_mb={mem:.2f}")
    if not all_ok:
        sys.exit("FisherMeter check failed (see the check lines above)")


if __name__ == "__main__":
    main()
