"""Console commands on a trained checkpoint, with ``key=value`` arguments as for ``train.py``:

    lvebm-sample ckpt=<run>/checkpoints/last.ckpt n=10000            # -> <run>/samples.npy
    lvebm-infer  ckpt=<run>/checkpoints/last.ckpt data=points.npy    # -> <run>/posterior.npz
    lvebm-eval   ckpt=<run>/checkpoints/last.ckpt data=test seed=3   # -> <run>/eval.json
    lvebm-reconstruct ckpt=<run>/checkpoints/last.ckpt data=partial.npy   # -> <run>/recon.npz (NaN: missing)

(or ``python -m lvebm_lightning.inference.commands sample|infer|eval|reconstruct key=value ...``); ``help`` lists a
command's arguments.

Each command's arguments are a typed dataclass, parsed by OmegaConf (``from_dotlist`` merged into the structured
config), so every command gives the same one-line ``lvebm-<command>: error: ...`` and exit status 2 for an
unknown, repeated, missing or mistyped argument, an out-of-range value, a checkpoint or data file that does not
exist and an unusable output path. All of that is checked before torch and Lightning are imported, so ``help``
and a typo answer at once; the work (``lvebm_lightning.inference``) follows. Without ``out`` the result is
written into the checkpoint's run directory (``<run>/checkpoints/last.ckpt`` -> ``<run>/``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lvebm_lightning.errors import exit_with_error
from lvebm_lightning.inference.arguments import (
    EvalArgs,
    InferArgs,
    ReconstructArgs,
    SampleArgs,
    UsageError,
    parse,
    usage,
)
from lvebm_lightning.inference.options import CHECKS, SPLITS, STARTS, missing_data


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
    existing = next(p for p in out.absolute().parents if p.exists())  # made only when the result is written
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UsageError(f"out={path}: {existing} is not a folder this user can write into; give another out=.")
    return out


def _ready(out: Path) -> Path:
    """``out`` with its folder made: called once the work is done, so a failed command writes nothing."""
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
    _write_table(_ready(out), arrays)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
    print(f"wrote {len(arrays['x'])} samples ({a.source}, step {model.step}; {shapes}, x in data units) to {out}")


def _starts(start: str, check: str) -> None:
    if start not in STARTS:
        raise UsageError(f"start must be {' or '.join(STARTS)}, got {start!r}.")
    if check not in CHECKS:
        raise UsageError(f"check must be {', '.join(CHECKS[:-1])} or {CHECKS[-1]}, got {check!r}.")


def _infer(a: InferArgs) -> None:
    _starts(a.start, a.check)
    ckpt = _checkpoint(a.ckpt)
    _data(a.data)
    out = _output(a.out, ckpt, "posterior.npz", (".npz", ".npy"), "posterior particles")
    if a.check != "none" and out.suffix.lower() == ".npy":
        raise UsageError(f"out={a.out} holds z only, not the per-datum check of check={a.check}; give "
                         f"out={out.with_suffix('.npz')} or check=none.")
    import numpy as np

    from lvebm_lightning.inference import infer_checked, load, load_data
    from lvebm_lightning.metrics.mixing import summary

    model = load(ckpt, a.device)
    x = load_data(model, a.data)
    result = infer_checked(model, x, a.n_particles, n_steps=a.n_steps, step_size=a.step_size, seed=a.seed,
                           start=a.start, check=a.check)
    z = result["z"]
    if _ready(out).suffix.lower() == ".npz":
        np.savez(out, x=x.numpy(), **result)
    else:
        np.save(out, z)
    print(f"wrote posterior particles z {list(z.shape)} (data, particle, latent) for {a.data} to {out}")
    if a.check != "none":
        print(summary(result["disagree"]))


def _reconstruct(a: ReconstructArgs) -> None:
    _starts(a.start, a.check)
    ckpt = _checkpoint(a.ckpt)
    if not Path(a.data).expanduser().is_file():
        raise UsageError(f"data={a.data} is not a file; pass a .npy / .npz / .csv of points [B, dx] with NaN "
                         "where a coordinate is unobserved.")
    out = _output(a.out, ckpt, "recon.npz", (".npz",), "reconstructions")
    import numpy as np

    from lvebm_lightning.inference.reconstruction import reconstruct
    from lvebm_lightning.metrics.mixing import summary

    result = reconstruct(ckpt, a.data, a.n_samples, n_steps=a.n_steps, step_size=a.step_size, seed=a.seed,
                         start=a.start, check=a.check, device=a.device)
    np.savez(_ready(out), **result)
    b, s, dx = result["samples"].shape
    print(f"wrote {s} reconstructions of each of {b} data ({int(result['missing'].sum())} missing of {b * dx} "
          f"coordinates; {', '.join(result)}) to {out}")
    if a.check != "none":
        print(summary(result["disagree"]))


def _eval(a: EvalArgs) -> None:
    ckpt = _checkpoint(a.ckpt)
    _data(a.data)
    out = _output(a.out, ckpt, "eval.json", (".json",), "metrics")
    from lvebm_lightning.inference import evaluate

    metrics = evaluate(
        ckpt, a.data, n_samples=a.n_samples, n_particles=a.n_particles, elbo_samples=a.elbo_samples,
        quadrature_points=a.quadrature_points, seed=a.seed, device=a.device,
    )
    _ready(out).write_text(json.dumps(metrics, indent=2) + "\n")
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
            from lvebm_lightning.data.files import DataFileError
            from lvebm_lightning.inference import InferenceError
            from lvebm_lightning.inference.reconstruction import ReconstructionError
            from lvebm_lightning.training.checkpointing import CheckpointError

            if isinstance(err, (CheckpointError, DataFileError, InferenceError, ReconstructionError)):
                raise UsageError(str(err)) from None
            raise
    except UsageError as err:
        exit_with_error(command, "error", err)


def sample_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-sample``: model samples of x (or (x, z), or the pool) from a checkpoint."""
    _run("lvebm-sample", SampleArgs, "Model samples from a checkpoint, in the data's units.", _sample, argv)


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-infer``: posterior particles z | x for new data."""
    _run("lvebm-infer", InferArgs, "Posterior particles z | x for new data (fresh conditional chains).", _infer, argv)


def eval_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-eval``: W2, NLL and ELBO of a checkpoint on a test set, as a table and a JSON file."""
    _run("lvebm-eval", EvalArgs, "W2 (with its floor), exact NLL and ELBO of a checkpoint on a test set.", _eval, argv)


def reconstruct_main(argv: Sequence[str] | None = None) -> None:
    """``lvebm-reconstruct``: the missing (NaN) coordinates of partial data, sampled given the observed ones."""
    _run("lvebm-reconstruct", ReconstructArgs, "Conditional samples of the NaN coordinates of partial data (and z).",
         _reconstruct, argv)


COMMANDS = {"sample": sample_main, "infer": infer_main, "eval": eval_main, "reconstruct": reconstruct_main}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lvebm_lightning.inference.commands sample|infer|eval|reconstruct key=value ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        choices = ",".join(COMMANDS)
        print(f"usage: python -m lvebm_lightning.inference.commands {{{choices}}} key=value ...", file=sys.stderr)
        sys.exit(2)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
