"""Build the IEC report: run every section, collect figures and tables, typeset with typst.

Each section is a function `section(ctx) -> str` returning typst markup for its body; it makes
figures with `ctx.figure(...)` (SVG files written next to main.typ in a temporary build
directory), tables with `ctx.table(...)` and verdict lines with `ctx.verdict(...)`, so the
builder knows every table header, verdict and figure that went into the PDF (the tests check
the extracted PDF text against them). A section whose code or data is absent raises
`NotAvailable(reason)` and the report says "Not available: reason" in its place; any other
exception is reported in the PDF as a section failure and in `BuildResult.failures` (never
hidden, never replaced by invented numbers).

The PDF is compiled to a temporary file in the output directory and moved into place with
os.replace, so an interrupted build never leaves a half-written report.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import check_output_dir, check_output_file
from ..fileops import remove_stale
from . import typst_util as tu
from .facts import Fact
from .figures import FigureRecord, save_figure
from .progress import Heartbeat, import_jvp_decompositions

TEMPLATE = Path(__file__).with_name("template.typ")
DEFAULT_OUT = "build/iec_report.pdf"   # ignored by git; the committed copy is rebuilt with --out reports/...
HEARTBEAT_SECONDS = 30.0


class NotAvailable(Exception):
    """A section (or part of one) cannot be shown: its code or its results are absent."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    expected_time: str


# Expected times: one measured number per profile (2-core machine shared with other jobs, OMP_NUM_THREADS=1);
# README.md quotes the same numbers.
PROFILES: dict[str, Profile] = {
    "ci": Profile("ci", "reduced sizes for the test suite (8 theorem instances, the 4 cheapest toy specs)",
                  "1.5 minutes measured"),
    "quick": Profile("quick", "the default: the iec verify suite (160 instances), every toy spec, sweeps up to 12 "
                              "cells, the real-network spec real_quick",
                     "8.8 minutes measured on a first run on 2 busy cores (7.9 of them the real_quick network "
                     "run; under a minute once its results folder exists)"),
    "full": Profile("full", "3x the theorem suite, finer stability grids, 2000 synthetic curves per family, "
                            "every sweep grid, every real-network spec", "5.3 minutes measured without the "
                            "real-network runs; real_full adds its own run time"),
}


def _stderr_log(msg: str) -> None:
    """The default progress log: stderr, so that stdout stays free for results."""
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Context:
    """What a section sees: profile, seed, where to put figures, where results live."""

    profile: Profile
    seed: int
    build_dir: Path
    results_dirs: tuple[Path, ...]
    command: str = "iec report"
    reuse_results: bool = False      # toy experiments: read matching `iec run` folders instead of computing
    run_real: bool = False           # real-model specs without a results folder: run them (minutes each)
    log: Callable[[str], None] = _stderr_log
    figures: list[FigureRecord] = field(default_factory=list)
    tables: list[tuple[str, ...]] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    unavailable: list[tuple[str, str]] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    shared: dict[str, object] = field(default_factory=dict)   # results one section passes to a later one
    section: str = ""

    def pick(self, ci, quick, full=None):
        """A size by profile: ci, quick, full (full defaults to quick)."""
        return {"ci": ci, "quick": quick, "full": quick if full is None else full}[self.profile.name]

    def module(self, name: str, *attrs: str):
        """Import a module another part of the project provides, or raise NotAvailable."""
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise NotAvailable(f"module {name} is not in this checkout ({exc.name} missing)") from exc
        missing = [a for a in attrs if not hasattr(mod, a)]
        if missing:
            raise NotAvailable(f"module {name} does not provide {', '.join(missing)} yet")
        return mod

    def figure(self, name: str, data, draw, caption: str, size=(6.0, 3.2), log: tuple[str, ...] = (),
               width: str = "100%") -> str:
        """Check the data, draw and save `<name>.svg`; return the typst figure markup."""
        if any(f.name == name for f in self.figures):
            raise ValueError(f"duplicate figure name {name!r}")
        rec = save_figure(self.build_dir, name, data, draw, size=size, log=log)
        self.figures.append(rec)
        return (f"#figure(image({tu.string(rec.path.name)}, width: {width}), placement: auto, "
                f"caption: [{tu.text(caption)}])\n")

    def table(self, headers, rows, caption: str | None = None, digits: int = 3, align: str | None = None) -> str:
        rows = list(rows)
        if not rows:
            raise ValueError(f"table {caption!r} has no rows")
        self.tables.append(tuple(str(h) for h in headers))
        return tu.table(headers, rows, caption, digits, align)

    def verdict(self, status: str, line: str) -> str:
        """A verdict line (status: holds / fails / open), recorded for the tests."""
        self.verdicts.append(tu.relativize_paths(line))
        return f"#verdictbox({tu.string(status)})[{tu.text(line)}]\n"

    def not_available(self, reason: str) -> str:
        reason = tu.relativize_paths(reason)     # as the reader sees it
        self.unavailable.append((self.section, reason))
        return tu.not_available(reason)

    def fact(self, value, file: str, pointer: tuple = (), note: str = "", digits: int = 3) -> str:
        """A number read from a results file, printed with `tu.num` and recorded with its source.

        `file` is repo-relative or "build:<path in the build folder>"; `pointer` the JSON keys of the
        value (empty for a number derived from the file, explained by `note`). Returns escaped markup.
        """
        text = tu.num(value, digits)
        self.facts.append(Fact(text=text, file=str(file), pointer=tuple(pointer), note=note, section=self.section))
        return tu.text(text)


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    module: str      # iec_theory.report.sections.<module>, function `section`


