"""Console commands on a trained checkpoint, with ``key=value`` arguments as for ``train.py``:

    lvebm-sample ckpt=<run>/checkpoints/last.ckpt n=10000 out=samples.npy
    lvebm-infer  ckpt=<run>/checkpoints/last.ckpt data=points.npy n_particles=64 out=posterior.npz
    lvebm-eval   ckpt=<run>/checkpoints/last.ckpt data=test.npy

(or ``python -m lvebm_lightning.cli sample|infer|eval key=value ...``); ``help`` lists a command's arguments.
Each checks its arguments, the checkpoint and the data before any work and stops on the first problem with a
one-line ``lvebm-<command>: error: ...`` and exit status 2. The work is done by ``lvebm_lightning.inference``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lvebm_lightning.checkpointing import CheckpointError
from lvebm_lightning.data.files import DataFileError
from lvebm_lightning.inference import InferenceError, evaluate, infer, load, load_data, sample


class UsageError(ValueError):
    """A command line that cannot be run (unknown or missing argument, bad value, unusable output path)."""


@dataclass(frozen=True)
class Arg:
    kind: type  # str, int, float or bool
    default: Any
    help: str
    required: bool = False


def _convert(name: str, text: str, arg: Arg) -> Any:
    if text.lower() in ("null", "none", "~") and not arg.required:
        return None
    if arg.kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"{name} must be true or false, got {text!r}.")
        return text.lower() in ("true", "1", "yes")
    if arg.kind in (int, float):
        try:
            return arg.kind(text)
        except ValueError:
            kind = "a whole number" if arg.kind is int else "a number"
            raise UsageError(f"{name} must be {kind}, got {text!r}.") from None
    return text


def parse(argv: Sequence[str], spec: dict[str, Arg], command: str) -> dict[str, Any]:
    """``key=value`` arguments into a dict of typed values, defaults filled in; raises ``UsageError``."""
    given: dict[str, str] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}; see `{command} help`.")
        if key.startswith("-"):
            raise UsageError(f"write {key.lstrip('-')}={value} (key=value, no dashes), got {item!r}.")
        if key not in spec:
            raise UsageError(f"unknown argument {key!r}; {command} takes {', '.join(spec)} (see `{command} help`).")
        if key in given:
            raise UsageError(f"{key} is given twice; keep one {key}=...")
        given[key] = value
    missing = [k for k, a in spec.items() if a.required and k not in given]
    if missing:
        needed = ", ".join(f"{k}=<{spec[k].help.split(':')[0]}>" for k in missing)
        raise UsageError(f"missing {needed}; see `{command} help`.")
    return {k: _convert(k, given[k], a) if k in given else a.default for k, a in spec.items()}


def usage(command: str, spec: dict[str, Arg], summary: str) -> str:
    lines = [f"usage: {command} " + " ".join(f"{k}=..." for k, a in spec.items() if a.required) + " [key=value ...]",
             summary, ""]
    for key, arg in spec.items():
        default = "required" if arg.required else f"default {arg.default}"
        lines.append(f"  {key:<18} {arg.help} ({default})")
    return "\n".join(lines)


def _output(path: str, allowed: tuple[str, ...], what: str) -> Path:
    """Check the output path before any work: a known extension and a folder that exists or can be made."""
    out = Path(path).expanduser()
    if out.suffix.lower() not in allowed:
        raise UsageError(f"out={path}: {what} are written as {' or '.join(allowed)}; give out=<name>{allowed[0]}.")
    if out.is_dir():
        raise UsageError(f"out={path} is a folder; give a file name, e.g. out={out / ('result' + allowed[0])}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _write_table(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Arrays ``[n, d_j]`` side by side: ``.npy`` one [n, sum d_j] array, ``.npz`` one entry each, ``.csv`` with
    a header (x1, x2, ..., z1, ...)."""
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


DEVICE = Arg(str, "auto", "cpu, cuda, cuda:1, or auto (cuda when available)")
CKPT = Arg(str, None, "checkpoint: a .ckpt written by train.py", required=True)
SEED = Arg(int, None, "seed of the chains (null: the run's evaluation stream at the checkpoint's step)")

