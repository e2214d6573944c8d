"""Measure a DDPM model folder's sample quality (issue 13, item 2) and write quality.json.

For each spacing (default: quad and uniform) samples n images with plain DDIM (T steps, eta = 0, NO x0
clipping) from x_T ~ N(0, I) drawn with torch.Generator(seed) (the same x_T for every spacing), and records:

* ``out_of_range``: the fraction of pixel values outside [-1, 1] (before any clamping);
* ``FD_cifarnet`` / ``KID_cifarnet`` (images clamped to [-1, 1]; the project classifier's feature space, NOT
  Inception FID/KID) with percentile-bootstrap intervals (``real_models.intervals``; B, level, seed recorded);
* ``IS_cifarnet``: an Inception-score analogue in the classifier's output space,
  ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y|x)`` the classifier's softmax and ``p(y)`` its mean over the n
  samples (1 = every sample gets the same class distribution, 10 = confident and uniformly spread), with a
  bootstrap interval;
* ``class_histogram``: counts of the classifier's predicted class (argmax) over the n samples.

The real-data floor at the same n (n CIFAR-10 training images when $IEC_CIFAR10_DIR is set, else n of the
committed test reference features, FD/KID only) is measured with the same statistics. ``--history`` adds
earlier models' quality.json summaries so an improvement is visible. The output file must not exist unless
``--force`` (the committed quality.json is never overwritten silently).

    python scripts/measure_default_quality.py --out /tmp/quality.json --n 64 --T 10            # smoke test
    python scripts/measure_default_quality.py --model-dir real_models/weights/ddpm_cifar10_small \\
        --n 1000 --T 100 --threads 1 --out real_models/weights/ddpm_cifar10_small/quality_n1000.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from iec_theory.errors import ConfigError  # noqa: E402
from iec_theory.provenance import repo_relative  # noqa: E402
from real_models.model_history import quality_summary  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def inception_score(probs: np.ndarray) -> float:
    """``exp(mean_i KL(p_i || mean_j p_j))`` of class probabilities [n, K] (float64)."""
    p = np.clip(probs, 1e-30, 1.0)
    py = p.mean(0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), axis=1))))


def score_images(images: torch.Tensor, classifier: Any, extractor: Any, B: int, seed: int,
                 level: float) -> dict[str, Any]:
    """FD/KID with intervals, the IS analogue with a bootstrap interval and the predicted-class histogram."""
    from real_models.intervals import centred_interval
    from real_models.metrics import fd_kid_intervals_vs_cifar_test

    img = images.float().clamp(-1, 1)
    with torch.no_grad():
        feats = torch.cat([classifier.features(img[i:i + 500]).double() for i in range(0, len(img), 500)])
        probs = torch.softmax(classifier.fc(feats.float()).double(), dim=1).numpy()
    out = fd_kid_intervals_vs_cifar_test(feats=feats.numpy(), extractor=extractor, B=B, seed=seed, level=level)
    rng = np.random.default_rng(seed + 1)
    is_b = [inception_score(probs[rng.integers(0, len(probs), len(probs))]) for _ in range(B)]
    counts = np.bincount(probs.argmax(1), minlength=len(CLASSES))
    is_pt = inception_score(probs)
    out.update(IS_cifarnet=is_pt, IS_cifarnet_ci=list(centred_interval(is_pt, np.array(is_b), level)),
               class_histogram={c: int(k) for c, k in zip(CLASSES, counts)})
    return out


def real_floor(n: int, classifier: Any, extractor: Any, B: int, seed: int, level: float) -> dict[str, Any]:
    from real_models.metrics import real_data_floor

    root = os.environ.get("IEC_CIFAR10_DIR")
    if root and Path(root).exists():
        from real_models.data import load_cifar10, to_float_tensor

        imgs, _ = load_cifar10("train", root)
        idx = np.sort(np.random.default_rng(seed).choice(len(imgs), size=n, replace=False))
        out = score_images(to_float_tensor(imgs[idx]), classifier, extractor, B, seed, level)
        out["source"] = f"{n} CIFAR-10 training images (seed {seed})"
        return out
    return real_data_floor(n, extractor=extractor, B=B, seed=seed, level=level)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output JSON (refused when it exists, unless --force)")
    p.add_argument("--model-dir", default=None, help="diffusers model folder (default: the committed default)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--spacings", default="quad,uniform", help="comma-separated: quad, uniform")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates B")
    p.add_argument("--level", type=float, default=0.95)
    p.add_argument("--history", nargs="*", default=[], help="earlier quality JSON files to carry as history")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    a = p.parse_args(argv)
    try:
        spacings = [s.strip() for s in a.spacings.split(",") if s.strip()]
        if not spacings or any(s not in ("quad", "uniform") for s in spacings):
            raise ConfigError(f"--spacings: use quad and/or uniform, got {a.spacings!r}")
        if a.n < 10 or a.T < 2 or a.batch < 1 or a.bootstrap < 10 or not 0.5 <= a.level < 1:
            raise ConfigError(f"need --n >= 10, --T >= 2, --batch >= 1, --bootstrap >= 10, 0.5 <= --level < 1; got "
                              f"n={a.n}, T={a.T}, batch={a.batch}, bootstrap={a.bootstrap}, level={a.level}")
        out = Path(a.out)
        if out.exists() and not a.force:
            raise ConfigError(f"--out {out} exists; pass --force to overwrite it, or choose another path")
        history = []
        for h in a.history:
            hp = Path(h)
            if not hp.is_file():
                raise ConfigError(f"--history: {h} does not exist")
            rec = json.loads(hp.read_text())
            history.append(quality_summary(rec, repo_relative(h)))
            history += [x for x in rec.get("history", []) if isinstance(x, dict)]
        torch.set_num_threads(a.threads)
        from iec_theory import sample
        from iec_theory.provenance import provenance
        from real_models.experiment.grids import timesteps_for
        from real_models.metrics import ClassifierFeatures
        from real_models.pretrained import DEFAULT_MODEL_DIR, load_default_model, model_metadata, weights_sha256

        model, schedule = load_default_model(a.model_dir)
        mdir = Path(a.model_dir) if a.model_dir else DEFAULT_MODEL_DIR
        extractor = ClassifierFeatures()
        classifier = extractor.model.eval()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        rel_dir = str(mdir.resolve().relative_to(ROOT))
    except ValueError:
        rel_dir = str(mdir)
    meta = model_metadata(mdir) if (mdir / "metadata.json").is_file() else {}
    cfg = model.unet.config
    shape = (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
    x_T = torch.randn((a.n, *shape), generator=torch.Generator().manual_seed(a.seed))
    record: dict[str, Any] = {
        "what": "sample quality of a DDPM: plain DDIM, eta 0, no x0 clipping; FD/KID/IS in the project classifier's "
                "space (NOT Inception FID/KID/IS); intervals: percentile bootstrap over the images",
        "model": {"dir": rel_dir, "weights_sha256": weights_sha256(mdir),
                  "steps": meta.get("steps"), "images_seen": meta.get("images_seen"),
                  "num_parameters": sum(q.numel() for q in model.unet.parameters())},
        "n": a.n, "T": a.T, "eta": 0.0, "clip_x0": None, "spacings": spacings, "seed": a.seed,
        "bootstrap": {"B": a.bootstrap, "level": a.level, "seed": a.seed}, "threads": a.threads,
        "scoring": "FD/KID/IS on samples clamped to [-1, 1]; out_of_range measured before clamping",
        "rows": {}, "history": history, "status": "partial",
        "provenance": provenance(seed=a.seed, command="scripts/measure_default_quality.py " + " ".join(
            sys.argv[1:] if argv is None else argv)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        out.write_text(json.dumps(record, indent=2, default=str) + "\n")

    t0 = time.perf_counter()
    floor = real_floor(a.n, classifier, extractor, a.bootstrap, a.seed, a.level)
    floor["seconds"] = round(time.perf_counter() - t0, 1)
    record["rows"]["real_data_floor"] = floor
    print(f"real-data floor (n={a.n}): FD {floor['FD_cifarnet']:.4g} {floor['FD_cifarnet_ci']}", flush=True)
    write()
    for spacing in spacings:
        t0, c0 = time.perf_counter(), time.process_time()
        xs = []
        grid = timesteps_for(schedule, a.T, spacing)     # quad: the distinct official timesteps (same samples)
        for i in range(0, a.n, a.batch):
            with torch.no_grad():
                xs.append(sample(model, schedule, x_T[i:i + a.batch], grid, eta=0.0).x0.float())
            print(f"  {spacing}: {min(i + a.batch, a.n)}/{a.n} images, {time.perf_counter() - t0:.0f}s", flush=True)
        x0 = torch.cat(xs)
        row_ts = {"timesteps": grid, "steps_run": len(grid)}
        row = {"out_of_range": float((x0.abs() > 1).double().mean()), "T": a.T, "spacing": spacing, **row_ts}
        row.update(score_images(x0, classifier, extractor, a.bootstrap, a.seed, a.level))
        row.update(sampling_seconds=round(time.perf_counter() - t0, 1), sampling_cpu_seconds=round(
            time.process_time() - c0, 1))
        record["rows"][f"ddim_{spacing}"] = row
        print(f"ddim {spacing}: out_of_range {row['out_of_range']:.4f}, FD {row['FD_cifarnet']:.4g} "
              f"{row['FD_cifarnet_ci']}, KID {row['KID_cifarnet']:.4g} {row['KID_cifarnet_ci']}, IS "
              f"{row['IS_cifarnet']:.3g} {row['IS_cifarnet_ci']}, classes {row['class_histogram']}", flush=True)
        write()
    record["status"] = "complete"
    write()
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