SECTIONS: tuple[Section, ...] = (
    Section("summary", "Summary: what holds, what fails, what IEC buys", "summary"),
    Section("claims", "Claims C1 and C2: hypotheses, pinned instances, verdicts", "claims"),
    Section("theorems", "Theorems T1 to T6: statements, proofs, checks", "theorems"),
    Section("stability", "Stability regions of the IEC step", "stability"),
    Section("growth", "Growth classification", "growth"),
    Section("toys", "Toy experiments with exact output laws", "toys"),
    Section("compute", "Compute-matched comparisons", "compute"),
    Section("real", "Real models", "real"),
    Section("evidence", "The paper's own argument: S1-S5 on toys and the real network", "evidence"),
    Section("appendix", "Reproducibility appendix", "appendix"),
)

COMPUTE_LAST = ("summary", "appendix")


@dataclass
class BuildResult:
    out: Path
    pages: int
    seconds: float
    figures: list[FigureRecord]
    tables: list[tuple[str, ...]]
    verdicts: list[str]
    unavailable: list[tuple[str, str]]
    failures: list[tuple[str, str]]
    source: str                      # the main.typ that was compiled
    facts: list[Fact] = field(default_factory=list)      # numbers traced to results files (page 1)
    parts: dict[str, str] = field(default_factory=dict)  # typst markup of each section, by key
    build_dir: Path | None = None    # where "build:" facts live (only still on disk with keep_build)


def join_sections(parts: list[str]) -> str:
    """Page 1 (the summary) on its own page, then the contents, then the sections one after another.

    Later sections do not start a new page each: a forced break after every section left pages two-thirds
    blank. With one or two sections there is no table of contents.
    """
    if len(parts) <= 2:
        return "\n#pagebreak()\n".join(parts)
    return (parts[0] + "\n#pagebreak()\n#outline(title: [Contents], depth: 2)\n#pagebreak()\n"
            + "\n".join(parts[1:]))


def _run_section(ctx: Context, sec: Section, failures: list[tuple[str, str]]) -> str:
    ctx.section = sec.key
    head = tu.heading(sec.title, 1, label=f"sec-{sec.key}")
    try:
        fn = importlib.import_module(f"iec_theory.report.sections.{sec.module}").section
        body = fn(ctx)
    except NotAvailable as exc:
        return head + ctx.not_available(str(exc))
    except Exception as exc:  # a broken section is reported, never hidden
        msg = f"{type(exc).__name__}: {exc}"
        failures.append((sec.key, msg))
        ctx.log(f"  section {sec.key} FAILED: {msg}")
        tb = traceback.format_exc(limit=-3)
        print(tb, file=sys.stderr)
        return head + f"#notavail[section failed: {tu.text(msg)}]\n"
    body, dropped = tu.drop_empty_headings(body)   # a heading with nothing under it says nothing
    for h in dropped:
        ctx.log(f"  section {sec.key}: dropped the empty heading {h!r}")
    return head + body


def page_count(pdf: bytes) -> int:
    """Pages in a typst PDF (counts /Type /Page objects; no PDF library needed)."""
    import re

    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


def clean_stale_temporaries(out: Path) -> list[Path]:
    """Remove `.{out.name}.<pid>.<random>.tmp` files (our own naming) left by a killed run.

    A temporary whose pid is a live process other than this one is kept (a concurrent build); legacy
    names without a pid (`.{out.name}.<random>.tmp`) are removed. Returns the removed paths.
    """
    def pid_of(f: Path) -> int | None:
        middle = f.name[len(out.name) + 2: -len(".tmp")]
        pid_text = middle.split(".", 1)[0] if "." in middle else ""
        return int(pid_text) if pid_text.isdigit() else None

    files = out.parent.glob(f".{glob_escape(out.name)}.*.tmp")
    return remove_stale(((f, pid_of(f)) for f in files), remove_without_pid=True)


