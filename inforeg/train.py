"""The one training loop: `train(config) -> RunResult`, with a full per-epoch history.

Per epoch it records the loss, accuracy overall and per modality (split head), Tr F per encoder and for the
whole model (exact per-sample Eq. 7 and the official proxy), the mini-batch gradient norm per encoder, the
prime-learning-window state and statistic per modality, the method's regulation (mean alpha and fraction of
batches regulated per modality) and, when asked, linear-probe accuracies on frozen features.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from . import data as datasets
from .config import RunConfig, from_dict
from .fisher import EpochMean, FisherMeter, OfficialTrace
from .methods import EpochState, build_method
from .models import MultimodalModel, build_model
from .window import window_state

# History fields that hold wall-clock times: the only ones allowed to differ between two runs of one config.
TIMING_KEYS = ("seconds", "train_seconds", "train_cpu_seconds")

log = logging.getLogger("inforeg")


@dataclass
class RunResult:
    config: dict
    history: list[dict]
    test_acc: float  # after the last epoch
    test_f1: float  # macro-F1 of the fused prediction, after the last epoch
    test_acc_by_modality: dict[str, float]  # split head / unimodal logits, after the last epoch
    probe_acc_by_modality: dict[str, float]  # linear probe on frozen features, after the last epoch
    best_test_acc: float  # the paper's protocol: best test accuracy over epochs
    selected: dict | None = None  # model selection on the validation split, when there is one
    env: dict = field(default_factory=dict)
    model_state: dict | None = field(default=None, repr=False)  # final weights (not in the JSON; runs.py saves them)

    @property
    def cfg(self) -> RunConfig:
        return from_dict(self.config)

    def series(self, key: str, modality: str | None = None) -> list:
        """One history field over epochs: `series("test_acc")`, `series("trace", "A")`."""
        return [h[key] if modality is None else h[key][modality] for h in self.history]

    def summary(self) -> dict:
        return {
            "test_acc": self.test_acc,
            "test_f1": self.test_f1,
            "test_acc_by_modality": self.test_acc_by_modality,
            "probe_acc_by_modality": self.probe_acc_by_modality,
            "best_test_acc": self.best_test_acc,
            "selected": self.selected,
            "config": self.config,
            "env": self.env,
            "history": self.history,
        }

    def to_json(self) -> str:
        return json.dumps(self.summary(), indent=1, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        d = json.loads(text)
        return cls(config=d["config"], history=d["history"], test_acc=d["test_acc"], test_f1=d["test_f1"],
                   test_acc_by_modality=d["test_acc_by_modality"],
                   probe_acc_by_modality=d["probe_acc_by_modality"], best_test_acc=d["best_test_acc"],
                   selected=d.get("selected"), env=d.get("env", {}))


class Checkpointer(Protocol):
    def load(self) -> dict | None: ...
    def save(self, state: dict) -> None: ...


@torch.no_grad()
def evaluate(model: MultimodalModel, dataset: datasets.TensorDataset, device: str,
             batch_size: int = 1024, features: bool = False) -> dict:
    """Accuracy of the fused and the unimodal logits; optionally the encoders' features (on the CPU)."""
    was_training = model.training
    model.eval()
    correct, correct_m, feats = 0, {m: 0 for m in model.modalities}, {m: [] for m in model.modalities}
    preds = []
    for batch in dataset.batches(batch_size):
        batch = batch.to(device)
        out = model(batch.inputs)
        preds.append(out.logits.argmax(1).cpu())
        correct += (preds[-1] == batch.labels.cpu()).sum()
        for m in model.modalities:
            correct_m[m] += (out.unimodal[m].argmax(1) == batch.labels).sum()
            if features:
                feats[m].append(out.features[m].float().cpu())
    model.train(was_training)
    n = len(dataset)
    res = {"acc": float(correct) / n, "acc_by_modality": {m: float(c) / n for m, c in correct_m.items()},
           "f1": macro_f1(torch.cat(preds), dataset.labels)}
    if features:
        res["features"] = {m: torch.cat(f).numpy() for m, f in feats.items()}
    return res


