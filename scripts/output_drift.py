"""Which printed numbers moved since a git revision, and which sentences of the notebooks' prose cite them.

    .venv/bin/python scripts/output_drift.py [--rev HEAD] [notebooks/04_inforeg_dynamics.ipynb ...]

After `scripts/refresh_notebooks.py` recomputes the stored outputs (on another kind of CPU, or after a change
to the code), the prose must still say what the outputs show. For each notebook this prints the output lines
that changed against the notebook as committed at REV (old `-`, new `+`; stderr is left out, as nbval leaves
it out) and every markdown passage that cites a value which moved, with the value it moved to. A value that
is cited but did not move is not listed; a sentence that paraphrases a number ("about 11 points") is not
found either, so read the changed lines too. Exits 1 if a notebook cannot be read at REV or in the tree.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"[-+]?(?:\d+\.\d+|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def printed_lines(nb: dict) -> list[str]:
    """The text a reader sees under the code cells (streams other than stderr, and text/plain), per line."""
    lines = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("name") == "stderr":
                continue
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            text = "".join(text) if isinstance(text, list) else text
            lines += [f"[cell {i}] {line}" for line in text.splitlines()]
    return lines


def moved_values(old: list[str], new: list[str]) -> tuple[list[str], set[tuple[str, str]]]:
    """The changed lines as a diff, and the (old, new) pairs of numbers that differ on paired lines."""
    diff, moved = [], set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        diff += [f"- {line}" for line in old[i1:i2]] + [f"+ {line}" for line in new[j1:j2]]
        for a, b in zip(old[i1:i2], new[j1:j2]):
            moved |= {(x, y) for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)) if x != y}
    return diff, moved


def citations(markdown: str, moved: set[tuple[str, str]]) -> list[str]:
    """The passages of the prose that contain an old value, as written (a sign may be left off there)."""
    found = []
    for old, new in sorted(moved):
        bare = old.lstrip("+")
        if len(bare.lstrip("-").replace(".", "")) < 2:  # one-digit values match everywhere
            continue
        for m in re.finditer(r"(?<![\d.])" + re.escape(bare) + r"(?![\d])", markdown):
            passage = markdown[max(0, m.start() - 90): m.end() + 60].replace("\n", " ")
            found.append(f"{old} -> {new}: ...{passage}...")
    return found


def read_at(rev: str, path: Path) -> dict:
    try:
        rel = path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        raise SystemExit(f"{path}: not inside the repository {ROOT}") from None
    done = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{rel}: not readable at {rev}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the git revision to compare with (default HEAD)")
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9]*.ipynb")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for path in paths:
        try:
            new = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"{path}: cannot read the notebook: {e}")
        diff, moved = moved_values(printed_lines(read_at(args.rev, path)), printed_lines(new))
        markdown = "\n".join("".join(c["source"]) for c in new["cells"] if c["cell_type"] == "markdown")
        cited = citations(markdown, moved)
        print(f"== {path.name}: {len(diff)} changed output lines, {len(moved)} values moved, "
              f"{len(cited)} citations of a moved value in the prose")
        for line in diff:
            print(f"   {line}")
        for line in cited:
            print(f"   cited: {line}")


if __name__ == "__main__":
    main(sys.argv[1:])
