"""benchmarks/step_cost.py at toy sizes: it runs every entry of both shape blocks, its meter check passes, and it
ends with one `SHAPE/NAME ratio_to_joint=X.XX peak_mb=Y` line per entry (no timing is asserted: the machines
are noisy; the numbers themselves are in benchmarks/README.md)."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(?P<name>[\w-]+/\w+) ratio_to_joint=(?P<ratio>\S+) peak_mb=(?P<mb>\S+)$")
BASELINES = ("ogm", "ogm_ge", "greedy", "pmr", "agm", "gblending", "mmpareto", "mibalance")


def test_step_cost_prints_a_line_per_entry_for_both_shapes():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_cost.py"), "--shapes", "teaching-mlp,resnet18-cremad",
           "--repeats", "2", "--steps", "2", "--warmup", "1", "--loop-steps", "2", "--batch", "16",
           "--resnet-batch", "2", "--image-size", "32", "--frames", "2", "--audio", "33x24", "--resnet-repeats", "1",
           "--no-vmap"]  # the ResNet block without its vmap reference: about 40 s in all
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert out.count("[ok, tol 1e-05]") == 2 and out.count("[ok, tol 0.0001]") == 2  # meter = loop, both shapes
    summary = out.split("# summary: NAME ratio_to_joint=X.XX peak_mb=Y\n")[1].strip().splitlines()
    rows = {}
    for line in summary:
        m = LINE.match(line)
        assert m, f"not a summary line: {line!r}"
        rows[m["name"]] = (float(m["ratio"]), float(m["mb"]))
    steps = ["joint", "joint_star", "joint_fisher", "inforeg_paper", "inforeg_official", "inforeg_official_style",
             *BASELINES, "fisher_loop", "fisher_vmap"]
    loops = ["loop_joint", "loop_joint_fisher", "loop_inforeg_paper", "loop_inforeg_official",
             "loop_inforeg_official_nofisher", *[f"loop_{b}" for b in BASELINES]]
    resnet = [n for n in steps if n != "fisher_vmap"]
    assert list(rows) == [f"teaching-mlp/{n}" for n in steps + loops] + [f"resnet18-cremad/{n}" for n in resnet]
    for shape, names in (("teaching-mlp", steps), ("resnet18-cremad", resnet)):
        assert rows[f"{shape}/joint"][0] == 1.0
        for n in names:  # every step entry ran, was timed and had its memory measured
            ratio, mb = rows[f"{shape}/{n}"]
            assert ratio > 0 and math.isfinite(ratio) and mb > 0, (shape, n, ratio, mb)
    for n in loops:  # the train() runs: timed, memory not measured
        ratio, mb = rows[f"teaching-mlp/{n}"]
        assert ratio > 0 and math.isnan(mb)
