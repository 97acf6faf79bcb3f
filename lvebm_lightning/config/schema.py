"""Keys and types of a composed config, checked against what the config files and the code declare.

Two sources of truth, so that no key needs a rule of its own:

- **The config files.** A value given on the command line must have the kind of the value it replaces (a
  number for a number, true / false for a flag, text for text, a list for a list); a key added with ``+`` must
  land in an object that takes it (see below) or be a new object (a node with ``_target_``).
- **The code.** Every node with a ``_target_`` is checked against the signature of the class or function it
  names: each key must be an argument of it (unless it takes ``**kwargs``), and each value must fit the
  argument's type hint where the hint is a plain type (int, float, bool, str, a Literal, a list, or a union of
  these).

Values that are well-typed but out of range are left to ``validation.validate`` and to the constructors themselves
(``training.prepare`` turns their errors into the same one-line ``ConfigError``).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Union

from hydra.core.override_parser.types import Override
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from lvebm_lightning.config.validation import ConfigError

CONSUMED = {"model": {"lr"}}
"""Keys of a ``_target_`` node that ``train`` reads itself instead of passing them on."""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, ListConfig)):
        return "a list"
    if isinstance(value, (dict, DictConfig)):
        return "a mapping"
    return type(value).__name__


def _same_kind(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return _kind(default) == _kind(value)


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether ``value`` fits type ``hint`` (None: the hint is not one this check can judge)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        verdicts = [_accepts(arg, value) for arg in typing.get_args(hint)]
        return True if True in verdicts else (False if all(v is False for v in verdicts) else None)
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        return isinstance(value, (list, tuple, ListConfig))
    return None


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "")
    return getattr(hint, "__name__", text) if not typing.get_args(hint) else text


def _target_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if path or key != "hydra":
                yield from _target_nodes(node._get_node(key), f"{path}.{key}" if path else str(key))


def _signature(target: str, path: str) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    try:
        obj = get_object(target)
    except Exception:  # ImportError, AttributeError, ValueError: the target names nothing importable
        raise ConfigError(f"{path}._target_={target} cannot be imported; check its spelling.") from None
    try:
        params = dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return {}, True, {}
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # hints that name types imported only for type checkers: keys are still checked
        hints = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return params, var_kw, hints


def check_targets(cfg: DictConfig) -> None:
    """Every ``_target_`` node's keys and plain-typed values against the signature of its target."""
    for path, node in _target_nodes(cfg, ""):
        target = str(node._target_)
        params, var_kw, hints = _signature(target, path)
        for key in node:
            key = str(key)
            if key.startswith("_") or key in CONSUMED.get(path, ()):
                continue
            if key not in params and not var_kw:
                names = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
                raise ConfigError(
                    f"unknown key '{path}.{key}': {target} takes no argument '{key}' (it takes {', '.join(names)}); "
                    "drop it or fix its spelling."
                )
            if key in hints and not OmegaConf.is_missing(node, key):
                value = node[key]
                if _accepts(hints[key], value) is False:
                    raise ConfigError(
                        f"{path}.{key}={value!r} has the wrong type: {target} expects {_describe(hints[key])}; "
                        f"set {path}.{key}=<{_describe(hints[key])}>."
                    )


def _in_target(cfg: DictConfig, key: str) -> bool:
    """Whether the parent of ``key`` is a ``_target_`` node (whose signature then judges the key)."""
    parent = key.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent) if parent else None
    return isinstance(node, DictConfig) and "_target_" in node


def check_values(base: DictConfig, cfg: DictConfig, overrides: Sequence[Override], groups: set[str]) -> None:
    """Each command-line value against the value it replaces in ``base`` (the config with only the choices of
    config ``groups`` applied), and each added key against where it lands."""
    for override in overrides:
        key = override.key_or_group
        if override.is_delete() or key.split(".")[0] == "hydra" or key in groups or key.startswith("data.options."):
            continue  # a dataset's parameters are checked against the dataset when the data are built
        value = OmegaConf.select(cfg, key)
        if OmegaConf.select(base, key, default="<absent>") == "<absent>":
            missing = key
            while "." in missing and OmegaConf.select(base, missing.rpartition(".")[0], default=None) is None:
                missing = missing.rpartition(".")[0]
            added = OmegaConf.select(cfg, missing)
            if _in_target(base, missing) or isinstance(added, DictConfig) and "_target_" in added:
                continue
            raise ConfigError(
                f"unknown config key '{key}' (added with +): {missing.rpartition('.')[0] or 'the config'} has no "
                f"'{missing.rpartition('.')[2]}'; check its spelling (python train.py --cfg job prints every key)."
            )
        default = OmegaConf.select(base, key)
        if not _in_target(base, key) and not _same_kind(default, value):
            raise ConfigError(
                f"{key} must be {_kind(default)} (like its default {default!r}), got {value!r}; set {key}=<value>."
            )
