"""Checkpoints written by an older layout of the package, read as the current code writes them.

A checkpoint stores the energy's, the scheduler's and the data module's classes by import path (the ``_target_`` of
its hyper-parameters and of its resolved config), and the Langevin kernels as it configured them. ``upgrade``
maps what has moved: the module paths of the flat package (``lvebm_lightning.energy.MLPEnergy`` ->
``lvebm_lightning.energies.mlp.MLPEnergy``, ...) and a kernel given as ``metropolis: true | false`` with
``kernel: null`` (-> ``kernel: mala | ula``). Everything else passes unchanged.
"""

from __future__ import annotations

from typing import Any

MOVED = {
    "lvebm_lightning.energy.": "lvebm_lightning.energies.mlp.",
    "lvebm_lightning.decoder_energy.": "lvebm_lightning.energies.decoder.",
    "lvebm_lightning.lattice_energy.": "lvebm_lightning.energies.conv.",
    "lvebm_lightning.module.": "lvebm_lightning.training.module.",
    "lvebm_lightning.schedule.": "lvebm_lightning.training.schedule.",
}
"""Old module path prefix -> new one, for every class or function a config names."""

KERNEL_ENTRIES = ("posterior", "negative", "long_chains")


def _moved(value: Any) -> Any:
    """A ``_target_`` string under its current path; nested dicts and lists walked."""
    if isinstance(value, dict):
        return {key: _moved(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_moved(item) for item in value]
    if isinstance(value, str):
        for old, new in MOVED.items():
            if value.startswith(old):
                return new + value[len(old):]
    return value


def _kernel(entry: dict[str, Any], fallback: str | None) -> dict[str, Any]:
    """A sampler entry whose kernel is named: ``metropolis`` (dropped) decides where ``kernel`` is null."""
    entry = dict(entry)
    metropolis = entry.pop("metropolis", None)
    if entry.get("kernel") is None and metropolis is not None:
        entry["kernel"] = "mala" if metropolis else "ula"
    elif entry.get("kernel") is None:
        entry["kernel"] = fallback
    return entry


def _kernels(sampler: dict[str, Any]) -> dict[str, Any]:
    """``posterior``, ``negative`` and ``long_chains`` entries of a sampler (or the module's hyper-parameters)."""
    out = dict(sampler)
    for name in KERNEL_ENTRIES:
        if isinstance(out.get(name), dict) and ("metropolis" in out[name] or "kernel" not in out[name]):
            out[name] = _kernel(out[name], None if name == "long_chains" else "ula")
    return out


def upgrade(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint ``ckpt`` (as ``torch.load`` returns it) with moved paths and named kernels; not modified."""
    ckpt = dict(ckpt)
    ckpt["hyper_parameters"] = _kernels(_moved(ckpt["hyper_parameters"]))
    config = ckpt.get("config")
    if isinstance(config, dict):
        config = _moved(config)
        if isinstance(config.get("sampler"), dict):
            config["sampler"] = _kernels(config["sampler"])
        for name in KERNEL_ENTRIES:
            if isinstance(config.get("model", {}).get(name), dict):
                config["model"] = _kernels(config["model"])
                break
        ckpt["config"] = config
    return ckpt
