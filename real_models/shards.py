"""Sharded real-model evaluation: shard plans, per-shard sufficient statistics, an exact merge, torchrun ranks.

A 50,000-sample evaluation is split into shards that run anywhere (Dask workers, torchrun ranks with one
GPU each, separate SLURM jobs) and merge into the numbers a single process would give.

**Plan.** ``ShardPlan(n_samples, batch, seed)`` cuts the sample indices 0..n-1 into global batches of
``batch`` samples (the last may be shorter); shard i of n is a contiguous, balanced range of whole global
batches, so every sample is always evaluated in the same batch with the same companions, whatever the
shard count (bitwise-identical images on the same hardware). The initial noise x_T of sample j depends
only on (seed, j) (``sample_seed``: a ``numpy.random.SeedSequence`` of (seed, j)); stochastic samplers
(eta > 0) key their per-step noise by the global batch (``plan.batch_noise_seed(b)``, e.g.
``NoiseSource(seed=plan.batch_noise_seed(b), keyed=True)``).

**Sufficient statistics** (``ShardStats``), all float64: the count; for FD, the feature sum and the
scatter matrix about the shard mean (the centred sum of outer products; the raw sum of outer products is
``outer_sum``); for KID, the raw features in sample order; for error growth, per named curve the per-step
sums and sums of squares of the per-sample errors, and per named scalar its sum, sum of squares, min and
max. ``save_shard`` writes them as ``shard-00003-of-00008.safetensors`` plus a JSON record (plan, shard,
sample range, count, the safetensors sha256, caller metadata) written last and atomically: the JSON is
the completion marker, and a 0-byte, foreign or mismatching one is refused.

**Merge.** ``merge_shards(folder)`` checks that the shards share one plan and cover every index exactly
once (naming missing and duplicate shards), and merges them in shard order: counts and sums add, scatter
matrices combine with the exact pairwise update (Chan et al.), features concatenate. The merged mean and
covariance equal ``metrics.feature_stats`` of all features up to float64 rounding (the FD agrees to well
below 1e-10, tested), and the merged KID features equal the single-process ones exactly.

**Ranks.** ``rank_from_env()`` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK (rank r of w = shard r of
w; absent = shard 0 of 1), and ``RankInfo.device()`` picks ``cuda:LOCAL_RANK`` (one GPU per rank).

``iec real-eval SPEC --shards N | --shard I/N | --shards-from-env | --merge-shards`` uses it through
real_models/experiment/sharded.py (every row of a spec, one folder of shards per row). Launch on GPUs with
``torchrun --nproc-per-node 8 -m iec_theory.cli real-eval SPEC --shards-from-env`` (one GPU per rank), or one
Dask task per shard (``--shards N --executor dask [--scheduler ADDR]``; finished shards are skipped on a rerun).
``run_shards(client, plan, n, sample_fn, extractor, shape, folder)`` runs a single sampling function the same way.
Paper scale: 50,000 samples x T = 100 x (1 or 2 NFE per step) = 5e6 (DDIM) to 1e7 (IEC) forward passes of the
35.7M-parameter network per configuration (experiments/paper_scale.toml.example gives the expected cost).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iec_theory.errors import ConfigError, require
from iec_theory.fileops import atomic_write_bytes as _atomic_write

__all__ = ["RankInfo", "ShardPlan", "ShardStats", "evaluate_shard", "load_shard", "merge_shards", "rank_from_env",
           "run_shards", "sample_seed", "save_shard", "shard_done", "shard_name"]

FORMAT = "iec-shard-v1"


def _nonneg_int(v: Any, name: str, lo: int = 0) -> int:
    require(isinstance(v, (int, np.integer)) and not isinstance(v, bool), f"{name} must be an integer, got {v!r}")
    require(int(v) >= lo, f"{name} must be >= {lo}, got {v}")
    return int(v)


def _seq_seed(*words: int) -> int:
    hi, lo = np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit generator seed for sample `index` that depends only on (seed, index) (any seed >= 0)."""
    return _seq_seed(seed, index)


