"""The benchmark scripts at toy sizes (no timing is asserted: the machines are noisy; the numbers themselves are in
benchmarks/README.md). step_cost.py runs every entry of both shape blocks, its meter check passes, and it ends
with one `SHAPE/NAME ratio_to_joint=X.XX peak_mb=Y` line per entry; loader.py writes CREMA-D-shaped raw data,
prepares it, and reads an epoch with both loaders."""
from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(?P<name>[\w-]+/\w+) ratio_to_joint=(?P<ratio>\S+) peak_mb=(?P<mb>\S+)$")
BASELINES = ("ogm", "ogm_ge", "greedy", "pmr", "agm", "gblending", "mmpareto", "mibalance")
STEPS = ["joint", "joint_star", "joint_fisher", "inforeg_paper", "inforeg_official", "inforeg_official_style",
         *BASELINES, "fisher_loop", "fisher_vmap"]
LOOPS = ["loop_joint", "loop_joint_fisher", "loop_inforeg_paper", "loop_inforeg_official",
         "loop_inforeg_official_nofisher", *[f"loop_{b}" for b in BASELINES]]


def _summary(out: str) -> dict[str, tuple[float, float]]:
    rows = {}
    for line in out.split("# summary: NAME ratio_to_joint=X.XX peak_mb=Y\n")[1].strip().splitlines():
        m = LINE.match(line)
        assert m, f"not a summary line: {line!r}"
        rows[m["name"]] = (float(m["ratio"]), float(m["mb"]))
    return rows


def _run(*args: str) -> str:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_cost.py"), "--repeats", "2", "--steps", "2",
           "--warmup", "1", *args]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def test_step_cost_prints_a_line_per_entry():
    """The teaching block with every entry; each is timed and has its memory measured (train() runs: nan)."""
    out = _run("--loop-steps", "2", "--batch", "16")
    assert out.count("[ok, tol 1e-05]") == 2  # the meter equals the per-sample loop for both losses
    rows = _summary(out)
    assert list(rows) == [f"teaching-mlp/{n}" for n in STEPS + LOOPS]
    assert rows["teaching-mlp/joint"][0] == 1.0
    for n in STEPS:
        ratio, mb = rows[f"teaching-mlp/{n}"]
        assert ratio > 0 and math.isfinite(ratio) and mb > 0, (n, ratio, mb)
    for n in LOOPS:
        ratio, mb = rows[f"teaching-mlp/{n}"]
        assert ratio > 0 and math.isnan(mb)


def test_step_cost_resnet_block_and_only():
    """The ResNet-18 block at toy sizes, a few entries through --only and no memory measurement (all of it takes
    about 40 s): the meter check with BatchNorm shares, and the official-style step, a baseline and the
    per-sample loop on conv layers."""
    only = ["joint_fisher", "inforeg_paper", "inforeg_official_style", "mmpareto", "fisher_loop"]
    out = _run("--shapes", "resnet18-cremad", "--resnet-batch", "2", "--image-size", "32", "--frames", "2",
               "--audio", "33x24", "--resnet-repeats", "1", "--no-vmap", "--no-memory", "--only", ",".join(only))
    assert out.count("[ok, tol 0.0001]") == 2
    rows = _summary(out)
    assert list(rows) == [f"resnet18-cremad/{n}" for n in ["joint", *only]]
    assert all(ratio > 0 and math.isfinite(ratio) and math.isnan(mb) for ratio, mb in rows.values())


def test_loader_benchmark_prepares_and_reads_both_ways(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "loader.py"), "--clips", "18", "--root", str(tmp_path),
           "--batch", "8", "--workers", "1", "--no-step"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "prepare: 20 clips (train and test)" in run.stdout  # 18 train + 2 test
    summary = run.stdout.split("# summary: NAME samples_per_s=X busy=Y\n")[1].strip().splitlines()
    got = dict(re.fullmatch(r"(\w+) samples_per_s=(\S+) busy=(\S+)", line).group(1, 2) for line in summary)
    assert list(got) == ["cache_loader", "on_the_fly_loader"] and all(float(v) > 0 for v in got.values())
    assert "over 18 samples" in run.stdout  # one whole epoch: 18 clips in batches of 8


def test_loader_benchmark_step_trains_the_full_profile_model():
    spec = importlib.util.spec_from_file_location("loader_bench", ROOT / "benchmarks" / "loader.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    step, model = bench.make_step("cpu")
    g = torch.Generator().manual_seed(0)
    inputs = {"audio": torch.randn(2, 1, 257, 188, generator=g), "visual": torch.randn(2, 3, 3, 64, 64, generator=g)}
    before = model.encoders["audio"].net.conv1.weight.detach().clone()
    step(inputs, torch.tensor([0, 5]))
    assert not torch.equal(before, model.encoders["audio"].net.conv1.weight)
