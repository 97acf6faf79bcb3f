"""The console commands' arguments: one typed dataclass per command, parsed from ``key=value`` by OmegaConf.

``parse`` merges ``OmegaConf.from_dotlist(argv)`` into ``OmegaConf.structured(<Command>Args)``, so a wrong type,
an unknown, repeated or missing key and a value out of its range (``arg(..., bound)``) give the same one-line
``UsageError`` for every command, and ``usage`` builds every command's ``help`` from the same fields. Nothing
here imports torch (``inference.commands`` imports the heavy parts only after the arguments are checked).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ValidationError

from lvebm_lightning.inference.options import INFER_START


class UsageError(ValueError):
    """A command line that cannot be run (unknown or missing argument, bad value, unusable output path)."""


def arg(default: Any, help: str, bound: str | None = None) -> Any:
    """A dataclass field with its ``help`` line and, for numbers, its range: ``bound`` "positive" (> 0) or
    "non_negative" (>= 0)."""
    return dataclasses.field(default=default, metadata={"help": help, "bound": bound})


POSITIVE, NON_NEGATIVE = "positive", "non_negative"
RUN_STREAM = "null: the run's evaluation stream at the checkpoint's step"
INFER_STARTS = ("where the chains start: neighbours (the persistent particles of the training data nearest to each "
                "point; without a store, the amortised encoder's draws, else N(0, I)) or prior (N(0, I))")
RECONSTRUCT_STARTS = ("where the chains start: neighbours (the training data nearest in the observed coordinates: x_m "
                      "from their own values, z from their persistent particles; without a store, z from the amortised "
                      "encoder at that completed point, else N(0, I); a model without latents: x_m alone) or prior "
                      "(N(0, I))")
CHECK = ("where a second set of as many chains starts, whose agreement with the first is checked per datum "
         "(neighbours: the next nearest; prior: N(0, I); none: no check); the output holds between_set_t, "
         "t_threshold and disagree, and the last line the share of data that disagree")



@dataclasses.dataclass
class SampleArgs:
    ckpt: str = arg(MISSING, "checkpoint: a .ckpt written by train.py")
    n: int | None = arg(
        10_000, "samples: the number to draw (source=pool: at most the pool size, null for all)", POSITIVE
    )
    out: str | None = arg(
        None, "output: .npy ([n, dx], or [n, dx + dz] with pairs), .npz (x, z) or .csv (null: <run dir>/samples.npy)"
    )
    pairs: bool = arg(False, "also write each sample's latent z")
    source: str = arg("chains", "chains (fresh long chains: the model's p(x)) or pool (the persistent pool)")
    n_steps: int | None = arg(None, "Langevin steps of each chain (null: the run's sampler.long_chains.n_steps)",
                                 NON_NEGATIVE)
    step_size: float | None = arg(None, "Langevin step size (null: the run's sampler.long_chains step size)", POSITIVE)
    seed: int | None = arg(None, f"seed of the chains ({RUN_STREAM})")
    device: str = arg("auto", "cpu, cuda, cuda:1, or auto (cuda when available)")


@dataclasses.dataclass
class InferArgs:
    ckpt: str = arg(MISSING, "checkpoint: a .ckpt written by train.py")
    data: str = arg(MISSING, "points: .npy, .npz or .csv [B, dx] in data units, or val / test")
    n_particles: int = arg(64, "K, posterior particles per datum", POSITIVE)
    out: str | None = arg(
        None, "output: .npz (x [B, dx], z [B, K, dz]) or .npy (z) (null: <run dir>/posterior.npz)"
    )
    n_steps: int | None = arg(
        None, "Langevin steps of the conditional chains (null: the run's sampler.long_chains.n_steps)", NON_NEGATIVE
    )
    step_size: float | None = arg(
        None, "Langevin step size (null: the run's sampler.posterior.step_size)", POSITIVE
    )
    seed: int | None = arg(None, f"seed of the chains ({RUN_STREAM})")
    start: str = arg(INFER_START, INFER_STARTS)
    check: str = arg("prior", CHECK + " (needs out=<name>.npz)")
    device: str = arg("auto", "cpu, cuda, cuda:1, or auto (cuda when available)")


@dataclasses.dataclass
class ReconstructArgs:
    ckpt: str = arg(MISSING, "checkpoint: a .ckpt written by train.py")
    data: str = arg(MISSING, "partial points: .npy, .npz or .csv [B, dx] in data units, NaN where unobserved")
    n_samples: int = arg(100, "S, samples of the missing coordinates per datum", POSITIVE)
    out: str | None = arg(
        None, "output: .npz (samples [B, S, dx], mean [B, dx], z [B, S, dz], missing, and the check's arrays) "
        "(null: <run dir>/recon.npz)"
    )
    n_steps: int | None = arg(
        None, "Langevin steps of the conditional chains (null: the run's sampler.long_chains.n_steps)", NON_NEGATIVE
    )
    step_size: float | None = arg(None, "Langevin step size (null: the run's sampler.long_chains step size)", POSITIVE)
    seed: int | None = arg(None, f"seed of the chains ({RUN_STREAM})")
    start: str = arg("neighbours", RECONSTRUCT_STARTS)
    check: str = arg("prior", CHECK)
    device: str = arg("auto", "cpu, cuda, cuda:1, or auto (cuda when available)")


@dataclasses.dataclass
class EvalArgs:
    ckpt: str = arg(MISSING, "checkpoint: a .ckpt written by train.py")
    data: str = arg(MISSING, "test set: .npy, .npz or .csv [N, dx] in data units, or val / test")
    out: str | None = arg(None, "output: the metrics as .json (null: <run dir>/eval.json)")
    n_samples: int | None = arg(None, "model samples and data points for W2 (null: the run's)", POSITIVE)
    n_particles: int | None = arg(
        None, "K posterior particles per datum for the ELBO (null: the training K)", POSITIVE
    )
    elbo_samples: int | None = arg(None, "S draws from each datum's q for the ELBO (null: the run's)", POSITIVE)
    quadrature_points: int | None = arg(
        None, "grid points per dimension for the exact NLL, dx + dz <= 3 (null: the run's)", POSITIVE
    )
    seed: int | None = arg(
        None, f"seed of the model samples, chains and ELBO draws ({RUN_STREAM}, which reproduces training's numbers)"
    )
    device: str = arg("auto", "cpu, cuda, cuda:1, or auto (cuda when available)")


def _kind(annotation: Any) -> str:
    text = str(annotation)
    return "a whole number" if "int" in text else "a number" if "float" in text else "true or false" \
        if "bool" in text else "text"


def parse(argv: Sequence[str], schema: type, command: str) -> Any:
    """``key=value`` arguments into an instance of dataclass ``schema``; raises a one-line ``UsageError``."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    seen: set[str] = set()
    for item in argv:
        key, sep, value = item.partition("=")
        if key.startswith("-"):
            raise UsageError(f"write {key.lstrip('-')}={value} (key=value, no dashes), got {item!r}.")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}; see `{command} help`.")
        if key not in fields:
            raise UsageError(f"unknown argument {key!r}; {command} takes {', '.join(fields)} (see `{command} help`).")
        if key in seen:
            raise UsageError(f"{key} is given twice; keep one {key}=...")
        seen.add(key)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(list(argv)))
    except ValidationError as err:
        key = str(err.key)
        value = dict(item.partition("=")[::2] for item in argv).get(key)
        raise UsageError(f"{key} must be {_kind(fields[key].type)}, got {value!r}.") from None
    missing = [k for k in fields if OmegaConf.is_missing(cfg, k)]
    if missing:
        needed = ", ".join(f"{k}=<{fields[k].metadata['help'].split(':')[0]}>" for k in missing)
        raise UsageError(f"missing {needed}; see `{command} help`.")
    args = OmegaConf.to_object(cfg)
    for key, f in fields.items():
        value, bound = getattr(args, key), f.metadata["bound"]
        if value is not None and bound == "positive" and not value > 0:
            raise UsageError(f"{key} must be a positive number, got {value!r}.")
        if value is not None and bound == "non_negative" and not value >= 0:
            raise UsageError(f"{key} must be a whole number >= 0, got {value!r}.")
    return args


def usage(command: str, schema: type, summary: str) -> str:
    fields = dataclasses.fields(schema)
    required = [f.name for f in fields if f.default is MISSING]
    lines = [f"usage: {command} " + " ".join(f"{k}=..." for k in required) + " [key=value ...]", summary, ""]
    for f in fields:
        shown = "null" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else f.default
        default = "required" if f.default is MISSING else f"default {shown}"
        lines.append(f"  {f.name:<18} {f.metadata['help']} ({default})")
    return "\n".join(lines)
