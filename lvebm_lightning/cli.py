"""Console commands on a trained checkpoint, with ``key=value`` arguments as for ``train.py``:

    lvebm-sample ckpt=<run>/checkpoints/last.ckpt n=10000            # -> <run>/samples.npy
    lvebm-infer  ckpt=<run>/checkpoints/last.ckpt data=points.npy    # -> <run>/posterior.npz
    lvebm-eval   ckpt=<run>/checkpoints/last.ckpt data=test seed=3   # -> <run>/eval.json

(or ``python -m lvebm_lightning.cli sample|infer|eval key=value ...``); ``help`` lists a command's arguments.

Each command's arguments are a typed dataclass, parsed by OmegaConf (``from_dotlist`` merged into the structured
config), so every command gives the same one-line ``lvebm-<command>: error: ...`` and exit status 2 for an
unknown, repeated, missing or mistyped argument, an out-of-range value, a checkpoint or data file that does not
exist and an unusable output path. All of that is checked before torch and Lightning are imported, so ``help``
and a typo answer at once; the work (``lvebm_lightning.inference``) follows. Without ``out`` the result is
written into the checkpoint's run directory (``<run>/checkpoints/last.ckpt`` -> ``<run>/``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ValidationError

SPLITS = ("val", "test")


class UsageError(ValueError):
    """A command line that cannot be run (unknown or missing argument, bad value, unusable output path)."""


def arg(default: Any, help: str, bound: str | None = None) -> Any:
    """A dataclass field with its ``help`` line and, for numbers, its range: ``bound`` "positive" (> 0) or
    "non_negative" (>= 0)."""
    return dataclasses.field(default=default, metadata={"help": help, "bound": bound})


def missing_data(data: str) -> str:
    """The message for ``data=<data>`` that is neither a split name nor an existing file."""
    return (f"data={data} is neither a split of the run ({', '.join(SPLITS)}) nor an existing file; pass data=val, "
            "data=test or a .npy / .npz / .csv file of points [N, dx].")


POSITIVE, NON_NEGATIVE = "positive", "non_negative"
RUN_STREAM = "null: the run's evaluation stream at the checkpoint's step"



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
    n_steps: int | None = arg(None, "Langevin steps of each chain (null: the run's sampler.eval.n_steps)",
                                 NON_NEGATIVE)
    step_size: float | None = arg(None, "Langevin step size (null: the run's sampler.eval step size)", POSITIVE)
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
        None, "Langevin steps of the conditional chains (null: the run's sampler.eval.n_steps)", NON_NEGATIVE
    )
    step_size: float | None = arg(
        None, "Langevin step size (null: the run's sampler.posterior.step_size)", POSITIVE
    )
    seed: int | None = arg(None, f"seed of the chains ({RUN_STREAM})")
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


def _checkpoint(path: str) -> Path:
    ckpt = Path(path).expanduser()
    if not ckpt.exists():
        raise UsageError(f"Checkpoint not found: {ckpt}; pass ckpt=<run dir>/checkpoints/last.ckpt.")
    if ckpt.is_dir():
        raise UsageError(f"Checkpoint path {ckpt} is a folder; pass the .ckpt file inside it (e.g. last.ckpt).")
    return ckpt


def _data(data: str) -> None:
    if data not in SPLITS and not Path(data).expanduser().exists():
        raise UsageError(missing_data(data))


def _output(path: str | None, ckpt: Path, default: str, allowed: tuple[str, ...], what: str) -> Path:
    """The output path, checked before any work: a known extension and a folder that exists or can be made.
    Without one, ``default`` in the checkpoint's run directory (the folder above ``checkpoints/``)."""
    if path is None:
        run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        return run_dir / default
    out = Path(path).expanduser()
    if out.suffix.lower() not in allowed:
        raise UsageError(f"out={path}: {what} are written as {' or '.join(allowed)}; give out=<name>{allowed[0]}.")
    if out.is_dir():
        raise UsageError(f"out={path} is a folder; give a file name, e.g. out={out / ('result' + allowed[0])}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _write_table(path: Path, arrays: dict[str, Any]) -> None:
    """Arrays ``[n, d_j]`` side by side: ``.npy`` one [n, sum d_j] array, ``.npz`` one entry each, ``.csv`` with
    a header (x1, x2, ..., z1, ...)."""
    import numpy as np

    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez(path, **arrays)
        return
    table = np.concatenate(list(arrays.values()), axis=1)
    if suffix == ".npy":
        np.save(path, table)
    else:
        header = ",".join(f"{k}{j + 1}" for k, a in arrays.items() for j in range(a.shape[1]))
        np.savetxt(path, table, delimiter=",", header=header, comments="", fmt="%.8g")


def _sample(a: SampleArgs) -> None:
    ckpt = _checkpoint(a.ckpt)
    out = _output(a.out, ckpt, "samples.npy", (".npy", ".npz", ".csv"), "samples")
    from lvebm_lightning.inference import load, sample

    model = load(ckpt, a.device)
    result = sample(model, a.n, pairs=a.pairs, source=a.source, n_steps=a.n_steps, step_size=a.step_size,
                    seed=a.seed, device=a.device)
    arrays = {"x": result[0], "z": result[1]} if a.pairs else {"x": result}
    _write_table(out, arrays)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
    print(f"wrote {len(arrays['x'])} samples ({a.source}, step {model.step}; {shapes}, x in data units) to {out}")


def _infer(a: InferArgs) -> None:
    ckpt = _checkpoint(a.ckpt)
    _data(a.data)
    out = _output(a.out, ckpt, "posterior.npz", (".npz", ".npy"), "posterior particles")
    import numpy as np

    from lvebm_lightning.inference import infer, load, load_data

    model = load(ckpt, a.device)
    x = load_data(model, a.data)
    z = infer(model, x, a.n_particles, n_steps=a.n_steps, step_size=a.step_size, seed=a.seed)
    if out.suffix.lower() == ".npz":
        np.savez(out, x=x.numpy(), z=z)
    else:
        np.save(out, z)
    print(f"wrote posterior particles z {list(z.shape)} (data, particle, latent) for {a.data} to {out}")


def _eval(a: EvalArgs) -> None:
    ckpt = _checkpoint(a.ckpt)
    _data(a.data)
    out = _output(a.out, ckpt, "eval.json", (".json",), "metrics")
    from lvebm_lightning.inference import evaluate

    metrics = evaluate(
        ckpt, a.data, n_samples=a.n_samples, n_particles=a.n_particles, elbo_samples=a.elbo_samples,
        quadrature_points=a.quadrature_points, seed=a.seed, device=a.device,
    )
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{metrics['checkpoint']} (step {metrics['step']}) on {metrics['data']} ({metrics['n_data']} rows)")
    print(f"  {'metric':<22} value")
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"  {key:<22} {value:.6g}")
    print(f"  (W2 on {metrics['n_w2']} points a side; floor against the {metrics['w2_floor_reference']})")
    if "elbo_note" in metrics:
        print(f"  ({metrics['elbo_note']})")
    print(f"wrote {out}")


