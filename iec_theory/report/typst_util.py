"""Helpers that turn Python text and numbers into typst source safely.

Everything that is not typst written by us (names, messages, numbers, paths) goes through one of
these: `text` for markup (every ASCII punctuation character is backslash-escaped, which typst
accepts for any character, so no user text can open a heading, emphasis, math, a label or code),
`string` for a typst string literal inside code, `num` for deterministic number formatting.
"""

from __future__ import annotations

import math
import re
import string as _string
from collections.abc import Iterable, Sequence
from pathlib import Path

_PUNCT = frozenset(_string.punctuation)


def text(value: object) -> str:
    """Plain text as typst markup: punctuation escaped, newlines and runs of blanks collapsed (one blank kept at
    either end), absolute paths shown relative (`relativize_paths`)."""
    raw = str(value)
    s = relativize_paths(" ".join(raw.split()))
    if s and raw[:1].isspace():       # keep one blank at either end: pieces are concatenated with numbers
        s = " " + s
    if s.strip() and raw[-1:].isspace():
        s = s + " "
    return "".join("\\" + c if c in _PUNCT else c for c in s)


def paragraphs(value: str) -> str:
    """Like `text`, but keeps blank-line paragraph breaks (for docstrings and notes)."""
    parts = [p for p in str(value).split("\n\n") if p.strip()]
    return "\n\n".join(text(p) for p in parts)


def string(value: object) -> str:
    """A typst string literal (with quotes) for use inside code, e.g. image(...)."""
    s = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{s}"'


