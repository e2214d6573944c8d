"""Resumable training checkpoints in ONE safetensors file, written atomically (tmp file + os.replace).

Contents (tensor keys): ``model.*`` (trained weights), ``ema.*`` (EMA weights), ``opt.{i}.{name}``
(Adam state of parameter i: step, exp_avg, exp_avg_sq), ``rng.torch`` (the training generator's
state), ``data.perm`` (the current epoch's permutation). Everything else (step counters, optimizer
hyper-parameters, UNet config, training arguments) is JSON in the safetensors ``__metadata__`` under
the key ``state``. Nothing is pickled, so loading a checkpoint cannot execute code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from iec_theory.fileops import remove_stale

from .unet import ModelLoadError, check_safetensors

CKPT_NAME = "checkpoint.safetensors"
STATE_JSON = "state.json"


def _clone_contiguous(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().contiguous().clone() for k, v in sd.items()}


def save_checkpoint(run_dir: str | os.PathLike, model: torch.nn.Module, ema: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, generator: torch.Generator, perm: torch.Tensor,
                    state: dict[str, Any]) -> Path:
    """Write run_dir/checkpoint.safetensors atomically, plus a human-readable state.json copy."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(run_dir)
    tensors = _clone_contiguous(model.state_dict(), "model.")
    tensors.update(_clone_contiguous(ema.state_dict(), "ema."))
    opt_sd = optimizer.state_dict()
    for i, st in opt_sd["state"].items():
        for name, val in st.items():
            val = val if isinstance(val, torch.Tensor) else torch.tensor(val)
            tensors[f"opt.{i}.{name}"] = val.detach().contiguous().clone()
    tensors["rng.torch"] = generator.get_state().clone()
    tensors["data.perm"] = perm.detach().to(torch.int64).contiguous().clone()
    groups = [{k: v for k, v in g.items()} for g in opt_sd["param_groups"]]
    meta_state = dict(state, optimizer_param_groups=groups)
    metadata = {"state": json.dumps(meta_state), "format": "iec_theory.train_ddpm.v1"}
    final = run_dir / CKPT_NAME
    tmp = run_dir / f".{CKPT_NAME}.tmp{os.getpid()}"
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, final)
    tmp_json = run_dir / f".{STATE_JSON}.tmp{os.getpid()}"
    tmp_json.write_text(json.dumps(state, indent=2))
    os.replace(tmp_json, run_dir / STATE_JSON)
    return final


def clean_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Remove `.checkpoint.safetensors.tmp<pid>` / `.state.json.tmp<pid>` files (our own naming) whose
    writer process is gone (a SIGKILL during a save); returns the removed paths."""
    files = []
    for name in (CKPT_NAME, STATE_JSON):
        for f in Path(run_dir).glob(f".{name}.tmp*"):
            pid = f.name[len(f".{name}.tmp"):]
            files.append((f, int(pid) if pid.isdigit() else None))
    return remove_stale(files, remove_without_pid=False)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of a checkpoint file or of run_dir/checkpoint.safetensors; clear errors if bad."""
    path = Path(path)
    if path.is_dir():
        path = path / CKPT_NAME
    if not path.is_file():
        raise ModelLoadError(f"no checkpoint at {str(path)!r}")
    check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        state = json.loads(meta["state"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"checkpoint {str(path)!r} lacks valid training state metadata: {exc}") from exc
    check_state(state, tensors, str(path))
    return tensors, state


REQUIRED_STATE = ("step", "pos", "epoch", "images_seen", "train_seconds", "sessions", "num_train_images",
                  "train_config", "num_parameters", "optimizer_param_groups")
REQUIRED_CONFIG = ("unet_config", "num_train_steps", "seed")
REQUIRED_TENSORS = ("rng.torch", "data.perm")


def check_state(state: Any, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Raise ModelLoadError naming what is missing unless the checkpoint holds a full training state."""
    if not isinstance(state, dict):
        raise ModelLoadError(f"checkpoint {where!r}: training state is not a JSON object")
    missing = [k for k in REQUIRED_STATE if k not in state]
    cfg = state.get("train_config")
    if isinstance(cfg, dict):
        missing += [f"train_config.{k}" for k in REQUIRED_CONFIG if k not in cfg]
    elif "train_config" in state:
        missing.append("train_config (not an object)")
    missing += [f"tensor {k}" for k in REQUIRED_TENSORS if k not in tensors]
    if missing:
        raise ModelLoadError(f"checkpoint {where!r} is not a resumable `iec train-ddpm` checkpoint: it lacks "
                             f"{', '.join(missing)}")
    bad = [k for k in ("step", "pos", "epoch", "images_seen", "num_train_images")
           if not isinstance(state[k], int) or isinstance(state[k], bool) or state[k] < 0]
    if bad:
        raise ModelLoadError(f"checkpoint {where!r}: training state fields {bad} must be integers >= 0")


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def restore(tensors: dict[str, torch.Tensor], state: dict[str, Any], model: torch.nn.Module, ema: torch.nn.Module,
            optimizer: torch.optim.Optimizer, generator: torch.Generator) -> torch.Tensor:
    """Load weights, EMA, optimizer and generator state in place; return the saved data permutation."""
    try:
        model.load_state_dict(split_prefix(tensors, "model."), strict=True)
        ema.load_state_dict(split_prefix(tensors, "ema."), strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"checkpoint does not match the model architecture: {exc}") from exc
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in split_prefix(tensors, "opt.").items():
        i, name = k.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer_param_groups"]})
    generator.set_state(tensors["rng.torch"])
    return tensors["data.perm"]