def _run(command: str, schema: type, summary: str, work: Callable[[Any], None], argv: Sequence[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(usage(command, schema, summary))
        sys.exit(0 if argv else 2)
    try:
        args = parse(argv, schema, command)
        try:
            work(args)
        except ValueError as err:  # the error types live beside torch: import them only when one is raised
            if isinstance(err, UsageError):
                raise
            from lvebm_lightning.checkpointing import CheckpointError
            from lvebm_lightning.data.files import DataFileError
            from lvebm_lightning.inference import InferenceError

            if isinstance(err, (CheckpointError, DataFileError, InferenceError)):
                raise UsageError(str(err)) from None
            raise
    except UsageError as err:
        print(f"{command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)


def sample_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-sample``: model samples of x (or (x, z), or the pool) from a checkpoint."""
    _run("lvebm-sample", SampleArgs, "Model samples from a checkpoint, in the data's units.", _sample, argv)


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-infer``: posterior particles z | x for new data."""
    _run("lvebm-infer", InferArgs, "Posterior particles z | x for new data (fresh conditional chains).", _infer, argv)


def eval_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-eval``: W2, NLL and ELBO of a checkpoint on a test set, as a table and a JSON file."""
    _run("lvebm-eval", EvalArgs, "W2 (with its floor), exact NLL and ELBO of a checkpoint on a test set.", _eval, argv)


COMMANDS = {"sample": sample_main, "infer": infer_main, "eval": eval_main}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lvebm_lightning.cli sample|infer|eval key=value ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m lvebm_lightning.cli {{{','.join(COMMANDS)}}} key=value ...", file=sys.stderr)
        sys.exit(2)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
