"""Samplers: the update rule of the denoising loop, chosen per request.

A model's default is the scheduler class its pipeline ships (model_index.json / the scheduler's
config), with that config; a request may name another with the `sampler` field. The others get
a config translated from the shipped one (its training steps and its shift), so switching the
solver keeps the model's noise schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omni.samplers.base import Sampler, Schedule, ScheduleInputs
from omni.samplers.dpm import DPMSolverSampler
from omni.samplers.euler import EulerSampler
from omni.samplers.unipc import UniPCSampler

__all__ = ["SAMPLERS", "Sampler", "Schedule", "ScheduleInputs", "samplers_for"]

SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls for cls in (EulerSampler, UniPCSampler, DPMSolverSampler)
}
BY_SCHEDULER = {cls.scheduler_class: cls for cls in SAMPLERS.values()}

# The configs a sampler gets when the model ships another scheduler: diffusers' settings for a
# flow-matching model (Wan's for UniPC), with the model's training steps and shift added.
FLOW_SOLVER = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "solver_order": 2}
DERIVED_CONFIGS: dict[str, dict[str, Any]] = {
    "euler": {},
    "unipc": {**FLOW_SOLVER, "solver_type": "bh2", "predict_x0": True, "lower_order_final": True},
    "dpm++2m": {**FLOW_SOLVER, "algorithm_type": "dpmsolver++", "solver_type": "midpoint"},
}
SHARED_KEYS = ("num_train_timesteps", "use_dynamic_shifting", "time_shift_type")


def shipped_shift(config: Mapping[str, Any]) -> float:
    """The static shift of a scheduler config, whichever key its class uses."""
    return config.get("shift", config.get("flow_shift", 1.0))


def samplers_for(scheduler_config: Mapping[str, Any]) -> tuple[str, dict[str, Sampler]]:
    """(the default sampler's name, every sampler by name) for a model's scheduler config."""
    shipped = scheduler_config.get("_class_name")
    default = BY_SCHEDULER.get(shipped)
    if default is None:
        known = ", ".join(sorted(BY_SCHEDULER))
        raise NotImplementedError(f"omni has no sampler for {shipped} (it has {known})")
    shared = {k: scheduler_config[k] for k in SHARED_KEYS if k in scheduler_config}
    shift = shipped_shift(scheduler_config)
    samplers = {}
    for name, cls in SAMPLERS.items():
        if cls is default:
            config = dict(scheduler_config)
        else:
            shift_key = "shift" if cls is EulerSampler else "flow_shift"
            config = {**DERIVED_CONFIGS[name], **shared, shift_key: shift}
            if cls is not DPMSolverSampler and scheduler_config.get("shift_terminal"):
                config["shift_terminal"] = scheduler_config["shift_terminal"]
        samplers[name] = cls(complete_config(cls.scheduler_class, config))
    return default.name, samplers


def complete_config(scheduler_class: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with every field the diffusers class defaults filled in."""
    import diffusers

    return dict(getattr(diffusers, scheduler_class).from_config(dict(config)).config)