@dataclass(frozen=True)
class ShardPlan:
    """Sample indices 0..n_samples-1 in global batches of `batch`; shards are contiguous runs of whole batches."""

    n_samples: int
    batch: int
    seed: int

    def __post_init__(self) -> None:
        _nonneg_int(self.n_samples, "n_samples", 1)
        _nonneg_int(self.batch, "batch", 1)
        _nonneg_int(self.seed, "seed", 0)

    @property
    def n_batches(self) -> int:
        return -(-self.n_samples // self.batch)

    def _check(self, shard: int, n_shards: int) -> None:
        _nonneg_int(n_shards, "n_shards", 1)
        _nonneg_int(shard, "shard", 0)
        require(shard < n_shards, f"shard must be in [0, {n_shards - 1}], got {shard}")

    def shard_batches(self, shard: int, n_shards: int) -> range:
        """Global batch indices of shard `shard` of `n_shards` (balanced; empty when n_shards > n_batches)."""
        self._check(shard, n_shards)
        nb = self.n_batches
        return range(shard * nb // n_shards, (shard + 1) * nb // n_shards)

    def batch_indices(self, b: int) -> range:
        """Sample indices of global batch b."""
        return range(b * self.batch, min((b + 1) * self.batch, self.n_samples))

    def sample_range(self, shard: int, n_shards: int) -> range:
        """The sample indices of a shard (a contiguous range)."""
        bs = self.shard_batches(shard, n_shards)
        if len(bs) == 0:
            start = min(bs.start * self.batch, self.n_samples)
            return range(start, start)
        return range(bs.start * self.batch, min(bs.stop * self.batch, self.n_samples))

    def batches(self, shard: int, n_shards: int) -> Iterator[tuple[int, range]]:
        """(global batch index, its sample indices) for every batch of the shard, in order."""
        for b in self.shard_batches(shard, n_shards):
            yield b, self.batch_indices(b)

    def x_T(self, indices: range | list[int], shape: tuple[int, ...], dtype: torch.dtype = torch.float32
            ) -> torch.Tensor:
        """x_T [len(indices), *shape] on the CPU: row k is N(0, I) drawn from sample_seed(seed, indices[k])."""
        out = torch.empty((len(indices), *shape), dtype=dtype)
        for k, j in enumerate(indices):
            g = torch.Generator().manual_seed(sample_seed(self.seed, j))
            out[k] = torch.randn(shape, generator=g, dtype=dtype)
        return out

    def batch_noise_seed(self, b: int) -> int:
        """Seed for the per-step noise of global batch b (stochastic samplers, eta > 0)."""
        return _seq_seed(self.seed, b, 1)          # a key domain of its own (three words, not two)

    def as_dict(self) -> dict[str, int]:
        return {"n_samples": self.n_samples, "batch": self.batch, "seed": self.seed}


def _f64(x: Any, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    require(a.ndim == ndim, f"{name} must be {ndim}-d, got shape {list(a.shape)}")
    require(bool(np.isfinite(a).all()), f"{name} contains non-finite values")
    return a


@dataclass
class ShardStats:
    """Sufficient statistics of a set of samples (float64): see the module docstring."""

    count: int = 0
    feature_sum: np.ndarray | None = None          # [D]
    scatter: np.ndarray | None = None              # [D, D], sum of (f - mean)(f - mean)^T
    features: np.ndarray | None = None             # [count, D] (KID), when kept
    keep_features: bool = True
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)    # name -> {"sum", "sq_sum"} [S]
    scalars: dict[str, dict[str, float]] = field(default_factory=dict)        # name -> {"sum", "sq_sum", min, max}

    # ---- accumulation ----------------------------------------------------------------------------------------
    def add(self, features: Any = None, curves: Mapping[str, Any] | None = None,
            scalars: Mapping[str, Any] | None = None) -> ShardStats:
        """Add a batch: features [n, D], curves name -> [n, S] per-sample errors per step, scalars name -> [n]."""
        part = ShardStats(keep_features=self.keep_features)
        n = None
        if features is not None:
            f = _f64(features, "features", 2)
            n = f.shape[0]
            mean = f.mean(axis=0)
            c = f - mean
            part.feature_sum, part.scatter = f.sum(axis=0), c.T @ c
            part.features = f if self.keep_features else None
        for name, v in (curves or {}).items():
            a = _f64(v, f"curves[{name!r}]", 2)
            require(n is None or a.shape[0] == n, f"curves[{name!r}] has {a.shape[0]} rows, expected {n}")
            n = a.shape[0]
            part.curves[name] = {"sum": a.sum(axis=0), "sq_sum": (a * a).sum(axis=0)}
        for name, v in (scalars or {}).items():
            a = _f64(v, f"scalars[{name!r}]", 1)
            require(n is None or a.shape[0] == n, f"scalars[{name!r}] has {a.shape[0]} values, expected {n}")
            n = a.shape[0]
            part.scalars[name] = {"sum": float(a.sum()), "sq_sum": float((a * a).sum()),
                                  "min": float(a.min()) if n else float("inf"),
                                  "max": float(a.max()) if n else float("-inf")}
        require(n is not None, "add() needs features, curves or scalars")
        part.count = int(n)
        merged = ShardStats.merge(self, part)
        self.__dict__.update(merged.__dict__)
        return self

    @staticmethod
    def merge(a: ShardStats, b: ShardStats) -> ShardStats:
        """Exact combination of two disjoint sets (a's samples first)."""
        if a.count == 0:
            return ShardStats(**{**b.__dict__, "keep_features": a.keep_features and b.keep_features})
        if b.count == 0:
            return ShardStats(**{**a.__dict__, "keep_features": a.keep_features and b.keep_features})
        require((a.feature_sum is None) == (b.feature_sum is None), "cannot merge stats with and without features")
        require(set(a.curves) == set(b.curves) and set(a.scalars) == set(b.scalars),
                f"cannot merge stats with different curves/scalars: {sorted(a.curves)}/{sorted(a.scalars)} vs "
                f"{sorted(b.curves)}/{sorted(b.scalars)}")
        n = a.count + b.count
        out = ShardStats(count=n, keep_features=a.keep_features and b.keep_features)
        if a.feature_sum is not None:
            assert b.feature_sum is not None and a.scatter is not None and b.scatter is not None
            require(a.feature_sum.shape == b.feature_sum.shape,
                    f"feature dims differ: {a.feature_sum.shape[0]} vs {b.feature_sum.shape[0]}")
            delta = b.feature_sum / b.count - a.feature_sum / a.count
            out.feature_sum = a.feature_sum + b.feature_sum
            out.scatter = a.scatter + b.scatter + np.outer(delta, delta) * (a.count * b.count / n)
            if out.keep_features and a.features is not None and b.features is not None:
                out.features = np.concatenate([a.features, b.features])
        for name in a.curves:
            require(a.curves[name]["sum"].shape == b.curves[name]["sum"].shape,
                    f"curves[{name!r}]: step counts differ")
            out.curves[name] = {k: a.curves[name][k] + b.curves[name][k] for k in ("sum", "sq_sum")}
        for name in a.scalars:
            sa, sb = a.scalars[name], b.scalars[name]
            out.scalars[name] = {"sum": sa["sum"] + sb["sum"], "sq_sum": sa["sq_sum"] + sb["sq_sum"],
                                 "min": min(sa["min"], sb["min"]), "max": max(sa["max"], sb["max"])}
        return out

    # ---- results ---------------------------------------------------------------------------------------------
    def fd_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], unbiased covariance [D, D]) for metrics.frechet_distance (needs count >= 2)."""
        require(self.feature_sum is not None and self.scatter is not None and self.count >= 2,
                f"FD needs features of at least 2 samples, have {self.count}")
        assert self.feature_sum is not None and self.scatter is not None
        return self.feature_sum / self.count, self.scatter / (self.count - 1)

    @property
    def outer_sum(self) -> np.ndarray:
        """The raw sum of outer products sum_j f_j f_j^T."""
        require(self.feature_sum is not None and self.scatter is not None, "no features accumulated")
        assert self.feature_sum is not None and self.scatter is not None
        return self.scatter + np.outer(self.feature_sum, self.feature_sum) / self.count

    def curve_mean(self, name: str) -> np.ndarray:
        """Mean over samples of the per-step errors of curve `name` [S]."""
        require(name in self.curves and self.count > 0, f"no curve {name!r}; have {sorted(self.curves)}")
        return self.curves[name]["sum"] / self.count

    def curve_std(self, name: str) -> np.ndarray:
        """Population standard deviation over samples of curve `name` per step [S]."""
        m = self.curve_mean(name)
        return np.sqrt(np.clip(self.curves[name]["sq_sum"] / self.count - m * m, 0.0, None))

    # ---- (de)serialisation -------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.feature_sum is not None:
            out["feature_sum"] = torch.from_numpy(np.ascontiguousarray(self.feature_sum))
            out["scatter"] = torch.from_numpy(np.ascontiguousarray(self.scatter))
        if self.features is not None:
            out["features"] = torch.from_numpy(np.ascontiguousarray(self.features))
        for name, d in self.curves.items():
            for k, v in d.items():
                out[f"curve/{name}/{k}"] = torch.from_numpy(np.ascontiguousarray(v))
        return out

    @classmethod
    def from_saved(cls, tensors: Mapping[str, torch.Tensor], record: Mapping[str, Any]) -> ShardStats:
        st = cls(count=int(record["count"]), keep_features="features" in tensors)
        if "feature_sum" in tensors:
            st.feature_sum = tensors["feature_sum"].numpy()
            st.scatter = tensors["scatter"].numpy()
        if "features" in tensors:
            st.features = tensors["features"].numpy()
        for key, v in tensors.items():
            if key.startswith("curve/"):
                _, name, k = key.split("/", 2)
                st.curves.setdefault(name, {})[k] = v.numpy()
        st.scalars = {k: {kk: float(vv) for kk, vv in d.items()} for k, d in record.get("scalars", {}).items()}
        return st


def evaluate_shard(plan: ShardPlan, shard: int, n_shards: int,
                   sample_fn: Callable[[torch.Tensor, int], Mapping[str, Any]],
                   feature_fn: Callable[[torch.Tensor], torch.Tensor] | None,
                   shape: tuple[int, ...], keep_features: bool = True) -> ShardStats:
    """Run one shard: for each of its global batches b, x_T = plan.x_T(indices), out = sample_fn(x_T, b) (a
    mapping with "images" and optional "curves" / "scalars"), features = feature_fn(out["images"]); return
    the shard's statistics."""
    stats = ShardStats(keep_features=keep_features)
    for b, idx in plan.batches(shard, n_shards):
        out = sample_fn(plan.x_T(idx, shape), b)
        feats = feature_fn(out["images"]) if feature_fn is not None else None
        stats.add(features=feats, curves=out.get("curves"), scalars=out.get("scalars"))
    return stats


