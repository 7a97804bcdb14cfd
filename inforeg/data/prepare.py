"""`python -m inforeg prepare DATASET ...`: raw real data -> the cache that training reads (see README.md).

    python -m inforeg prepare cremad --raw CREMA-D --out data/cremad [--fps 3] [--skip-bad]
    python -m inforeg prepare kinetics_sounds --raw KS --out data/kinetics_sounds [--skip-bad]
    python -m inforeg prepare mosi --raw mosi_data_noalign.pkl --out data/mosi
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .base import DataError


def _common(p: argparse.ArgumentParser, raw_help: str) -> None:
    p.add_argument("--raw", type=Path, required=True, help=raw_help)
    p.add_argument("--out", type=Path, required=True, help="folder of the prepared cache (set data.root to it; "
                                                           "default place: data/<dataset>)")


def _av(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=224, help="frames are stored resized to SIZE x SIZE (default 224)")
    p.add_argument("--workers", type=int, default=None, help="processes that decode clips (default: every CPU; "
                                                             "0 or 1: this process)")
    p.add_argument("--skip-bad", action="store_true", help="leave out unusable clips, list each with its reason in "
                                                           "OUT/skipped.json (default: stop at the first)")


def add_parser(sub) -> None:
    """The `prepare` command and its one sub-command per dataset."""
    p = sub.add_parser("prepare", help="turn a raw real dataset into the cache that training reads",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    datasets = p.add_subparsers(dest="dataset", required=True)
    c = datasets.add_parser("cremad", help="CREMA-D: AudioWAV/, VideoFlash/ or Image-NN-FPS/, train.csv, test.csv")
    _common(c, "the CREMA-D folder (AudioWAV/, VideoFlash/*.flv or Image-NN-FPS/<clip>/*.jpg)")
    c.add_argument("--fps", type=int, default=3, help="frames kept per second of video, and the NN of an existing "
                                                      "Image-NN-FPS/ folder (default 3, as InfoReg)")
    c.add_argument("--train-csv", type=Path, default=None, help="`clip,EMO` rows (default: RAW/train.csv)")
    c.add_argument("--test-csv", type=Path, default=None, help="`clip,EMO` rows (default: RAW/test.csv)")
    _av(c)
    k = datasets.add_parser("kinetics_sounds", help="Kinetics-Sounds: audio/, frames/ or video/, list files")
    _common(k, "the folder with audio/<name>.wav and frames/<name>/*.jpg (1 fps) or video/<name>.mp4")
    k.add_argument("--train-list", type=Path, default=None, help="`name,10,label` or `name label` lines "
                                                                  "(default: RAW/train.txt)")
    k.add_argument("--test-list", type=Path, default=None, help="as --train-list (default: RAW/test.txt)")
    k.add_argument("--classes", type=int, default=31, help="number of classes (default 31)")
    _av(k)
    m = datasets.add_parser("mosi", help="CMU-MOSI: a MulT-style pickle")
    _common(m, "mosi_data.pkl (aligned) or mosi_data_noalign.pkl (unaligned); read with an unpickler that "
               "accepts only numpy arrays")


def run(args) -> int:
    """Prepare the dataset `args` names; a DataError becomes `error: FILE: problem` and exit status 2."""
    import sys

    try:
        if args.dataset == "cremad":
            from .cremad import prepare

            prepare(args.raw, args.out, fps=args.fps, size=args.size, train_csv=args.train_csv,
                    test_csv=args.test_csv, skip_bad=args.skip_bad, workers=args.workers)
        elif args.dataset == "kinetics_sounds":
            from .kinetics_sounds import prepare

            prepare(args.raw, args.out, size=args.size, train_list=args.train_list, test_list=args.test_list,
                    num_classes=args.classes, skip_bad=args.skip_bad, workers=args.workers)
        else:
            from .mosi import prepare

            prepare(args.raw, args.out)
    except DataError as e:
        hint = "" if getattr(args, "skip_bad", True) else " (--skip-bad leaves such clips out and lists them)"
        print(f"python -m inforeg prepare: error: {e}{hint}", file=sys.stderr)
        return 2
    return 0