SAMPLE = {
    "ckpt": CKPT,
    "n": Arg(int, 10_000, "samples: the number to draw (source=pool: at most the pool size, null for all)"),
    "out": Arg(str, "samples.npy", "output: .npy ([n, dx], or [n, dx + dz] with pairs), .npz (x, z) or .csv"),
    "pairs": Arg(bool, False, "also write each sample's latent z"),
    "source": Arg(str, "chains", "chains (fresh long chains: the model's p(x)) or pool (the persistent pool)"),
    "n_steps": Arg(int, None, "Langevin steps of each chain (null: the run's sampler.eval.n_steps)"),
    "step_size": Arg(float, None, "Langevin step size (null: the run's sampler.eval step size)"),
    "seed": SEED,
    "device": DEVICE,
}
INFER = {
    "ckpt": CKPT,
    "data": Arg(str, None, "points: .npy, .npz or .csv [B, dx] in data units, or val / test", required=True),
    "n_particles": Arg(int, 64, "K, posterior particles per datum"),
    "out": Arg(str, "posterior.npz", "output: .npz (x [B, dx], z [B, K, dz]) or .npy (z)"),
    "n_steps": Arg(int, None, "Langevin steps of the conditional chains (null: the run's sampler.eval.n_steps)"),
    "step_size": Arg(float, None, "Langevin step size (null: the run's sampler.posterior.step_size)"),
    "seed": SEED,
    "device": DEVICE,
}
EVAL = {
    "ckpt": CKPT,
    "data": Arg(str, None, "test set: .npy, .npz or .csv [N, dx] in data units, or val / test", required=True),
    "out": Arg(str, "eval.json", "output: the metrics as .json"),
    "n_samples": Arg(int, None, "model samples and data points for W2 (null: the run's)"),
    "n_particles": Arg(int, None, "K posterior particles per datum for the ELBO (null: the training K)"),
    "elbo_samples": Arg(int, None, "S draws from each datum's q for the ELBO (null: the run's)"),
    "quadrature_points": Arg(int, None, "grid points per dimension for the exact NLL, dx + dz <= 3 (null: the run's)"),
    "device": DEVICE,
}


def _run(command: str, spec: dict[str, Arg], summary: str, work: Callable[[dict[str, Any]], None],
         argv: Sequence[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(usage(command, spec, summary))
        sys.exit(0 if argv else 2)
    try:
        work(parse(argv, spec, command))
    except (UsageError, CheckpointError, DataFileError, InferenceError) as err:
        print(f"{command}: error: {err}", file=sys.stderr)
        sys.exit(2)


def _sample(a: dict[str, Any]) -> None:
    out = _output(a["out"], (".npy", ".npz", ".csv"), "samples")
    model = load(a["ckpt"], a["device"])
    result = sample(
        model, a["n"], pairs=a["pairs"], source=a["source"], n_steps=a["n_steps"], step_size=a["step_size"],
        seed=a["seed"], device=a["device"],
    )
    arrays = {"x": result[0], "z": result[1]} if a["pairs"] else {"x": result}
    _write_table(out, arrays)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
    print(f"wrote {len(arrays['x'])} samples ({a['source']}, step {model.step}; {shapes}, x in data units) to {out}")


def _infer(a: dict[str, Any]) -> None:
    out = _output(a["out"], (".npz", ".npy"), "posterior particles")
    model = load(a["ckpt"], a["device"])
    x = load_data(model, a["data"])
    z = infer(model, x, a["n_particles"], n_steps=a["n_steps"], step_size=a["step_size"], seed=a["seed"])
    if out.suffix.lower() == ".npz":
        np.savez(out, x=x.numpy(), z=z)
    else:
        np.save(out, z)
    print(f"wrote posterior particles z {list(z.shape)} (data, particle, latent) for {a['data']} to {out}")


def _eval(a: dict[str, Any]) -> None:
    out = _output(a["out"], (".json",), "metrics")
    metrics = evaluate(
        a["ckpt"], a["data"], n_samples=a["n_samples"], n_particles=a["n_particles"],
        elbo_samples=a["elbo_samples"], quadrature_points=a["quadrature_points"], device=a["device"],
    )
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{metrics['checkpoint']} (step {metrics['step']}) on {metrics['data']} ({metrics['n_data']} rows)")
    print(f"  {'metric':<22} value")
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"  {key:<22} {value:.6g}")
    print(f"  (W2 on {metrics['n_w2']} points a side; floor against the {metrics['w2_floor_reference']})")
    print(f"wrote {out}")


def sample_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-sample``: model samples of x (or (x, z), or the pool) from a checkpoint."""
    _run("lvebm-sample", SAMPLE, "Model samples from a checkpoint, in the data's units.", _sample, argv)


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-infer``: posterior particles z | x for new data."""
    _run("lvebm-infer", INFER, "Posterior particles z | x for new data (fresh conditional chains).", _infer, argv)


def eval_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-eval``: W2, NLL and ELBO of a checkpoint on a test set, as a table and a JSON file."""
    _run("lvebm-eval", EVAL, "W2 (with its floor), exact NLL and ELBO of a checkpoint on a test set.", _eval, argv)


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
