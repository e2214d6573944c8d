"""Copy the small part of a real-eval results folder into the repository, where `iec report` finds it.

    python scripts/publish_real_results.py results/real_full-<hash8> [--dest reports/evidence] [--note TEXT]

Writes <dest>/<folder name>/ with results.json, table.md and grid.png (absolute paths inside this checkout
made repo-relative in the two text files, as every record should be; counted in PUBLISHED.json), and an
arrays.npz that keeps every array of at most --max-elements elements (the per-step curves the report plots,
local errors, growth and Jacobian records) and leaves out the images (x_T, final samples) and other large
arrays. PUBLISHED.json lists the left-out keys with their shapes, the source folder (repo-relative), the
sha256 of every file written and an optional --note (e.g. what the run's provenance does not say). A folder
that is already there is refused unless --replace is given and it holds a PUBLISHED.json (i.e. this script
wrote it); nothing else is ever overwritten.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from iec_theory.provenance import repo_relative

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("results.json", "table.md", "grid.png")


def _rel(p: Path) -> str:
    """Repo-relative path (provenance.repo_relative); a path outside the checkout is recorded by its name only."""
    r = repo_relative(p)
    return r if not Path(r).is_absolute() else p.name


def publish(src: Path, dest_root: Path, max_elements: int = 100_000, replace: bool = False,
            note: str | None = None) -> Path:
    """Write the published copy of results folder `src` under `dest_root`; return its folder."""
    res = src / "results.json"
    if not res.is_file():
        raise SystemExit(f"error: {src} has no results.json (not a finished real-eval folder)")
    doc = json.loads(res.read_text(encoding="utf-8"))
    if doc.get("kind") != "real":
        raise SystemExit(f"error: {res} is not a real-eval results file (kind = {doc.get('kind')!r})")
    dest = dest_root / src.name
    if dest.exists():
        if not (replace and (dest / "PUBLISHED.json").is_file()):
            raise SystemExit(f"error: {dest} exists; pass --replace to overwrite a folder this script wrote")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    record: dict = {"source": _rel(src), "spec_hash": doc.get("spec_hash"), "max_elements": max_elements,
                    "note": note, "absolute_paths_made_relative": {}, "files": {}, "arrays_left_out": {}}
    prefixes = sorted({str(ROOT) + "/", str(ROOT.resolve()) + "/"}, key=len, reverse=True)
    for name in KEEP:
        if not (src / name).is_file():
            continue
        if name.endswith((".json", ".md")):
            text = (src / name).read_text(encoding="utf-8")
            hits = sum(text.count(pre) for pre in prefixes)
            for pre in prefixes:
                text = text.replace(pre, "")
            (dest / name).write_text(text, encoding="utf-8")
            record["absolute_paths_made_relative"][name] = hits
        else:
            shutil.copyfile(src / name, dest / name)
    if (src / "arrays.npz").is_file():
        kept = {}
        with np.load(src / "arrays.npz", allow_pickle=False) as z:
            for k in z.files:
                a = z[k]
                if a.size <= max_elements:
                    kept[k] = a
                else:
                    record["arrays_left_out"][k] = list(a.shape)
        buf = io.BytesIO()
        np.savez_compressed(buf, **kept)
        (dest / "arrays.npz").write_bytes(buf.getvalue())
    for f in sorted(dest.iterdir()):
        record["files"][f.name] = {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    (dest / "PUBLISHED.json").write_text(json.dumps(record, indent=1))
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="a finished real-eval results folder")
    ap.add_argument("--dest", type=Path, default=ROOT / "reports" / "evidence")
    ap.add_argument("--max-elements", type=int, default=100_000)
    ap.add_argument("--replace", action="store_true")
    ap.add_argument("--note", default=None, help="free text recorded in PUBLISHED.json")
    a = ap.parse_args(argv)
    out = publish(a.src, a.dest, a.max_elements, a.replace, a.note)
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"{_rel(out)}: {len(list(out.iterdir()))} files, {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
