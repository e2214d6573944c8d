"""Post-training fake quantization of torch networks (issue 6, item 1).

* Weights: per-output-channel symmetric quantization to the signed grid {-q, ..., q} * s with
  q = 2**(bits-1) - 1, scale s from the channel's max |w| ("minmax") or from a search over clipping
  ratios r in [min_ratio, 1] minimising the channel's squared error ("mse"; r = 1 is in the grid, so
  the MSE error never exceeds the min-max error).
* Activations: a per-tensor quantizer at the input of every quantized nn.Conv2d / nn.Linear,
  asymmetric (unsigned grid {0..2**bits-1} with a zero point; the range is widened to contain 0) or
  symmetric (signed {-q..q}), calibrated data-free: the full-precision network samples a few
  trajectories from random x_T with `iec_theory.sample` while every quantizer records the range of
  its input (min-max, or an MSE search over clipping ratios on a subsample). With
  `per_timestep=True` each sampling step index gets its own scale (the sampler's `begin_step(i, t)`
  selects it, like the official code's `set_time`).
* `quantize_model(net, preset="W4A8", calibration=Calibration(schedule))` returns a
  `QuantizedModel`: an eps_model `(x, t) -> eps` (UNet2DModel outputs are unwrapped from `.sample`)
  holding a quantized deep copy `.net` (the original is untouched) and a per-layer error report.

Quantization is simulated ("fake"): quantize-dequantize in float32. Weights are quantized once; the
per-evaluation overhead is the activation quantize-dequantize at each layer input.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from iec_theory.errors import ConfigError, require
from iec_theory.sampler import sample
from iec_theory.schedules import Schedule

__all__ = [
    "ActQuantizer",
    "Calibration",
    "LayerReport",
    "QuantConfig",
    "QuantLayer",
    "QuantReport",
    "QuantizedModel",
    "check_bits",
    "fake_quant_weight",
    "quantize_model",
    "weight_scales",
]

W_METHODS = ("minmax", "mse")
A_METHODS = ("minmax", "mse")


def check_bits(bits: object, name: str) -> int:
    """bits as an int in [2, 16], else ConfigError."""
    ok = isinstance(bits, int) and not isinstance(bits, bool) and 2 <= bits <= 16
    if not ok:
        raise ConfigError(f"{name} must be an integer in [2, 16], got {bits!r}")
    return int(bits)


# ----- weights ------------------------------------------------------------------------------------
def _qmax_signed(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def fake_quant_weight(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel quantize-dequantize: clamp(round(w / s), -q, q) * s, s of shape [C_out]."""
    bits = check_bits(bits, "bits")
    q = _qmax_signed(bits)
    s = scale.reshape(-1, *([1] * (w.ndim - 1))).to(w.dtype)
    return torch.clamp(torch.round(w / s), -q, q) * s