def num(value: object, digits: int = 3) -> str:
    """A number rendered deterministically as plain text (significant digits, no locale)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        x = float(value)  # numpy and torch scalars
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if x == int(x) and abs(x) < 1e5:      # same threshold as below: 490099.0 prints as 4.9e5, like 5.94e8
        return str(int(x))
    ax = abs(x)
    if 1e-3 <= ax < 1e5 and "e" not in f"{x:.{digits}g}":
        return f"{x:.{digits}g}"
    mant, exp = f"{x:.{max(digits - 1, 0)}e}".split("e")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def cell(value: object, digits: int = 3) -> str:
    """A table cell: numbers formatted with `num`, None as "n/a", everything else escaped text."""
    if value is None:
        return "[n\\/a]"
    if isinstance(value, (int, float)) or type(value).__module__ in ("numpy", "torch"):
        return f"[{text(num(value, digits))}]"
    return f"[{text(value)}]"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], caption: str | None = None,
          digits: int = 3, align: str | None = None) -> str:
    """A typst table figure: header row in bold, plain-text headers and cells."""
    headers = [str(h) for h in headers]
    n = len(headers)
    lines = []
    for row in rows:
        row = list(row)
        if len(row) != n:
            raise ValueError(f"table row has {len(row)} cells, header has {n}: {row}")
        lines.append("  " + ", ".join(cell(v, digits) for v in row) + ",")
    if n >= 9:   # wide tables: one header word per line, so no column is wider than its widest word or cell
        # (typst shrinks auto columns that do not fit, and a shrunk column overprints its neighbour)
        head = ", ".join("[*" + " \\ ".join(text(w) for w in h.split()) + "*]" for h in headers)
    else:
        head = ", ".join(f"[*{text(h)}*]" for h in headers)
    al = align or "(" + ", ".join(["left"] + ["right"] * (n - 1)) + ")"
    body = "\n".join(lines)
    tbl = (f"table(columns: {n}, align: {al}, stroke: none, table.hline(),\n"
           f"  table.header({head}), table.hline(stroke: 0.5pt),\n{body}\n  table.hline())")
    if n >= 9:   # wide tables: smaller type so that headers do not collide
        tbl = f"{{ show table: set text(7pt); set table(inset: (x: 3pt, y: 2.5pt)); {tbl} }}"
    if caption is None:
        return f"#{tbl}\n"
    return f"#figure({tbl}, caption: [{text(caption)}], kind: table)\n"


REPO_ROOT = Path(__file__).resolve().parents[2]
# top-level folders of a checkout: an absolute path through one of them is shown from there on
_REPO_DIRS = ("real_models", "results", "runs", "experiments", "reports", "build", "benchmarks", "docs",
              "iec_theory", "toy_models", "tests")


def display_path(path: object) -> str:
    """A path as the report shows it: relative to the repository (or the working directory), never absolute.

    Paths outside both become "<outside the checkout>/<last two parts>", so no machine-specific prefix
    (home folders, other checkouts) reaches the PDF.
    """
    p = Path(str(path))
    if not p.is_absolute():
        return p.as_posix()
    for base in (REPO_ROOT, Path.cwd()):
        try:
            return p.resolve().relative_to(base.resolve()).as_posix()
        except (ValueError, OSError):
            pass
    parts = [q for q in p.parts if q != p.anchor]
    for k, part in enumerate(parts):
        if part in _REPO_DIRS:
            return Path(*parts[k:]).as_posix()
    return "<outside the checkout>/" + "/".join(parts[-2:])


_ABS = re.compile(r"(?<![\w.~\\)])(/[A-Za-z_][\w.+-]*/(?:[\w.+-]+/)*[\w.+-]*)")


def relativize_paths(value: str) -> str:
    """Plain text with every absolute POSIX path replaced by `display_path` (a last line of defence)."""
    return _ABS.sub(lambda m: display_path(m.group(1)), value)


def not_available(reason: str) -> str:
    """The standard marker for a part of the report whose data or code is absent."""
    return f"#notavail[{text(reason)}]\n"


def heading(title: str, level: int = 1, label: str | None = None) -> str:
    lab = f" <{label}>" if label else ""
    return f"{'=' * level} {text(title)}{lab}\n"


_HEADING = re.compile(r"^(=+) ")


def empty_headings(markup: str) -> list[int]:
    """Line numbers of headings with no content: the next non-blank line is a heading of the same or a higher
    level (or there is none)."""
    lines = markup.splitlines()
    heads = [(i, len(m.group(1))) for i, line in enumerate(lines) if (m := _HEADING.match(line))]
    out = []
    for i, level in heads:
        nxt = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
        m = _HEADING.match(lines[nxt]) if nxt is not None else None
        if nxt is None or (m and len(m.group(1)) <= level):
            out.append(i)
    return out


def drop_empty_headings(markup: str) -> tuple[str, list[str]]:
    """The markup without its empty headings, and the dropped heading lines."""
    bad = set(empty_headings(markup))
    if not bad:
        return markup, []
    lines = markup.splitlines(keepends=True)
    return "".join(line for i, line in enumerate(lines) if i not in bad), [lines[i].strip() for i in sorted(bad)]


def bullet_list(items: Iterable[str]) -> str:
    """Items are already-escaped markup."""
    return "".join(f"- {it}\n" for it in items)


def _inline_md(s: str) -> str:
    """Inline markdown: `code` becomes raw text, **bold** stays bold; the rest is escaped text."""
    out = []
    for i, part in enumerate(s.split("`")):
        if i % 2 == 1:
            out.append(f"#raw({string(part)})")
            continue
        for j, seg in enumerate(part.split("**")):
            if not seg:
                continue
            esc = text(seg)
            if seg[:1].isspace():
                esc = " " + esc
            if seg[-1:].isspace():
                esc = esc + " "
            out.append(f"#strong[{esc}]" if j % 2 == 1 else esc)
    return "".join(out)


def markdown(md: str, heading_offset: int = 2) -> str:
    """A small, safe markdown subset as typst: headings, paragraphs, lists, fenced code, inline code.

    Anything else is shown literally (escaped), so a proof written in markdown always typesets.
    """
    out: list[str] = []
    para: list[str] = []
    lines = md.splitlines()
    i = 0

    def flush():
        if para:
            out.append(_inline_md(" ".join(p.strip() for p in para)) + "\n\n")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            code = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                code.append(lines[i])
                i += 1
            out.append(f"#raw({string(chr(10).join(code))}, block: true)\n\n")
        elif stripped.startswith("#"):
            flush()
            level = len(stripped) - len(stripped.lstrip("#"))
            out.append(f"#strong[{text(stripped[level:].strip())}]\n\n" if level + heading_offset > 3 else
                       heading(stripped[level:].strip(), level + heading_offset))
        elif stripped[:2] in ("- ", "* ") or (stripped[:1].isdigit() and ". " in stripped[:4]):
            flush()
            item = stripped[2:] if stripped[:2] in ("- ", "* ") else stripped.split(". ", 1)[1]
            marker = "-" if stripped[:2] in ("- ", "* ") else "+"
            i += 1
            while i < len(lines) and lines[i].startswith(("  ", "\t")) and lines[i].strip():
                item += " " + lines[i].strip()
                i += 1
            out.append(f"{marker} {_inline_md(item)}\n")
            continue
        elif not stripped:
            flush()
            if out and out[-1].startswith(("- ", "+ ")):
                out.append("\n")
        elif line.startswith("    ") and not para:
            code = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                code.append(lines[i][4:])
                i += 1
            out.append(f"#raw({string(chr(10).join(code).rstrip())}, block: true)\n\n")
            continue
        else:
            para.append(line)
        i += 1
    flush()
    return "".join(out)


def math_error(src: str) -> str | None:
    """None if `$ src $` typesets, else typst's error message (math written elsewhere is checked
    before it goes into the report, so one bad formula cannot stop the whole build)."""
    import tempfile
    from pathlib import Path

    import typst

    with tempfile.TemporaryDirectory(prefix="iec_math_") as d:
        p = Path(d) / "m.typ"
        p.write_text(f"$ {src} $\n", encoding="utf-8")
        try:
            typst.compile(str(p), output=str(Path(d) / "m.pdf"))
        except Exception as exc:  # typst.TypstError and friends
            return " ".join(str(exc).split())[:300]
    return None


def display_math(src: str, what: str = "formula") -> str:
    """Display math if it typesets; otherwise the source as code with typst's error (never a failed build)."""
    err = math_error(src)
    if err is None:
        return f"$ {src} $\n\n"
    note = text(f"({what} shown as source: typst could not typeset it: {err})")
    return f"#raw({string(src)}, block: true)\n#text(size: 8pt)[{note}]\n\n"
