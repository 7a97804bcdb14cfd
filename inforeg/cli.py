"""`python -m inforeg ...`: train one run, list methods, show a resolved config.

    python -m inforeg train --dataset teaching --method inforeg --preset paper --seed 0 --out r.json
    python -m inforeg train --method joint --epochs 10 --set model.fusion=sum --set optim.lr=0.02
    python -m inforeg methods
    python -m inforeg config --method inforeg --preset official
    python -m inforeg prepare cremad --raw CREMA-D --out data/cremad      (also kinetics_sounds, mosi)
    python -m inforeg train --dataset cremad --profile full --method inforeg --preset official
    python -m inforeg launch --method inforeg --seeds 0-4 --backend local        (or a grid.json of configs)
    python -m inforeg launch grid.json --backend slurm --partition gpu --array-parallelism 8 --time-min 240
    python -m inforeg collect --method inforeg --seeds 0-4 --json results.json
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

    p_launch = sub.add_parser("launch", help="start the runs of a grid that the cache lacks, on a backend "
                                             "(serial, local, slurm, ray)")
    _grid_args(p_launch)
    _backend_args(p_launch)
    p_collect = sub.add_parser("collect", help="print which runs of a grid are done, running, queued, failed, "
                                               "lost or missing, with their results")
    _grid_args(p_collect)
    p_collect.add_argument("--json", type=Path, default=None, metavar="OUT",
                           help="also write the report and the finished results' summaries to this JSON file")
    p_collect.add_argument("--require-complete", action="store_true",
                           help="exit with status 1 unless every run has finished")

    from .data.prepare import add_parser as add_prepare_parser

    add_prepare_parser(sub)

    p_check = sub.add_parser("check", help="is this machine ready for a profile? (full: a CUDA GPU and the "
                                           "prepared caches of the datasets the notebooks use)")
    p_check.add_argument("profile", nargs="?", default="full", choices=sorted(PROFILES))
    p_check.add_argument("--datasets", default="cremad,mosi",
                         help="prepared caches that must be there (default: cremad,mosi, what the notebooks' "
                              "full path reads); a cache found under another name is reported too")
    p_check.add_argument("--no-gpu", action="store_true", help="do not require a CUDA GPU")
    p_check.add_argument("--allow-synthetic", action="store_true",
                         help="accept the random caches of `python -m inforeg synthetic` (dry runs)")

    p_syn = sub.add_parser("synthetic", help="write small random caches in the prepared formats of the real "
                                             "datasets (dry runs of the full profile without the data)")
    p_syn.add_argument("--out", type=Path, required=True, help="folder to write DATASET/ caches into (use it as "
                                                               "$INFOREG_DATA_DIR)")
    p_syn.add_argument("--datasets", default="cremad,mosi", help="comma-separated, from cremad, "
                                                                  "kinetics_sounds, mosi (default: cremad,mosi)")
    p_syn.add_argument("--train", type=int, default=48, help="training clips or samples (default 48)")
    p_syn.add_argument("--test", type=int, default=24, help="test clips or samples (default 24; CMU-MOSI also "
                                                            "gets as many validation samples)")
    p_syn.add_argument("--spectrogram", default=None, metavar="FxT",
                       help="spectrogram shape, e.g. 33x24 (default: the real recipe's; smaller is faster on a CPU)")
    p_syn.add_argument("--size", type=int, default=32, help="stored frame side (default 32)")

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
    if args.command == "check":
        return _check(args)
    if args.command == "synthetic":
        return _synthetic(args)
    if args.command == "launch":
        return _launch(args)
    if args.command == "collect":
        return _collect(args)
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


# --- check / synthetic ------------------------------------------------------------------------------------

def _check(args) -> int:
    """Print what the profile needs and what is here; 0 when everything is, 2 otherwise."""
    from .config import DataConfig
    from .data import DataError, REAL, check_prepared, data_root, is_synthetic
    from .data.cache import read_manifest

    if args.profile == "ci":
        print("the ci profile needs nothing but this package: teaching data, generated on the CPU")
        return 0
    problems = []
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        print(f"GPU: {torch.cuda.device_count()} CUDA device(s): {names}")
    elif args.no_gpu:
        print("GPU: none (not required: --no-gpu)")
    else:
        problems.append("no CUDA GPU is visible: the full profile trains ResNet-18 pairs for 50 epochs a run "
                        "(./run_all.sh full --dry-run tries every notebook's full path on random data, on any "
                        "machine)")
    wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in wanted if d not in REAL]
    if unknown:
        raise ConfigError(f"--datasets: unknown {unknown}; known: {', '.join(REAL)}")
    for name in REAL:
        root = data_root(DataConfig(name=name))
        try:
            print(f"{name}: {check_prepared(name, root)}")
            if name in wanted and not args.allow_synthetic and is_synthetic(read_manifest(root, name)):
                problems.append(f"{name}: {root} holds random content (python -m inforeg synthetic), not the "
                                "dataset: prepare the real data there, or pass --allow-synthetic for a dry run")
        except DataError as e:
            if name in wanted:
                problems.append(f"{name}: {e}")
            else:
                print(f"{name}: not prepared (optional here): {e.path}")
    for p in problems:
        print(f"missing: {p}", file=sys.stderr)
    return 2 if problems else 0


def _synthetic(args) -> int:
    from .data import synthetic

    shape = None
    if args.spectrogram:
        try:
            shape = tuple(int(v) for v in args.spectrogram.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--spectrogram expects FxT, e.g. 33x24, got {args.spectrogram!r}") from None
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name == "mosi":
            synthetic.write_mosi(args.out / name, n_train=args.train, n_val=args.test, n_test=args.test)
        elif name in synthetic.AV_CLASSES:
            synthetic.write_audio_visual(name, args.out / name, n_train=args.train, n_test=args.test,
                                         spec_shape=shape, frame_size=args.size)
        else:
            raise ConfigError(f"--datasets: unknown {name!r}; known: cremad, kinetics_sounds, mosi")
    return 0


# --- launch / collect -------------------------------------------------------------------------------------

def _grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("grid", nargs="?", type=Path, default=None,
                   help="JSON file: a list of configs as RunConfig.to_dict() writes them (the `work` listing), "
                        "or an object {name: [configs]}; without it, the grid is the config options below "
                        "over --seeds")
    _config_args(p)
    p.add_argument("--seeds", default=None, help="seeds of the grid: 0-4, 0,2,5 or 0-2,7 (default: --seed)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="results cache (default: $INFOREG_CACHE_DIR or results/cache); shared by the nodes "
                        "for slurm")


def _backend_args(p: argparse.ArgumentParser) -> None:
    from .launch import BACKENDS

    p.add_argument("--backend", default="serial", choices=BACKENDS,
                   help="serial: in this process; local: one worker per GPU (else per CPU core); slurm: a "
                        "submitit job array; ray: one Ray task per run (default: serial)")
    p.add_argument("--wait", action="store_true",
                   help="wait for the runs and print the report (serial and ray always wait: their runs live "
                        "in this process)")
    g = p.add_argument_group("backend options")
    g.add_argument("--workers", type=int, help="local: worker processes (default: one per visible GPU, "
                                               "else $INFOREG_WORKERS or one per CPU core)")
    g.add_argument("--gpus", help="local: GPUs to pin the workers to, e.g. 0,1 (default: the visible ones)")
    g.add_argument("--partition", help="slurm: the partition (slurm_partition)")
    g.add_argument("--array-parallelism", type=int,
                   help="slurm: at most this many jobs of the array run at once (slurm_array_parallelism)")
    g.add_argument("--time-min", type=int, help="slurm: time limit of each job in minutes (timeout_min; "
                                                "default 240)")
    g.add_argument("--mem-gb", type=float, help="slurm: memory per job in GB (mem_gb)")
    g.add_argument("--gpus-per-node", type=int, help="slurm: GPUs per job (gpus_per_node)")
    g.add_argument("--cpus-per-task", type=int, help="slurm: CPU cores per job (cpus_per_task)")
    g.add_argument("--address", help="ray: the cluster to join, e.g. auto or ray://host:10001 (default: a "
                                     "local Ray)")
    g.add_argument("--num-gpus", type=float, help="ray: GPUs per task (default: 1 if the cluster has GPUs)")
    g.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="any other backend option, e.g. slurm_qos=high or max_retries=1 (VALUE read as JSON "
                        "when it parses; repeatable)")


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ConfigError(f"--seeds expects numbers and ranges like 0-4 or 0,2,5, got {text!r}") from None
    if not seeds:
        raise ConfigError(f"--seeds {text!r} names no seed")
    return list(dict.fromkeys(seeds))


def _grid(args):
    """The grid of a launch or collect command: the JSON file, or the config options over --seeds."""
    from .config import from_dict

    if args.grid is None:
        seeds = _parse_seeds(args.seeds) if args.seeds is not None else [args.seed]
        return [_make(argparse.Namespace(**{**vars(args), "seed": s})) for s in seeds]
    if args.seeds is not None or args.sets:
        raise ConfigError(f"{args.grid}: a grid file holds whole configs; --seeds and --set do not apply to it")
    try:
        listing = json.loads(args.grid.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{args.grid}: cannot read the grid ({e})") from e

    def configs(items, where):
        if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
            raise ConfigError(f"{args.grid}: {where} must be a list of configs (objects as RunConfig.to_dict() "
                              "writes them)")
        try:
            return [from_dict(d) for d in items]
        except ConfigError as e:
            raise ConfigError(f"{args.grid}: {where}: {e}") from e

    if isinstance(listing, dict):
        return {str(name): configs(items, f"group {name!r}") for name, items in listing.items()}
    return configs(listing, "the file")


def _backend_options(args) -> dict:
    named = {"workers": args.workers, "slurm_partition": args.partition,
             "slurm_array_parallelism": args.array_parallelism, "timeout_min": args.time_min,
             "mem_gb": args.mem_gb, "gpus_per_node": args.gpus_per_node, "cpus_per_task": args.cpus_per_task,
             "address": args.address, "num_gpus": args.num_gpus,
             "gpus": args.gpus and [g.strip() for g in args.gpus.split(",") if g.strip()]}
    options = {k: v for k, v in named.items() if v is not None}
    for key, value in _parse_sets(args.options).items():
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _launch(args) -> int:
    from .launch import launch

    grid = _grid(args)
    try:
        handle = launch(grid, backend=args.backend, cache_dir=args.cache_dir, **_backend_options(args))
    except (TypeError, ValueError, ImportError) as e:  # an option the backend does not take, a missing extra
        raise ConfigError(str(e)) from e
    print(handle)
    if args.wait or args.backend in ("serial", "ray"):
        report = handle.wait(progress=False)
        print(report)
        return 0 if report.complete else 1
    print(handle.status().summary())
    print("see where they stand: python -m inforeg collect with the same grid"
          + (f" --cache-dir {args.cache_dir}" if args.cache_dir else ""))
    return 0


def _collect(args) -> int:
    from .launch import collect
    from .runs import atomic_write, load_result

    got = collect(_grid(args), cache_dir=args.cache_dir)
    print(got.report)
    if args.json:
        runs = []
        for row in got.report:
            result = load_result(row.config, args.cache_dir) if row.state == "done" else None
            runs.append(row.to_dict() | {"config": row.config.to_json_dict(),
                                         "result": result and {k: v for k, v in result.summary().items()
                                                               if k not in ("config", "history")}})
        text = json.dumps({"summary": got.report.counts(), "complete": got.complete, "runs": runs},
                          indent=1, sort_keys=True, allow_nan=False)
        atomic_write(args.json, text.encode())
        print(f"written to {args.json}", file=sys.stderr)
    return 1 if args.require_complete and not got.complete else 0


if __name__ == "__main__":
    sys.exit(main())