def _channel_sq_err(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    return (fake_quant_weight(w, scale, bits) - w).pow(2).flatten(1).sum(1)


def weight_scales(
    w: torch.Tensor, bits: int, method: str = "minmax", grid: int = 100, min_ratio: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel scales (and the chosen clipping ratios) for symmetric weight quantization.

    minmax: s = max|w_c| / q. mse: s = r max|w_c| / q with r on `grid` points of [min_ratio, 1]
    chosen per channel to minimise sum (Q(w_c) - w_c)^2 (ties keep the larger r; r = 1 first).
    All-zero channels get s = 1 (they quantize to 0 exactly).
    """
    bits = check_bits(bits, "bits")
    require(method in W_METHODS, f"weight method must be one of {W_METHODS}, got {method!r}")
    require(w.ndim >= 1 and w.shape[0] >= 1, f"weights need an output-channel dimension, got shape {tuple(w.shape)}")
    w = w.detach().float()
    w2 = w.reshape(w.shape[0], -1)
    amax = w2.abs().amax(dim=1)
    base = torch.where(amax > 0, amax / _qmax_signed(bits), torch.ones_like(amax))
    ratios = torch.ones_like(amax)
    if method == "minmax":
        return base, ratios
    require(isinstance(grid, int) and grid >= 2, f"mse grid must be an integer >= 2, got {grid!r}")
    require(0.0 < min_ratio < 1.0, f"mse min_ratio must lie in (0, 1), got {min_ratio!r}")
    best_s = base.clone()
    best_e = _channel_sq_err(w2, best_s, bits)
    for r in torch.linspace(1.0, min_ratio, grid)[1:].tolist():
        s = torch.where(amax > 0, base * r, base)
        e = _channel_sq_err(w2, s, bits)
        better = e < best_e
        best_s = torch.where(better, s, best_s)
        best_e = torch.where(better, e, best_e)
        ratios = torch.where(better, torch.full_like(ratios, r), ratios)
    return best_s, ratios


# ----- activations --------------------------------------------------------------------------------
@dataclass
class _Range:
    lo: float = math.inf
    hi: float = -math.inf
    t: int | None = None
    samples: list[torch.Tensor] = field(default_factory=list)

    def update(self, x: torch.Tensor, keep: int, gen: torch.Generator | None) -> None:
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        if keep > 0:
            flat = x.detach().reshape(-1).float().cpu()
            if flat.numel() > keep:
                flat = flat[torch.randint(flat.numel(), (keep,), generator=gen)]
            self.samples.append(flat)


@dataclass(frozen=True)
class ActParams:
    """Per-tensor affine grid: q = clamp(round(x / scale) + zero_point, qmin, qmax); x' = (q - zp) scale."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    lo: float
    hi: float

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        # clamp(round(x / s), qmin - zp, qmax - zp) * s, in place on one temporary (torch's fused
        # fake_quantize_per_tensor_affine is an order of magnitude slower on CPU)
        y = torch.div(x, self.scale)
        return y.round_().clamp_(self.qmin - self.zero_point, self.qmax - self.zero_point).mul_(self.scale)


def act_params(lo: float, hi: float, bits: int, symmetric: bool) -> ActParams:
    """Grid for the range [lo, hi]: asymmetric covers [min(lo,0), max(hi,0)] with 2**bits levels and an
    integer zero point; symmetric covers [-a, a], a = max(|lo|, |hi|), with levels {-q..q}."""
    bits = check_bits(bits, "a_bits")
    require(math.isfinite(lo) and math.isfinite(hi) and lo <= hi,
            f"activation range must be finite with lo <= hi, got [{lo}, {hi}]")
    if symmetric:
        q = _qmax_signed(bits)
        a = max(abs(lo), abs(hi))
        scale = a / q if a > 0 else 1.0
        return ActParams(float(scale), 0, -q, q, lo, hi)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    n = 2**bits - 1
    scale = (hi - lo) / n if hi > lo else 1.0
    zp = int(min(max(round(-lo / scale), 0), n))
    return ActParams(float(scale), zp, 0, n, lo, hi)


class ActQuantizer(nn.Module):
    """Per-tensor activation quantizer with calibration (observer) and optional per-step scales.

    mode: "off" (identity), "calibrate" (identity, records ranges), "quant" (fake-quantizes).
    """

    def __init__(self, bits: int, symmetric: bool = False, method: str = "minmax", per_timestep: bool = False,
                 grid: int = 100, min_ratio: float = 0.3, keep_per_call: int = 2048, seed: int = 0) -> None:
        super().__init__()
        self.bits = check_bits(bits, "a_bits")
        require(method in A_METHODS, f"activation method must be one of {A_METHODS}, got {method!r}")
        self.symmetric = bool(symmetric)
        self.method = method
        self.per_timestep = bool(per_timestep)
        self.grid = grid
        self.min_ratio = min_ratio
        self.keep_per_call = keep_per_call if method == "mse" else 0
        self.mode = "off"
        self.seed = seed
        self._gen: torch.Generator | None = None
        self._global = _Range()
        self._per_step: dict[int, _Range] = {}
        self.params: ActParams | None = None
        self.step_params: dict[int, tuple[int, ActParams]] = {}
        self._step: tuple[int, int] | None = None

    # sampler protocol
    def begin_step(self, step_index: int, t: int) -> None:
        self._step = (int(step_index), int(t))

    def clear_step(self) -> None:
        self._step = None

    @property
    def observed(self) -> tuple[float, float]:
        """(min, max) of every input seen during calibration."""
        return self._global.lo, self._global.hi

    def observed_step(self, step_index: int) -> tuple[float, float]:
        r = self._per_step[step_index]
        return r.lo, r.hi

    def _observe(self, x: torch.Tensor) -> None:
        if self._gen is None and self.keep_per_call > 0:
            self._gen = torch.Generator().manual_seed(self.seed)
        self._global.update(x, self.keep_per_call, self._gen)
        if self.per_timestep and self._step is not None:
            i, t = self._step
            r = self._per_step.setdefault(i, _Range(t=t))
            require(r.t == t, f"calibration saw step {i} at timesteps {r.t} and {t}; calibrate with one timestep list")
            r.update(x, self.keep_per_call, self._gen)

    def _fit(self, r: _Range) -> ActParams:
        require(math.isfinite(r.lo), "activation quantizer was never calibrated (no inputs observed)")
        best = act_params(r.lo, r.hi, self.bits, self.symmetric)
        if self.method == "minmax" or not r.samples:
            return best
        xs = torch.cat(r.samples)
        best_e = float((best.apply(xs) - xs).pow(2).sum())
        for ratio in torch.linspace(1.0, self.min_ratio, self.grid)[1:].tolist():
            p = act_params(r.lo * ratio, r.hi * ratio, self.bits, self.symmetric)
            e = float((p.apply(xs) - xs).pow(2).sum())
            if e < best_e:
                best, best_e = p, e
        return best

    def finalize(self) -> None:
        """Compute the scales from the recorded ranges and drop the stored samples."""
        self.params = self._fit(self._global)
        self.step_params = {i: (r.t, self._fit(r)) for i, r in self._per_step.items()}  # type: ignore[misc]
        for r in (self._global, *self._per_step.values()):
            r.samples = []
        self._gen = None

    def current_params(self) -> ActParams:
        require(self.params is not None, "activation quantizer is not calibrated")
        assert self.params is not None
        if not self.per_timestep or self._step is None:
            return self.params
        i, t = self._step
        entry = self.step_params.get(i)
        if entry is None or entry[0] != t:
            have = sorted((k, v[0]) for k, v in self.step_params.items())
            raise ConfigError(f"no per-timestep activation scale for step {i} at t={t}; calibrated (step, t) pairs: "
                              f"{have[:6]}{'...' if len(have) > 6 else ''}; calibrate with the same timesteps")
        return entry[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            return self.current_params().apply(x)
        if self.mode == "calibrate":
            self._observe(x)
        return x

    def extra_repr(self) -> str:
        return f"bits={self.bits}, symmetric={self.symmetric}, method={self.method}, per_timestep={self.per_timestep}"


# ----- layers -------------------------------------------------------------------------------------
class QuantLayer(nn.Module):
    """A Conv2d / Linear with fake-quantized weights and an optional input activation quantizer.

    `.layer` keeps the original full-precision module; `w_q` holds the dequantized quantized weights.
    """

    def __init__(self, layer: nn.Module, w_bits: int, w_method: str = "minmax", act: ActQuantizer | None = None,
                 mse_grid: int = 100, mse_min_ratio: float = 0.2) -> None:
        super().__init__()
        require(isinstance(layer, (nn.Conv2d, nn.Linear)),
                f"QuantLayer wraps nn.Conv2d or nn.Linear, got {type(layer).__name__}")
        self.layer = layer
        self.w_bits = check_bits(w_bits, "w_bits")
        self.w_method = w_method
        w = layer.weight.detach()
        scale, ratios = weight_scales(w, self.w_bits, w_method, mse_grid, mse_min_ratio)
        self.register_buffer("w_scale", scale.to(w.device))
        self.register_buffer("w_q", fake_quant_weight(w.float(), scale, self.w_bits).to(w.dtype))
        self.clip_ratio_mean = float(ratios.mean())
        self.act = act
        self.quant_weights = True
        self.measuring = False
        self._stats = [0.0] * 6  # sum |x'-x|^2, |x|^2, |y'-y|^2, |y|^2, n calls, unused

    @property
    def weight(self) -> torch.Tensor:
        return self.w_q if self.quant_weights else self.layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.layer.bias

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)

    def weight_rel_err(self) -> float:
        w = self.layer.weight.detach().double()
        return float(torch.linalg.vector_norm(self.w_q.double() - w) / torch.linalg.vector_norm(w).clamp_min(1e-30))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.measuring:
            y = self._op(x, self.layer.weight)
            xq = self.act(x) if self.act is not None else x
            yq = self._op(xq, self.w_q)
            s = self._stats
            s[0] += float((xq - x).double().pow(2).sum())
            s[1] += float(x.double().pow(2).sum())
            s[2] += float((yq - y).double().pow(2).sum())
            s[3] += float(y.double().pow(2).sum())
            s[4] += 1
            return y
        if self.act is not None:
            x = self.act(x)
        return self._op(x, self.weight)

    def extra_repr(self) -> str:
        return f"w_bits={self.w_bits}, w_method={self.w_method}"


# ----- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantConfig:
    """Bit widths and methods. a_bits=None: weight-only. skip: fnmatch patterns of module names kept FP."""

    w_bits: int = 8
    a_bits: int | None = 8
    w_method: str = "mse"
    a_method: str = "minmax"
    a_symmetric: bool = False
    per_timestep: bool = False
    mse_grid: int = 100
    w_min_ratio: float = 0.2
    a_min_ratio: float = 0.3
    skip: tuple[str, ...] = ()
    name: str = "custom"

    def __post_init__(self) -> None:
        check_bits(self.w_bits, "w_bits")
        if self.a_bits is not None:
            check_bits(self.a_bits, "a_bits")
        require(self.w_method in W_METHODS, f"w_method must be one of {W_METHODS}, got {self.w_method!r}")
        require(self.a_method in A_METHODS, f"a_method must be one of {A_METHODS}, got {self.a_method!r}")
        require(isinstance(self.mse_grid, int) and self.mse_grid >= 2,
                f"mse_grid must be an integer >= 2, got {self.mse_grid!r}")
        require(0 < self.w_min_ratio < 1 and 0 < self.a_min_ratio < 1, "min clipping ratios must lie in (0, 1)")
        object.__setattr__(self, "skip", tuple(self.skip))

    @classmethod
    def preset(cls, name: str, **overrides: object) -> QuantConfig:
        """W8A8 or W4A8 (MSE weight scales, min-max asymmetric per-tensor activations), with overrides."""
        presets = {"W8A8": dict(w_bits=8, a_bits=8), "W4A8": dict(w_bits=4, a_bits=8)}
        if name not in presets:
            raise ConfigError(f"unknown quantization preset {name!r}; choose one of {sorted(presets)}")
        return _replace(cls(name=name, **presets[name]), overrides)  # type: ignore[arg-type]


def _replace(config: QuantConfig, overrides: dict) -> QuantConfig:
    try:
        return replace(config, **overrides)
    except TypeError as exc:
        raise ConfigError(f"unknown QuantConfig field in {sorted(overrides)}: {exc}") from exc


@dataclass(frozen=True)
class Calibration:
    """Data-free calibration: `trajectories` full-precision samplings of `batch_size` random x_T each.

    shape: (C, H, W) of x_T; default (in_channels, sample_size, sample_size) from a UNet2DModel config.
    report_evals: how many recorded network inputs the error report replays.
    """

    schedule: Schedule
    T: int = 20
    trajectories: int = 2
    batch_size: int = 4
    eta: float = 0.0
    seed: int = 0
    shape: tuple[int, ...] | None = None
    spacing: str = "uniform"
    report_evals: int = 8

    def __post_init__(self) -> None:
        require(isinstance(self.schedule, Schedule), "Calibration.schedule must be an iec_theory Schedule")
        for name in ("trajectories", "batch_size"):
            v = getattr(self, name)
            require(isinstance(v, int) and v >= 1, f"Calibration.{name} must be an integer >= 1, got {v!r}")
        require(isinstance(self.report_evals, int) and self.report_evals >= 0, "report_evals must be an integer >= 0")


# ----- report -------------------------------------------------------------------------------------
@dataclass
class LayerReport:
    name: str
    kind: str
    w_bits: int
    a_bits: int | None
    weight_rel_err: float
    w_clip_ratio_mean: float
    act_rel_err: float | None = None     # ||Q(x) - x|| / ||x|| on the replayed calibration inputs
    out_rel_err: float | None = None     # ||layer_q(Q(x)) - layer(x)|| / ||layer(x)||, FP input x
    act_range: tuple[float, float] | None = None


@dataclass
class QuantReport:
    config: QuantConfig
    layers: list[LayerReport]
    eps_rel_err: float | None = None     # ||eps_q - eps_fp|| / ||eps_fp|| on the replayed inputs
    calibration_evals: int = 0
    replayed_evals: int = 0

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "eps_rel_err": self.eps_rel_err,
            "calibration_evals": self.calibration_evals,
            "replayed_evals": self.replayed_evals,
            "layers": [asdict(r) for r in self.layers],
        }

    def format(self) -> str:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3e}"

        lines = [f"{'layer':48s} {'kind':6s} {'W':>2s} {'A':>2s} {'w_err':>9s} {'a_err':>9s} {'out_err':>9s}"]
        for r in self.layers:
            lines.append(f"{r.name[:48]:48s} {r.kind:6s} {r.w_bits:2d} {r.a_bits or 0:2d} {f(r.weight_rel_err):>9s} "
                         f"{f(r.act_rel_err):>9s} {f(r.out_rel_err):>9s}")
        lines.append(f"eps relative error (whole network): {f(self.eps_rel_err)}")
        return "\n".join(lines)


