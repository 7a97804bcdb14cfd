"""`python -m inforeg ...`: train one run, list methods, show a resolved config.

    python -m inforeg train --dataset teaching --method inforeg --preset paper --seed 0 --out r.json
    python -m inforeg train --method joint --epochs 10 --set model.fusion=sum --set optim.lr=0.02
    python -m inforeg methods
    python -m inforeg config --method inforeg --preset official
    python -m inforeg prepare cremad --raw CREMA-D --out data/cremad      (also kinetics_sounds, mosi)
    python -m inforeg train --dataset cremad --profile full --method inforeg --preset official
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import PRESETS, PROFILES, ConfigError, make_config, valid_keys


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="teaching",
                   help="teaching | teaching3 | cremad | kinetics_sounds | mosi (default: teaching)")
    p.add_argument("--method", default="joint", help="joint | inforeg; joint* and inforeg* add unimodal losses")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="method variant (default: paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the profile's)")
    p.add_argument("--profile", default="ci", choices=sorted(PROFILES))
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N | auto (default: the profile's, "
                                                  "cpu for ci, auto for full)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. method.beta=0.5 or data.modalities=B (repeatable); "
                        "`python -m inforeg config --keys` lists them")


def _make(args) -> object:
    overrides = _parse_sets(args.sets)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return make_config(dataset=args.dataset, method=args.method, preset=args.preset, seed=args.seed,
                       profile=args.profile, device=args.device, overrides=overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inforeg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="train one run and write its JSON summary")
    _config_args(p_train)
    p_train.add_argument("--out", type=Path, help="write the JSON summary here (default: standard output)")
    p_train.add_argument("--cache-dir", type=Path, default=None,
                         help="results cache (default: $INFOREG_CACHE_DIR or results/cache)")
    p_train.add_argument("--no-cache", action="store_true", help="train without reading or writing the cache")
    p_train.add_argument("--quiet", action="store_true", help="no per-epoch lines on standard error")

    sub.add_parser("methods", help="list the training methods")

    p_work = sub.add_parser("work", help="train a JSON list of configs into the cache (what runs.get_or_run_all "
                                         "starts in each worker process)")
    p_work.add_argument("listing", type=Path, help="JSON file: a list of configs as written by RunConfig.to_dict()")
    p_work.add_argument("--cache-dir", type=Path, default=None)

    from .data.prepare import add_parser as add_prepare_parser

    add_prepare_parser(sub)

    p_cfg = sub.add_parser("config", help="print the resolved config as JSON")
    _config_args(p_cfg)
    p_cfg.add_argument("--keys", action="store_true", help="list every key that --set accepts")

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ConfigError as e:
        parser.exit(2, f"python -m inforeg: error: {e}\n")


def _run(args) -> int:
    if args.command == "prepare":
        from .data.prepare import run

        return run(args)
    if args.command == "work":
        from .config import from_dict
        from .runs import get_or_run

        try:
            listing = json.loads(args.listing.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{args.listing}: cannot read the list of configs ({e})") from e
        for entry in listing:
            get_or_run(from_dict(entry), cache_dir=args.cache_dir, progress=False)
        return 0
    if args.command == "methods":
        from .methods import METHODS

        for name, (_, line) in METHODS.items():
            print(f"{name:10s} {line}")
        return 0
    if args.command == "config":
        if args.keys:
            print("\n".join(valid_keys()))
            return 0
        print(json.dumps(_make(args).to_dict(), indent=1, sort_keys=True))
        return 0

    cfg = _make(args)
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from .runs import entry_dir, get_or_run
    from .train import train

    if args.no_cache:
        result = train(cfg, progress=False)
        key = None
    else:
        result = get_or_run(cfg, cache_dir=args.cache_dir, progress=False)
        key = str(entry_dir(cfg, args.cache_dir))
    summary = result.summary() | {"cache_entry": key}
    text = json.dumps(summary, indent=1, sort_keys=True, allow_nan=False)
    if args.out:
        from .runs import atomic_write

        atomic_write(args.out, text.encode())
        if not args.quiet:
            print(f"test_acc {result.test_acc:.4f}  by modality {result.test_acc_by_modality}  -> {args.out}",
                  file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