def macro_f1(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes of 2 TP / (2 TP + FP + FN), over the classes that occur in labels or predictions
    (scikit-learn's f1_score(average="macro"))."""
    pred, labels = pred.cpu().long(), labels.cpu().long()
    k = int(max(pred.max(), labels.max())) + 1
    tp = torch.bincount(labels[pred == labels], minlength=k).double()
    n_pred, n_true = torch.bincount(pred, minlength=k).double(), torch.bincount(labels, minlength=k).double()
    present = (n_pred + n_true) > 0
    return float((2 * tp[present] / (n_pred[present] + n_true[present])).mean())


def linear_probe(model: MultimodalModel, splits: datasets.Splits, device: str, threads: int = 1) -> dict[str, float]:
    """Test accuracy of a logistic regression trained on each encoder's frozen train features.

    It measures what a modality's features hold, whatever the fused head makes of them. BLAS runs on
    `threads` threads, like torch, so that the result and its speed do not depend on the machine."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    train = evaluate(model, splits.train, device, features=True)["features"]
    test = evaluate(model, splits.test, device, features=True)["features"]
    y_train, y_test = splits.train.labels.numpy(), splits.test.labels.numpy()
    acc = {}
    with threadpool_limits(limits=threads):
        for m in model.modalities:
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            clf.fit(train[m], y_train)
            acc[m] = float((clf.predict(test[m]) == y_test).mean())
    return acc


def _traces(history: list[dict], key: str, modalities) -> dict[str, list[float]]:
    return {m: [h[key][m] for h in history] for m in modalities}


def _env(cfg: RunConfig) -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "device": cfg.device,
            "threads": cfg.threads, "cuda": torch.version.cuda}


def progress_bar(progress: bool | None, **kwargs) -> tqdm:
    """A tqdm.auto bar (a widget in notebooks) that leaves nothing behind; progress=None shows it unless
    the environment sets TQDM_DISABLE (tqdm's notebook bar does not read that variable itself)."""
    if progress is None:
        progress = os.environ.get("TQDM_DISABLE", "").lower() in ("", "0", "false")
    return tqdm(disable=not progress, leave=False, **kwargs)


def train(cfg: RunConfig, progress: bool | None = None, checkpoint: Checkpointer | None = None) -> RunResult:
    """Train one run. With a `checkpoint`, resume from its last epoch and save after every epoch.

    progress: True / False to show or hide the tqdm bar; None follows tqdm's environment (TQDM_DISABLE).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, progress, checkpoint)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: RunConfig, progress: bool | None, checkpoint: Checkpointer | None) -> RunResult:
    device = cfg.device
    splits = datasets.load(cfg.data, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, splits.input_dims(), splits.num_classes).to(device)
    mods = model.modalities
    method = build_method(cfg, model)
    oc = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, oc.step_size, oc.gamma) if oc.step_size else None
    shuffle = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []

    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if sched is not None:
            sched.load_state_dict(saved["scheduler"])
        method.load_state_dict(saved["method"])
        shuffle.set_state(saved["shuffle"])
        torch.set_rng_state(saved["torch_rng"])
        history = saved["history"]
        log.info("resuming %s at epoch %d", cfg.label, len(history))

    groups = {m: model.encoders[m] for m in mods} | {"all": model}
    meter = FisherMeter(groups) if cfg.fisher else None
    official = OfficialTrace(groups)
    trace_sum = EpochMean(groups)
    grad_norm = EpochMean(mods)
    enc_params = {m: list(model.encoders[m].parameters()) for m in mods}
    wc = cfg.window
    window_key = "trace" if cfg.method.trace == "exact" else "trace_official"
    bar = progress_bar(progress, total=cfg.epochs, initial=len(history), desc=cfg.label, unit="epoch")
    try:
        for epoch in range(len(history), cfg.epochs):
            tic, cpu_tic = time.perf_counter(), time.thread_time()
            window = window_state(wc.rule, _traces(history, window_key, mods), mods, wc.K, wc.min_epoch,
                                  wc.threshold, wc.span, wc.watch)
            state = EpochState(epoch, history, window, splits, device)
            kept: dict[str, list] = {m: [] for m in mods}  # first batches' encoder gradients (grad_cosine_batches)
            method.on_epoch_start(state)
            model.train()
            official.reset(), trace_sum.reset(), grad_norm.reset()
            loss_sum, correct, seen, steps = torch.zeros((), device=device), torch.zeros((), device=device), 0, 0
            for batch in splits.train.batches(oc.batch_size, shuffle):
                batch = batch.to(device)
                if meter is not None:
                    meter.start()
                out = model(batch.inputs)
                loss = method.loss(out, batch.labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if meter is not None:
                    trace_sum.add(meter.collect(len(batch)), len(batch))
                grad_norm.add({m: torch.stack(torch._foreach_norm([p.grad for p in ps if p.grad is not None]))
                               .norm() for m, ps in enc_params.items()}, 1)
                if len(kept[mods[0]]) < cfg.grad_cosine_batches:
                    for m, ps in enc_params.items():
                        kept[m].append(torch.cat([p.grad.flatten() for p in ps if p.grad is not None]))
                method.after_backward(out, batch.labels, state)
                official.step()
                opt.step()
                loss_sum += loss.detach() * len(batch)
                correct += (out.logits.detach().argmax(1) == batch.labels).sum()
                seen += len(batch)
                steps += 1
            lr = opt.param_groups[0]["lr"]
            if sched is not None:
                sched.step()
            record = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": float(loss_sum) / seen,
                "train_acc": float(correct) / seen,
                "trace": trace_sum.value() if meter is not None else None,
                "trace_official": official.value(),
                "grad_norm": grad_norm.value(),
                "window": {m: bool(window[m][0]) for m in mods},
                "window_stat": {m: _finite(window[m][1]) for m in mods},
                "alpha": {m: None for m in mods},
                "reg_frac": {m: 0.0 for m in mods},
                "regulated_frac": 0.0,
            }
            record.update(method.on_epoch_end(state))
            record["train_seconds"] = time.perf_counter() - tic  # the window, the method's work and the steps
            record["train_cpu_seconds"] = time.thread_time() - cpu_tic  # this thread's CPU time (one-thread runs)
            record["train_steps"] = steps
            if cfg.grad_cosine_batches:
                record["grad_cosine"] = {m: cosine_matrix(g) for m, g in kept.items()}
            test = evaluate(model, splits.test, device)
            record["test_acc"], record["test_acc_by_modality"] = test["acc"], test["acc_by_modality"]
            record["test_f1"] = test["f1"]
            if splits.val is not None:
                val = evaluate(model, splits.val, device)
                record["val_acc"], record["val_f1"] = val["acc"], val["f1"]
            last = epoch == cfg.epochs - 1
            if last or (cfg.probe_every and (epoch + 1) % cfg.probe_every == 0):
                record["probe_acc_by_modality"] = linear_probe(model, splits, device, cfg.threads)
            record["seconds"] = time.perf_counter() - tic
            history.append(record)
            log.info("epoch %d  loss %.4f  test acc %.4f  %s", epoch, record["train_loss"], record["test_acc"],
                     " ".join(f"{m} {a:.3f}" for m, a in record["test_acc_by_modality"].items()))
            if checkpoint is not None and not last:
                checkpoint.save({
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "method": method.state_dict(), "shuffle": shuffle.get_state(),
                    "torch_rng": torch.get_rng_state(), "history": history,
                })
            bar.update(1)
            bar.set_postfix(acc=f"{record['test_acc']:.3f}")
    finally:
        bar.close()
        if meter is not None:
            meter.close()
    result = _result(cfg, history)
    result.model_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return result


def cosine_matrix(grads: list[torch.Tensor]) -> list[list[float]]:
    """Pairwise cosine similarities of flattened gradients (rounded to 6 decimals for the JSON)."""
    g = torch.stack(grads).double()
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return [[round(v, 6) for v in row] for row in (g @ g.T).tolist()]


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _result(cfg: RunConfig, history: list[dict]) -> RunResult:
    final = history[-1]
    accs = np.array([h["test_acc"] for h in history])
    selected = None
    if "val_acc" in final:
        best = int(np.argmax([h["val_acc"] for h in history]))
        selected = {"epoch": best, "val_acc": history[best]["val_acc"], "test_acc": history[best]["test_acc"],
                    "test_f1": history[best]["test_f1"],
                    "test_acc_by_modality": history[best]["test_acc_by_modality"]}
    return RunResult(config=cfg.to_json_dict(), history=history, test_acc=final["test_acc"], test_f1=final["test_f1"],
                     test_acc_by_modality=final["test_acc_by_modality"],
                     probe_acc_by_modality=final["probe_acc_by_modality"], best_test_acc=float(accs.max()),
                     selected=selected, env=_env(cfg))
