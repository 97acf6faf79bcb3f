"""Checks of a composed config's values, run before any data is read or anything is written.

``validate`` catches values that are well-typed but wrong (an unknown dataset, a zero step size, K < 1, a pool
smaller than the negative batch, a W&B mode W&B would reject) and says which key to change; the keys and the types
of the values are checked before it by ``lvebm_lightning.config.schema`` (``config.check_overrides`` runs both).
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig

from lvebm_lightning.errors import is_positive_number

WANDB_MODES = ("auto", "online", "offline", "disabled")
WANDB_ENV_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")  # what W&B itself accepts


class ConfigError(ValueError):
    """A config value that cannot work, with the key and the fix in the message."""


def _positive(cfg: DictConfig, key: str, kind: type = float) -> None:
    value = _get(cfg, key)
    if not is_positive_number(value):
        raise ConfigError(f"{key} must be a positive {kind.__name__}, got {value!r}; set {key}=<value > 0>.")
    if kind is int and int(value) != value:
        raise ConfigError(f"{key} must be a whole number, got {value!r}.")


def _non_negative_int(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{key} must be a whole number >= 0, got {value!r}; set {key}=<value >= 0>.")


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def expected_world_size(cfg: DictConfig) -> int | None:
    """The number of ranks W = devices x num_nodes the trainer config asks for; None when only the trainer can
    tell (``devices: auto`` or ``-1``: every visible accelerator).

    ``devices`` may be a count (``4``, ``"4"``) or device ids (``[0, 1]``, ``"0,1"``), as Lightning accepts them.
    """
    devices = cfg.trainer.get("devices", 1)
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        try:
            devices = [int(d) for d in text.split(",") if d.strip()] if "," in text else int(text)
        except ValueError:
            raise ConfigError(
                f"trainer.devices={devices!r} is not a device count, a list of device ids or auto; e.g. "
                "trainer.devices=2."
            ) from None
    if isinstance(devices, int):
        if devices < 1:
            return None
        count = devices
    else:
        count = len(devices)
    return count * int(cfg.trainer.get("num_nodes", 1) or 1)


def _number(cfg: DictConfig, key: str) -> float:
    value = _get(cfg, key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}.")
    return float(value)


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` on the first value in ``cfg`` that training cannot use."""
    from lvebm_lightning.data.systems import DATASETS
    from lvebm_lightning.langevin.steps import STEPS

    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be a whole number, got {seed!r}; set seed=<integer>.")
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is not None and wandb.get("mode", "auto") not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode must be one of {', '.join(WANDB_MODES)}, got {wandb.mode!r}.")
    env_mode = os.environ.get("WANDB_MODE")
    if wandb is not None and env_mode is not None and env_mode not in WANDB_ENV_MODES:
        raise ConfigError(
            f"the environment variable WANDB_MODE={env_mode!r} is not a W&B mode; unset it (unset WANDB_MODE) or "
            "set it to offline, online or disabled."
        )
    name = cfg.data.name
    if name == "file":
        if not cfg.data.get("path"):
            raise ConfigError("data=file needs the data file: data.path=<file.npy|.npz|.csv>.")
        for key in ("data.val_fraction", "data.test_fraction"):
            if not 0.0 < _number(cfg, key) < 1.0:
                raise ConfigError(f"{key} must lie in (0, 1), got {_get(cfg, key)}.")
    elif name not in DATASETS:
        raise ConfigError(
            f"unknown dataset data.name={name!r}; choose one of: {', '.join(sorted(DATASETS))}, or data=file "
            "data.path=<your file>."
        )
    else:
        for key in ("data.n_train", "data.n_val", "data.n_test"):
            _positive(cfg, key, int)
    amortised = cfg.sampler.posterior.kind == "amortised"
    for system in ("posterior", "negative"):
        _positive(cfg, f"sampler.{system}.step_size")
        if system == "posterior" and amortised:  # the encoder's samples need no refinement: T_z = 0 is allowed
            _non_negative_int(cfg, "sampler.posterior.n_steps")
        else:
            _positive(cfg, f"sampler.{system}.n_steps", int)
        if _get(cfg, f"sampler.{system}.grad_clip") is not None:
            _positive(cfg, f"sampler.{system}.grad_clip")
    for system in ("posterior", "negative", "long_chains"):
        kernel = cfg.sampler[system].get("kernel")
        if (kernel is not None or system != "long_chains") and (not isinstance(kernel, str) or kernel not in STEPS):
            also = ", or null (the negative kernel)" if system == "long_chains" else ""
            raise ConfigError(
                f"unknown Langevin kernel sampler.{system}.kernel={kernel!r}; choose one of: {', '.join(sorted(STEPS))}"
                f"{also}, e.g. sampler.{system}.kernel=mala."
            )
    _positive(cfg, "sampler.posterior.n_particles", int)
    _positive(cfg, "sampler.negative.pool_size", int)
    _positive(cfg, "sampler.negative.batch_size", int)
    _positive(cfg, "sampler.long_chains.n_steps", int)
    _positive(cfg, "sampler.long_chains.n_samples", int)
    if cfg.sampler.long_chains.step_size is not None:
        _positive(cfg, "sampler.long_chains.step_size")
    _positive(cfg, "data.batch_size", int)
    _positive(cfg, "model.lr")
    if not 0.0 <= _number(cfg, "sampler.negative.reinit_prob") <= 1.0:
        raise ConfigError(f"sampler.negative.reinit_prob must lie in [0, 1], got {cfg.sampler.negative.reinit_prob}.")
    if _number(cfg, "model.dz") < 0 or int(cfg.model.dz) != cfg.model.dz:
        raise ConfigError(f"model.dz must be a whole number >= 0, got {cfg.model.dz}.")
    if _number(cfg, "model.alpha") < 0:
        raise ConfigError(f"model.alpha must be >= 0, got {cfg.model.alpha}.")
    if cfg.sampler.posterior.kind not in ("persistent", "short_run", "amortised"):
        raise ConfigError(
            f"sampler.posterior.kind must be persistent, short_run or amortised, got {cfg.sampler.posterior.kind!r}."
        )
    if amortised:
        if int(cfg.model.dz) < 1:
            raise ConfigError("sampler=amortised needs latents: set model.dz >= 1 (or use another sampler).")
        encoder = cfg.sampler.posterior.get("encoder") or {}
        for key, kind in (("width", int), ("depth", int), ("lr", float), ("max_scale", float)):
            if key in encoder:
                _positive(cfg, f"sampler.posterior.encoder.{key}", kind)
        if encoder.get("max_mean") is not None:  # null: mu unbounded
            _positive(cfg, "sampler.posterior.encoder.max_mean")
    world = expected_world_size(cfg)
    if world is not None and int(cfg.sampler.negative.pool_size) < int(cfg.sampler.negative.batch_size) * world:
        raise ConfigError(
            f"sampler.negative.pool_size={cfg.sampler.negative.pool_size} is smaller than the negative batch "
            f"({cfg.sampler.negative.batch_size} per rank x {world} rank(s)); raise the pool size or lower "
            "sampler.negative.batch_size."
        )
    if cfg.trainer.get("use_distributed_sampler", True):  # Lightning's default is true
        raise ConfigError(
            "trainer.use_distributed_sampler must be false: the data module shards the data by rank itself so that "
            "each datum's particles stay on one rank; drop the override."
        )
    if cfg.model.divergence.policy not in ("skip", "raise"):
        raise ConfigError(f"model.divergence.policy must be skip or raise, got {cfg.model.divergence.policy!r}.")
    _positive(cfg, "model.divergence.max_consecutive", int)
