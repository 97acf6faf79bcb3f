"""The ranges of the generated datasets' parameters (``data.options.<name>=<value>``), checked before any datum is
drawn, so that a value the formulas of ``data/systems.py`` cannot use answers in one line instead of giving empty,
infinite or meaningless data."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

Rule = tuple[Callable[[Any, dict[str, Any]], bool], str]
"""(holds(value, all parameters), what it must be)."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


FINITE: Rule = (lambda v, p: _number(v), "a finite number")
POSITIVE: Rule = (lambda v, p: _number(v) and v > 0, "a number > 0")
NON_NEGATIVE: Rule = (lambda v, p: _number(v) and v >= 0, "a number >= 0")
COUNT: Rule = (lambda v, p: _whole(v) and v >= 1, "a whole number >= 1")
WHOLE_NON_NEGATIVE: Rule = (lambda v, p: _whole(v) and v >= 0, "a whole number >= 0")


def _vector(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_number(a) for a in v)


def _loadings(v: Any, p: dict[str, Any]) -> bool:
    rows = isinstance(v, (list, tuple)) and len(v) > 0 and all(_vector(r) for r in v)
    return rows and len({len(r) for r in v}) == 1 and _vector(p["mu"]) and len(v) == len(p["mu"])


RANGES: dict[str, dict[str, Rule]] = {
    "double_well": {"a": POSITIVE, "b": FINITE},
    "mueller_brown": {"temperature": POSITIVE},
    "eight_gaussians": {"radius": NON_NEGATIVE, "std": POSITIVE},
    "lorenz63": {"sigma": FINITE, "rho": FINITE, "beta": FINITE, "dt": POSITIVE, "n_chains": COUNT,
                 "burn_in": NON_NEGATIVE, "stride": POSITIVE},
    "oscillator": {"temperature": POSITIVE},
    "phi4": {"side": (lambda v, p: _whole(v) and v >= 2, "a whole number >= 2"), "kappa": FINITE, "lam": POSITIVE,
             "step": POSITIVE, "n_leapfrog": COUNT, "n_chains": COUNT, "burn_in": WHOLE_NON_NEGATIVE, "thin": COUNT},
    "linear_gaussian": {
        "w": (_loadings, "a non-empty rectangular list of lists of numbers [dx, dz], one row per entry of mu"),
        "mu": (lambda v, p: _vector(v), "a non-empty list of numbers (the mean, dx entries)"),
        "sigma": POSITIVE,
    },
    "pendulum": {
        "n_obs": COUNT, "dt_obs": POSITIVE, "omega0": POSITIVE, "noise": NON_NEGATIVE, "dt": POSITIVE,
        "h_min": (lambda v, p: _number(v) and 0 < v < p["h_max"], "a number in (0, h_max)"),
        "h_max": (lambda v, p: _number(v) and _number(p["omega0"]) and v < 2 * p["omega0"] ** 2,
                  "a number below the separatrix energy 2 omega0^2 (librating trajectories only)"),
    },
}


def check_options(system: Any, options: dict[str, Any]) -> None:
    """Raise a one-line ValueError for the first parameter of dataset ``system`` (a ``data/systems.py`` instance
    built with ``options``) outside its range."""
    params = {f.name: getattr(system, f.name) for f in fields(system)}
    for key, (holds, what) in RANGES[system.name].items():
        if not holds(params[key], params):
            given = f"data.options.{key}={params[key]!r}" if key in options else f"its default {key}={params[key]!r}"
            raise ValueError(
                f"dataset {system.name!r}: {given} is out of range: {key} must be {what} (formula: "
                f"lvebm_lightning/data/systems.py, {type(system).__name__}); set data.options.{key}=<value>."
            )
