"""`iec real-eval SPEC.toml [--out DIR] [--model-dir PATH]`: run a real-network experiment spec (kind = "real").

FP, W8A8, W4A8, cache and cache + W8A8 rows with and without IEC, compute-matched baselines, error curves,
growth classification (shares over independent x_T batches), Jacobian estimates and the quality table with FD/KID
bootstrap intervals, the real-data floor at the same n and the rows that are not distinguishable at that n (printed
at the end); layout in real_models/experiment/__init__.py. The spec is validated completely (fields, device, a memory
estimate of the batch) before any model is loaded; a bad spec is a one-line error and exit status 2. Each finished
row is checkpointed under <out>/progress/ (real_models/experiment/progress.py): an interrupted run (Ctrl-C, SIGTERM,
a killed session) rerun with the same command resumes at its first unfinished row; progress/ is removed once
results.json is written.

Sharded evaluation (real_models/experiment/sharded.py; the spec's [shards] n_samples and batch): the per-sample part
of every row split into shards of whole global batches, the same images whatever the shard count, merged exactly:

    iec real-eval SPEC --shards 4 [--executor local|dask] [--workers 2] [--scheduler ADDR]   # run all, then merge
    iec real-eval SPEC --shard 2/4                                                         # one shard (any machine)
    torchrun --nproc-per-node 8 -m iec_theory.cli real-eval SPEC --shards-from-env          # shard RANK of WORLD_SIZE
    iec real-eval SPEC --merge-shards                                                      # merge what is there

Finished shards are skipped on a rerun (resume); the merge checks that every shard of one plan, spec and model
is present.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="real-model spec (TOML with kind = \"real\"), e.g. experiments/real_quick.toml")
    parser.add_argument("--out", default=None, help="results folder (default results/<name>-<spec hash>)")
    parser.add_argument("--model-dir", default=None,
                        help="diffusers-format UNet2DModel folder (default: the spec's model.dir, else the "
                             "committed real_models default), e.g. a converted public DDPM CIFAR-10 checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress lines or table")
    sh = parser.add_argument_group("sharded evaluation")
    mode = sh.add_mutually_exclusive_group()
    mode.add_argument("--shards", type=int, default=None, metavar="N",
                      help="run all N shards (resuming), then merge")
    mode.add_argument("--shard", default=None, metavar="I/N", help="run shard I of N (0-based) only")
    mode.add_argument("--shards-from-env", action="store_true",
                      help="run shard RANK of WORLD_SIZE (torchrun; CUDA device LOCAL_RANK)")
    mode.add_argument("--merge-shards", action="store_true", help="merge the saved shards only")
    sh.add_argument("--executor", default="local", help="with --shards: local (process pool) or dask")
    sh.add_argument("--workers", type=int, default=None, help="with --shards: worker processes (default 1)")
    sh.add_argument("--scheduler", default=None, help="with --shards --executor dask: a Dask scheduler address")


def _parse_shard(text: str) -> tuple[int, int]:
    from iec_theory.errors import ConfigError, require

    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise ConfigError(f"--shard must be I/N with integers, e.g. 2/4, got {text!r}") from exc
    require(n >= 1 and 0 <= i < n, f"--shard I/N needs N >= 1 and 0 <= I < N, got {text!r}")
    return i, n


def run(args: argparse.Namespace) -> int:
    from iec_theory.errors import require
    from real_models.experiment import load_real_spec, run_real_spec

    sharded = args.shards is not None or args.shard or args.shards_from_env or args.merge_shards
    if not sharded:
        require(args.workers is None and args.scheduler is None and args.executor == "local",
                "--executor/--workers/--scheduler apply to --shards only")
    spec = load_real_spec(args.spec)          # validated before any work
    if not sharded:
        run_real_spec(spec, args.out, model_dir=args.model_dir, quiet=args.quiet)
        return 0
    return _run_sharded(args, spec)


def _run_sharded(args: argparse.Namespace, spec) -> int:
    import time

    from iec_theory.errors import require
    from iec_theory.harness.executors import check_executor_args, make_executor
    from real_models.experiment.resources import check_memory
    from real_models.experiment.sharded import merge_sharded, run_sharded
    from real_models.shards import rank_from_env

    if args.shards is None:
        require(args.workers is None and args.scheduler is None and args.executor == "local",
                "--executor/--workers/--scheduler apply to --shards only")
    else:
        require(args.shards >= 1, f"--shards must be >= 1, got {args.shards}")
        check_executor_args(args.executor, args.workers, args.scheduler)
    if args.model_dir is not None:
        check_memory(spec, args.model_dir)
    tag = f"-{Path(args.model_dir).name}" if args.model_dir is not None else ""
    out = Path(args.out) if args.out is not None else Path("results") / f"{spec.name}-{spec.hash[:8]}{tag}"
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    if args.merge_shards:
        _print_merge(merge_sharded(spec, out, args.model_dir), out, args.quiet)
        return 0
    if args.shards is not None:
        with make_executor(args.executor, args.workers, args.scheduler) as ex:
            log(f"{args.shards} shards of {spec.shards['n_samples']} samples on {ex.describe()}")
            ran = run_sharded(spec, out, args.shards, executor=ex, model_dir=args.model_dir, log=log)
        log(f"ran {len(ran)} shard(s) ({args.shards - len(ran)} already complete); merging")
        _print_merge(merge_sharded(spec, out, args.model_dir), out, args.quiet)
        return 0
    if args.shards_from_env:
        rank = rank_from_env()
        i, n = rank.rank, rank.world_size
        if spec.device.startswith("cuda"):
            import torch

            require(torch.cuda.is_available(), "--shards-from-env with model.device = cuda: no CUDA device")
            torch.cuda.set_device(rank.device())
    else:
        i, n = _parse_shard(args.shard)
    ran = run_sharded(spec, out, n, shards=[i], model_dir=args.model_dir, log=log)
    md = f" --model-dir {args.model_dir}" if args.model_dir is not None else ""
    log(f"shard {i} of {n}: {'done' if ran else 'already complete'}; merge with: iec real-eval {args.spec}{md} "
        f"--merge-shards --out {out}")
    return 0


def _print_merge(result: dict, out: Path, quiet: bool) -> None:
    if quiet:
        return
    print((out / "sharded_table.md").read_text())
    nd = result["comparisons"].get("FD_cifarnet", {}).get("not_distinguishable", [])
    if nd:
        print("not distinguishable at n = {} (FD_cifarnet intervals overlap; not ranked): {}".format(
            result["comparisons"]["n"], "; ".join(f"{a} ~ {b}" for a, b in nd)))
    print(f"wrote {out / 'sharded_results.json'}")