# ---- files ----------------------------------------------------------------------------------------------------
def shard_name(shard: int, n_shards: int) -> str:
    return f"shard-{shard:05d}-of-{n_shards:05d}"


def save_shard(folder: str | Path, stats: ShardStats, plan: ShardPlan, shard: int, n_shards: int,
               meta: Mapping[str, Any] | None = None) -> Path:
    """Write <folder>/shard-i-of-n.safetensors, then its JSON record (the completion marker); return the JSON."""
    from safetensors.torch import save

    rng = plan.sample_range(shard, n_shards)
    require(stats.count == len(rng), f"shard {shard}/{n_shards} has {stats.count} samples, the plan says {len(rng)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    blob = save(stats.tensors())
    name = shard_name(shard, n_shards)
    _atomic_write(folder / f"{name}.safetensors", blob)
    record = {"format": FORMAT, "plan": plan.as_dict(), "shard": shard, "n_shards": n_shards,
              "range": [rng.start, rng.stop], "count": stats.count, "sha256": hashlib.sha256(blob).hexdigest(),
              "scalars": stats.scalars, "meta": dict(meta or {})}
    _atomic_write(folder / f"{name}.json", json.dumps(record, indent=2, default=str).encode())
    return folder / f"{name}.json"


def load_shard(json_path: str | Path) -> tuple[ShardStats, dict[str, Any]]:
    """(stats, record) of a saved shard; ConfigError for an invalid record or a safetensors file that does not match."""
    from safetensors.torch import load

    p = Path(json_path)
    try:
        record = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{p}: not a valid shard record ({exc})") from exc
    require(isinstance(record, dict) and record.get("format") == FORMAT, f"{p}: not a {FORMAT} shard record")
    blob_path = p.with_suffix(".safetensors")
    require(blob_path.is_file(), f"{p}: its statistics file {blob_path.name} is missing")
    blob = blob_path.read_bytes()
    require(hashlib.sha256(blob).hexdigest() == record.get("sha256"),
            f"{blob_path}: contents do not match the sha256 in {p.name} (rerun shard {record.get('shard')})")
    return ShardStats.from_saved(load(blob), record), record


def merge_shards(source: str | Path | list[str | Path], expect_meta: Mapping[str, Any] | None = None
                 ) -> ShardStats:
    """Merge every shard of a folder (or a list of JSON records) exactly, after checking they form one complete
    plan; expect_meta: meta entries every shard must carry (e.g. {"spec_hash": ...})."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        require(folder.is_dir(), f"shard folder not found: {folder}")
        paths = sorted(folder.glob("shard-*-of-*.json"))
        require(bool(paths), f"{folder}: no shard records (shard-*-of-*.json)")
    else:
        paths = [Path(p) for p in source]
    loaded = [load_shard(p) for p in paths]
    first = loaded[0][1]
    plan, n_shards = first["plan"], first["n_shards"]
    by_shard: dict[int, tuple[ShardStats, dict[str, Any]]] = {}
    for (st, rec), p in zip(loaded, paths):
        require(rec["plan"] == plan and rec["n_shards"] == n_shards,
                f"{p.name}: plan {rec['plan']} / {rec['n_shards']} shards differs from {plan} / {n_shards} shards")
        for k, v in (expect_meta or {}).items():
            require(rec["meta"].get(k) == v, f"{p.name}: meta {k} = {rec['meta'].get(k)!r}, expected {v!r}")
        require(rec["shard"] not in by_shard, f"shard {rec['shard']} of {n_shards} appears twice")
        by_shard[rec["shard"]] = (st, rec)
    missing = sorted(set(range(n_shards)) - set(by_shard))
    require(not missing, f"shards missing: {', '.join(map(str, missing))} of {n_shards} (run them, then merge again)")
    sp = ShardPlan(**plan)
    merged = ShardStats()
    for i in range(n_shards):
        st, rec = by_shard[i]
        rng = sp.sample_range(i, n_shards)
        require(rec["range"] == [rng.start, rng.stop] and st.count == len(rng),
                f"shard {i}: range {rec['range']} / {st.count} samples, the plan says [{rng.start}, {rng.stop})")
        merged = ShardStats.merge(merged, st)
    require(merged.count == sp.n_samples, f"merged {merged.count} samples, the plan has {sp.n_samples}")
    return merged


def shard_done(folder: Path, plan: ShardPlan, shard: int, n_shards: int, meta: Mapping[str, Any]) -> bool:
    """True when <folder> holds a valid record of this shard with the same plan and these meta entries."""
    p = folder / f"{shard_name(shard, n_shards)}.json"
    if not p.is_file():
        return False
    try:
        _, rec = load_shard(p)
    except ConfigError:
        return False
    return rec["plan"] == plan.as_dict() and all(rec["meta"].get(k) == v for k, v in meta.items())


def run_shards(client: Any, plan: ShardPlan, n_shards: int,
               sample_fn: Callable[[torch.Tensor, int], Mapping[str, Any]],
               feature_fn: Callable[[torch.Tensor], torch.Tensor] | None, shape: tuple[int, ...], folder: str | Path,
               meta: Mapping[str, Any] | None = None, keep_features: bool = True) -> list[Path]:
    """Evaluate every shard of the plan as one task on a Dask `distributed.Client` and save each as it completes
    (in this process: workers need no shared filesystem). Shards whose valid record already exists are skipped,
    so a rerun resumes. Returns the JSON records in shard order; merge them with `merge_shards(folder)`."""
    from distributed import as_completed

    folder = Path(folder)
    meta = dict(meta or {})
    todo = [i for i in range(n_shards) if not shard_done(folder, plan, i, n_shards, meta)]
    futures = {client.submit(evaluate_shard, plan, i, n_shards, sample_fn, feature_fn, shape, keep_features,
                             pure=False): i for i in todo}
    try:
        for fut in as_completed(list(futures)):
            save_shard(folder, fut.result(), plan, futures.pop(fut), n_shards, meta)
    except BaseException:
        client.cancel(list(futures), force=True)
        raise
    return [folder / f"{shard_name(i, n_shards)}.json" for i in range(n_shards)]


# ---- torchrun ranks -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankInfo:
    """This process's place in a torchrun job: rank r of world_size w evaluates shard r of w."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def device(self, prefer_cuda: bool = True) -> torch.device:
        """cuda:LOCAL_RANK when CUDA is available (one GPU per rank), else the CPU."""
        if prefer_cuda and torch.cuda.is_available():
            n = torch.cuda.device_count()
            require(self.local_rank < n, f"LOCAL_RANK={self.local_rank} but this node has {n} CUDA device(s)")
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def rank_from_env(env: Mapping[str, str] | None = None) -> RankInfo:
    """RankInfo from torchrun's RANK, WORLD_SIZE, LOCAL_RANK (all absent: rank 0 of 1)."""
    env = os.environ if env is None else env
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    present = [k for k in keys if env.get(k) not in (None, "")]
    if not present:
        return RankInfo()
    require("RANK" in present and "WORLD_SIZE" in present,
            f"torchrun environment incomplete: have {', '.join(present)}, need RANK and WORLD_SIZE")
    vals = {}
    for k in present:
        try:
            vals[k] = int(env[k])
        except ValueError as exc:
            raise ConfigError(f"{k}={env[k]!r} is not an integer") from exc
    rank, world = vals["RANK"], vals["WORLD_SIZE"]
    local = vals.get("LOCAL_RANK", 0)
    require(world >= 1, f"WORLD_SIZE must be >= 1, got {world}")
    require(0 <= rank < world, f"RANK must be in [0, {world - 1}], got {rank}")
    require(local >= 0, f"LOCAL_RANK must be >= 0, got {local}")
    return RankInfo(rank, world, local)
