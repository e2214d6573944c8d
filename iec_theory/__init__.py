"""IEC theory: schedules, the DDIM/IEC sampler, theorems, bounds and the experiment harness."""

from .ddim import StepCoefficients, apply_step, ddim_coefficients, step_coefficients
from .errors import ConfigError
from .iec import IECConfig, StepSelection
from .sampler import NoiseSource, StepRecord, Trajectory, sample
from .schedules import Schedule

__all__ = [
    "ConfigError",
    "IECConfig",
    "NoiseSource",
    "Schedule",
    "StepCoefficients",
    "StepRecord",
    "StepSelection",
    "Trajectory",
    "apply_step",
    "ddim_coefficients",
    "sample",
    "step_coefficients",
]