# ----- the quantized eps model --------------------------------------------------------------------
def _eps_out(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample  # type: ignore[no-any-return]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConfigError(f"network returned {type(out).__name__}; expected a tensor, an object with .sample or a tuple")


class QuantizedModel(nn.Module):
    """eps_model (x, t) -> eps around a fake-quantized copy `.net`; forwards begin_step to the quantizers."""

    def __init__(self, net: nn.Module, config: QuantConfig) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.report: QuantReport | None = None
        self.config_dict = asdict(config)

    def quant_layers(self) -> dict[str, QuantLayer]:
        return {n: m for n, m in self.net.named_modules() if isinstance(m, QuantLayer)}

    def act_quantizers(self) -> list[ActQuantizer]:
        return [m for m in self.net.modules() if isinstance(m, ActQuantizer)]

    def begin_step(self, step_index: int, t: int) -> None:
        for q in self.act_quantizers():
            q.begin_step(step_index, t)

    def clear_step(self) -> None:
        for q in self.act_quantizers():
            q.clear_step()

    def set_mode(self, weights: bool = True, acts: bool = True) -> None:
        """Toggle weight and activation quantization (both on after quantize_model)."""
        for m in self.quant_layers().values():
            m.quant_weights = bool(weights)
        for q in self.act_quantizers():
            q.mode = "quant" if acts else "off"

    @torch.no_grad()
    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        return _eps_out(self.net(x, t))


# ----- driver -------------------------------------------------------------------------------------
class _Recorder:
    """eps_model used during calibration: runs the (FP) network and records each evaluation's input."""

    def __init__(self, qm: QuantizedModel) -> None:
        self.qm = qm
        self.step: int | None = None
        self.inputs: list[tuple[torch.Tensor, torch.Tensor, int | None]] = []

    def begin_step(self, step_index: int, t: int) -> None:
        self.step = int(step_index)
        self.qm.begin_step(step_index, t)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append((x.detach().clone(), t.detach().clone(), self.step))
        return self.qm(x, t)


def _default_shape(net: nn.Module) -> tuple[int, ...]:
    cfg = getattr(net, "config", None)
    size = getattr(cfg, "sample_size", None)
    ch = getattr(cfg, "in_channels", None)
    require(size is not None and ch is not None,
            "Calibration.shape is required for networks without a UNet2DModel config")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return (int(ch), *hw)


def quantize_model(
    net: nn.Module,
    preset: str | None = "W8A8",
    calibration: Calibration | Sequence[tuple] | None = None,
    config: QuantConfig | None = None,
    **overrides: object,
) -> QuantizedModel:
    """A fake-quantized deep copy of `net` as an eps_model, calibrated and with its error report.

    preset: "W8A8" / "W4A8" (ignored when `config` is given); overrides change preset fields, e.g.
    per_timestep=True, w_method="minmax". calibration: a `Calibration` (data-free FP sampling) or a
    sequence of network inputs (x, t) / (x, t, step_index); required when activations are quantized.
    """
    if config is None:
        require(preset is not None, "give a preset name or a QuantConfig")
        config = QuantConfig.preset(str(preset), **overrides)
    elif overrides:
        config = _replace(config, overrides)
    require(isinstance(config, QuantConfig), "config must be a QuantConfig")
    if not isinstance(net, nn.Module) and isinstance(getattr(net, "unet", None), nn.Module):
        net = net.unet  # an eps adapter such as real_models.unet.UNetEpsModel
    require(isinstance(net, nn.Module), f"net must be a torch nn.Module, got {type(net).__name__}")
    if config.a_bits is not None:
        require(calibration is not None,
                "activation quantization needs calibration (a Calibration or a list of inputs)")

    qnet = copy.deepcopy(net).eval()
    for p in qnet.parameters():
        p.requires_grad_(False)
    targets = [(n, m) for n, m in qnet.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and not any(fnmatch.fnmatch(n, pat) for pat in config.skip)]
    require(len(targets) > 0, "the network has no nn.Conv2d / nn.Linear layers to quantize")
    for k, (name, mod) in enumerate(targets):
        act = None
        if config.a_bits is not None:
            act = ActQuantizer(config.a_bits, config.a_symmetric, config.a_method, config.per_timestep,
                               config.mse_grid, config.a_min_ratio, seed=k)
        ql = QuantLayer(mod, config.w_bits, config.w_method, act, config.mse_grid, config.w_min_ratio)
        parent_name, _, child = name.rpartition(".")
        parent = qnet.get_submodule(parent_name) if parent_name else qnet
        setattr(parent, child, ql)
    qm = QuantizedModel(qnet, config)

    # calibration on full-precision trajectories (weights FP, quantizers observing)
    inputs: list[tuple[torch.Tensor, torch.Tensor, int | None]] = []
    report_evals = 8
    if calibration is not None:
        qm.set_mode(weights=False, acts=False)
        for q in qm.act_quantizers():
            q.mode = "calibrate"
        rec = _Recorder(qm)
        with torch.no_grad():
            if isinstance(calibration, Calibration):
                report_evals = calibration.report_evals
                shape = tuple(calibration.shape) if calibration.shape is not None else _default_shape(net)
                device = next(qnet.parameters()).device
                for j in range(calibration.trajectories):
                    g = torch.Generator().manual_seed(calibration.seed * 7919 + j)
                    x_T = torch.randn((calibration.batch_size, *shape), generator=g).to(device)
                    sample(rec, calibration.schedule, x_T, calibration.T, calibration.eta, generator=g,
                           spacing=calibration.spacing)
            else:
                for item in calibration:
                    require(isinstance(item, (tuple, list)) and len(item) in (2, 3),
                            "calibration inputs must be (x, t) or (x, t, step_index) tuples")
                    x, t = item[0], item[1]
                    t = t if isinstance(t, torch.Tensor) else torch.full((x.shape[0],), int(t), dtype=torch.long)
                    if len(item) == 3 and item[2] is not None:
                        rec.begin_step(int(item[2]), int(t.reshape(-1)[0]))
                    else:
                        rec.step = None
                        qm.clear_step()
                    rec(x, t)
        inputs = rec.inputs
        for q in qm.act_quantizers():
            q.finalize()
    qm.set_mode(weights=True, acts=config.a_bits is not None)
    qm.clear_step()
    qm.report = _build_report(qm, inputs, report_evals)
    return qm


def _pick(inputs: list, n: int) -> list:
    if n <= 0 or not inputs:
        return []
    if len(inputs) <= n:
        return list(inputs)
    idx = torch.linspace(0, len(inputs) - 1, n).round().long().tolist()
    return [inputs[i] for i in idx]


def _set_step(qm: QuantizedModel, i: int | None, t: torch.Tensor) -> None:
    if i is None:
        qm.clear_step()
    else:
        qm.begin_step(i, int(t.reshape(-1)[0]))


@torch.no_grad()
def _build_report(qm: QuantizedModel, inputs: list, n_replay: int) -> QuantReport:
    layers = qm.quant_layers()
    replay = _pick(inputs, n_replay)
    eps_num = eps_den = 0.0
    if replay:
        for m in layers.values():
            m.measuring, m._stats = True, [0.0] * 6
        fp_out = []
        for x, t, i in replay:
            _set_step(qm, i, t)
            fp_out.append(qm(x, t))
        for m in layers.values():
            m.measuring = False
        for (x, t, i), y in zip(replay, fp_out):
            _set_step(qm, i, t)
            yq = qm(x, t)
            eps_num += float((yq - y).double().pow(2).sum())
            eps_den += float(y.double().pow(2).sum())
        qm.clear_step()
    rows = []
    for name, m in layers.items():
        s = m._stats
        act = m.act
        rows.append(LayerReport(
            name=name, kind=type(m.layer).__name__, w_bits=m.w_bits, a_bits=act.bits if act is not None else None,
            weight_rel_err=m.weight_rel_err(), w_clip_ratio_mean=m.clip_ratio_mean,
            act_rel_err=(math.sqrt(s[0] / s[1]) if s[1] > 0 else 0.0) if (replay and act is not None) else None,
            out_rel_err=(math.sqrt(s[2] / s[3]) if s[3] > 0 else 0.0) if replay else None,
            act_range=act.observed if act is not None and math.isfinite(act.observed[0]) else None,
        ))
    return QuantReport(qm.config, rows, math.sqrt(eps_num / eps_den) if eps_den > 0 else None,
                       calibration_evals=len(inputs), replayed_evals=len(replay))