def glob_escape(name: str) -> str:
    """name with glob metacharacters escaped."""
    import glob

    return glob.escape(name)


def build_report(profile: str = "quick", out: str | os.PathLike = DEFAULT_OUT, seed: int = 0,
                 results_dirs: tuple[str | os.PathLike, ...] = ("results", "runs", "reports/evidence"),
                 sections: tuple[str, ...] | None = None,
                 keep_build: str | os.PathLike | None = None, command: str | None = None,
                 reuse_results: bool = False, run_real: bool = False,
                 log: Callable[[str], None] = _stderr_log) -> BuildResult:
    """Run the sections of `profile` and write the PDF to `out` atomically."""
    import typst

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    prof = PROFILES[profile]
    chosen = SECTIONS if sections is None else tuple(s for s in SECTIONS if s.key in sections)
    if sections is not None and len(chosen) != len(set(sections)):
        known = [s.key for s in SECTIONS]
        raise ValueError(f"unknown section(s) {sorted(set(sections) - set(known))}; choose from {known}")
    out = check_output_file(out, "out")
    if keep_build is not None:
        check_output_dir(keep_build, "keep_build", must_be_empty=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out)
    t0 = time.perf_counter()
    build = Path(tempfile.mkdtemp(prefix="iec_report_"))
    try:
        ctx = Context(profile=prof, seed=int(seed), build_dir=build,
                      results_dirs=tuple(Path(p) for p in results_dirs),
                      command=command or f"iec report --profile {profile} --seed {seed}",
                      reuse_results=reuse_results, run_real=run_real, log=log)
        failures: list[tuple[str, str]] = []
        parts: dict[str, str] = {}
        log(f"iec report: profile {prof.name} ({prof.expected_time}), seed {seed}, {len(chosen)} sections")
        if any(sec.key == "real" for sec in chosen):
            import_jvp_decompositions()     # before the real-model section's first JVP: no jit.script warning
        # the summary is computed after the sections whose results it summarises, the appendix last
        order = sorted(chosen, key=lambda s: COMPUTE_LAST.index(s.key) + 1 if s.key in COMPUTE_LAST else 0)
        for i, sec in enumerate(order, 1):
            ts = time.perf_counter()
            log(f"[{i}/{len(chosen)}] {sec.title} ...")
            with Heartbeat(log, f"section {sec.key}", HEARTBEAT_SECONDS):
                parts[sec.key] = _run_section(ctx, sec, failures)
            n_na = sum(1 for s, _ in ctx.unavailable if s == sec.key)
            extra = f", {n_na} part(s) not available" if n_na else ""
            log(f"[{i}/{len(chosen)}] {sec.key} done in {time.perf_counter() - ts:.1f} s{extra}")
        shutil.copy(TEMPLATE, build / "template.typ")
        source = ('#import "template.typ": *\n'
                  '#show: report.with(title: "Test-time Iterative Error Correction: executable theory", '
                  f'subtitle: {tu.string("iec-theory report, profile " + prof.name)})\n\n'
                  + join_sections([parts[sec.key] for sec in chosen]))
        (build / "main.typ").write_text(source, encoding="utf-8")
        log("typesetting with typst ...")
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        try:
            typst.compile(str(build / "main.typ"), output=tmp, root=str(build))
            data = Path(tmp).read_bytes()
            if not data.startswith(b"%PDF"):
                raise RuntimeError("typst did not produce a PDF")
            os.chmod(tmp, 0o644)    # mkstemp creates 0600; a report is meant to be read
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        pages = page_count(data)
        secs = time.perf_counter() - t0
        log(f"wrote {out} ({pages} pages, {len(ctx.figures)} figures, {len(ctx.tables)} tables) in {secs:.1f} s")
        if failures:
            log(f"WARNING: {len(failures)} section(s) failed: {', '.join(k for k, _ in failures)}")
        return BuildResult(out=out, pages=pages, seconds=secs, figures=list(ctx.figures), tables=list(ctx.tables),
                           verdicts=list(ctx.verdicts), unavailable=list(ctx.unavailable), failures=failures,
                           source=source, facts=list(ctx.facts), parts=dict(parts),
                           build_dir=Path(keep_build) if keep_build is not None else None)
    finally:
        clean_stale_temporaries(out)  # ours too, wherever an interrupt landed (SIGKILL: the next run does it)
        if keep_build is not None:   # checked empty (or absent) above; copy into it, delete nothing there
            shutil.copytree(build, Path(keep_build), dirs_exist_ok=True)
        shutil.rmtree(build, ignore_errors=True)
