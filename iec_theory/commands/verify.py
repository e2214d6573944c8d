"""`iec verify`: check every theorem (T1, T1m, T2, T3, T4, T5, T6) on the default toy suite.

Prints a table (theorem, instances checked, holds, violated, worst margin, median tightness), writes the
same as JSON (--json PATH, with provenance and per-instance results) and exits 1 if a proven theorem is
violated on any instance.  `--per-theorem N` extends the suite until every theorem has N instances on which
its hypotheses hold and its check is informative (each theorem judged on its first N such instances; no
per-instance records) and exits 2 if the --instances cap is reached first; `--theorems T4,T6` checks a subset.
Margins are relative: (bound - measured)/bound for upper bounds,
(measured - bound)/measured for lower bounds, (allowance - deviation)/allowance for the identities T2/T3
(negative = violated beyond the rounding allowance).  Tightness = measured/bound per step (T6: bound/measured;
T2/T3: ||measured||/||predicted||, 1 when exact).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from ..provenance import provenance


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..theorems.suite import DEFAULT_INSTANCES

    parser.add_argument("--json", type=Path, default=None, help="write the table and per-instance results here")
    parser.add_argument("--instances", type=int, default=None,
                        help=f"number of suite instances (default {DEFAULT_INSTANCES}; each theorem needs >= 100 "
                             "applicable ones, which the default gives); with --per-theorem, the most to draw "
                             "(default 50 x N)")
    parser.add_argument("--per-theorem", type=int, default=None, metavar="N",
                        help="extend the suite until EVERY theorem has been checked on N instances (hypotheses "
                             "met, not vacuous; each judged on its first N); an instance is checked only for "
                             "theorems still short")
    parser.add_argument("--theorems", default=None, metavar="T1,T6",
                        help="check only these theorems (comma-separated; default all). With --per-theorem a "
                             "theorem's result does not depend on which others run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the suite's random draws")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (results do not depend on the count; default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it goes to stderr; stdout is the table)")


def _progress(total: int):
    """progress(i, n) for run_suite, on stderr (stdout stays the parseable table).

    On a terminal: a tqdm bar redrawn in place; otherwise (a log file) one line about every 10 %.
    """
    import time

    t0 = time.perf_counter()
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc="iec verify", unit="instance", file=sys.stderr, dynamic_ncols=True)
    else:
        bar = None
    every = max(1, total // 10)

    def progress(i: int, n: int) -> None:
        if bar is not None:
            bar.update(i - bar.n)
            if i >= n:
                bar.close()
        elif i % every == 0 or i >= n:
            print(f"iec verify: {i}/{n} instances checked ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                  flush=True)

    return progress


def _per_theorem_progress():
    """progress(k, N) for run_per_theorem: one stderr line per batch (fewest checked instances so far)."""
    import time

    t0 = time.perf_counter()

    def progress(k: int, n: int) -> None:
        print(f"iec verify: every theorem checked on >= {k}/{n} instances ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)

    return progress


def _fmt(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def run(args: argparse.Namespace) -> int:
    from ..checks import check_output_file, check_seed
    from ..errors import require
    from ..theorems import THEOREMS
    from ..theorems.suite import DEFAULT_INSTANCES, default_suite, run_per_theorem, run_suite

    per = args.per_theorem
    require(per is None or per >= 1, f"--per-theorem must be >= 1, got {per}")
    if args.instances is None:
        args.instances = DEFAULT_INSTANCES if per is None else 50 * per
    require(args.instances >= 1, f"--instances must be >= 1, got {args.instances}")
    require(args.workers >= 1, f"--workers must be >= 1, got {args.workers}")
    theorems = dict(THEOREMS)
    if args.theorems is not None:
        names = [t.strip() for t in args.theorems.split(",") if t.strip()]
        unknown = [t for t in names if t not in THEOREMS]
        require(bool(names) and not unknown, f"--theorems: unknown {', '.join(unknown) or 'empty list'}; "
                                             f"choose from {', '.join(THEOREMS)}")
        theorems = {t: THEOREMS[t] for t in THEOREMS if t in names}
    check_seed(args.seed)
    # the suite derives instance seeds as seed * 100_003 + i (+ small offsets); keep them below 2**64
    seed_max = (2**64 - 1 - 10**7 - args.instances) // 100_003
    require(args.seed <= seed_max, f"--seed must be <= {seed_max} (instance seeds are derived as "
                                   f"seed * 100003 + i), got {args.seed}")
    if args.json is not None:
        check_output_file(args.json, "--json")
    torch.set_num_threads(1)
    if per is not None:
        progress = None if args.quiet else _per_theorem_progress()
        out = run_per_theorem(per, args.seed, theorems, progress, workers=args.workers,
                              max_instances=args.instances)
        n_run = out["instances_run"]
    else:
        suite = default_suite(args.instances, args.seed)
        progress = None if args.quiet else _progress(len(suite))
        out = run_suite(suite, theorems, progress, workers=args.workers)
        n_run = len(suite)
    head = f"{'theorem':<8}{'instances':>10}{'holds':>7}{'(cert.)':>8}{'violated':>9}{'vacuous':>8}{'not met':>8}" \
           f"{'worst margin':>14}{'median tight.':>15}{'max tight.':>12}"
    print(head)
    print("-" * len(head))
    for name, s in out["summary"].items():
        print(f"{name:<8}{s['instances']:>10}{s['holds']:>7}{s['holds_certified']:>8}{s['violated']:>9}"
              f"{s['vacuous']:>8}{s['not_met']:>8}"
              f"{_fmt(s['worst_margin']):>14}{_fmt(s['median_tightness']):>15}{_fmt(s['max_tightness']):>12}")
    print("holds (cert.): with certified constants (Gaussian toys, interval bounds); the rest use sampled mixture "
          "constants (estimates).  vacuous: a lower bound <= 0 on every step (no evidence; not counted as holds).")
    violated = [n for n, s in out["summary"].items() if s["violated"]]
    print(f"{n_run} instances, {out['seconds']:.1f} s; "
          + ("VIOLATED: " + ", ".join(violated) if violated else "every proven bound holds"))
    if per is not None:
        print(f"per theorem: the first {per} instances on which it was checked (hypotheses met, not vacuous)"
              + ("" if out["complete"] else f"; SHORT after {n_run} instances (raise --instances): "
                 + ", ".join(f"{n} {out['summary'][n]['instances']}" for n in out["short"])))
    if args.json is not None:
        doc = {"provenance": provenance(seed=args.seed, command="iec verify", instances=n_run,
                                        per_theorem=per),
               "theorems": {n: th.describe() for n, th in theorems.items()},
               "summary": out["summary"], "records": out.get("records", []), "seconds": out["seconds"]}
        if per is not None:
            doc.update(per_theorem=per, complete=out["complete"], short=out["short"])
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {args.json}")
    if violated:
        return 1
    return 0 if per is None or out["complete"] else 2
