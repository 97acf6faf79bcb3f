"""Composing the config: from the command line before a run starts, or from overrides in code.

``check_overrides`` composes the config from the command line as Hydra will, before Hydra creates a run
directory, and turns a wrong key or config-group option into one line; ``lvebm_lightning.config.schema`` checks every
key and the type of every value against the config files and the signatures of the ``_target_`` classes, and
``lvebm_lightning.config.validation`` the values that are well-typed but wrong. ``compose_config`` composes
``conf/train.yaml`` for tests, benchmarks and notebooks. The constructors' own errors, and Lightning's
``MisconfigurationException``, are turned into the same one line by ``training.prepare``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from lvebm_lightning.config.validation import ConfigError, validate
from lvebm_lightning.errors import one_line

__all__ = ["CONF", "ConfigError", "check_overrides", "compose_config", "normalise_overrides"]

CONF = Path(__file__).resolve().parents[2] / "conf"


OPEN_NODES = ("data.options.",)
"""Nodes whose keys the code, not the config files, knows (a dataset's parameters): set without ``+``."""


def normalise_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with ``data.options.<name>=<value>`` written ``++data.options.<name>=<value>``: the config
    files hold no dataset's parameters (``data.options: {}``), so Hydra would refuse the plain form as an unknown
    key; ``data.datamodule`` checks each name and value against the dataset (``data.options``)."""
    return [f"++{o}" if o.startswith(OPEN_NODES) and "=" in o else o for o in overrides]


def check_overrides(config_dir: str | Path, config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``config_name`` with command-line ``overrides`` as Hydra will, check its keys and types
    (``schema``) and ``validate`` it; raise a one-line ``ConfigError`` on an unknown key (``model.lrr=1``,
    ``+model.x=1``), an unknown option of a group (``data=foo``), bad override syntax, a value of the wrong type
    (``seed=abc``) or a value training cannot use.

    Meant to run before ``@hydra.main``, which would otherwise create a run directory first and print a
    multi-line report. Returns the config without its ``hydra`` node, ``paths.output_dir`` set to the run
    directory Hydra will create. Leaves Hydra's global state cleared.
    """
    from lvebm_lightning.config import schema

    config_dir, overrides = Path(config_dir).resolve(), normalise_overrides(overrides)
    groups = {p.relative_to(config_dir).as_posix() for p in config_dir.rglob("*") if p.is_dir()}  # model/energy
    cfg = _compose(config_dir, config_name, overrides)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    chosen = [o.input_line for o in parsed if o.key_or_group in groups or o.is_delete()]
    base = _compose(config_dir, config_name, [line for line in chosen if line is not None])
    schema.check_values(base, cfg, parsed, groups)
    schema.check_targets(cfg)
    validate(cfg)
    return cfg


def _compose(config_dir: Path, config_name: str, overrides: Sequence[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.output_dir = cfg.hydra.run.dir
            del cfg.hydra
        return cfg
    except MissingConfigException as err:
        missing = err.missing_cfg_file or ""
        group, _, option = missing.rpartition("/")
        if group and err.options:
            raise ConfigError(
                f"unknown {group} option '{option}' ({group}={option}); choose one of: {', '.join(err.options)}."
            ) from None
        raise ConfigError(one_line(str(err))) from None
    except OverrideParseException as err:
        raise ConfigError(
            f"cannot parse the command line ({one_line(str(err).splitlines()[0])}); write overrides as key=value "
            "(quote values with spaces or special characters)."
        ) from None
    except Exception as err:  # Hydra wraps OmegaConf's errors; the cause names the key
        cause = err.__cause__
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
            key = cause.full_key
            raise ConfigError(
                f"unknown config key '{key}'; check its spelling (python train.py --cfg job prints every key)."
            ) from None
        raise ConfigError(one_line(str(err).splitlines()[0] if str(err) else type(err).__name__)) from None
    finally:
        GlobalHydra.instance().clear()


def compose_config(output_dir: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, composed as ``train.py`` composes it, its run directory set to
    ``output_dir``: ``train(compose_config(...))`` without the command line (tests, benchmarks, notebooks)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=normalise_overrides(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)  # so that ${hydra:...} values resolve as under @hydra.main
    with open_dict(cfg):
        del cfg.hydra
    return cfg
