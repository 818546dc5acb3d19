"""Typed configs: load a YAML file onto the schema, apply ``--set`` overrides, validate, dump.

A config is a tree of dataclasses (:class:`Config`); its defaults live in the schema and a
YAML file lists only what it changes. Loading goes through OmegaConf structured configs, which
check keys and types; this module turns their exceptions into one-line
:class:`~loce.errors.ConfigError` messages with the key path and a suggestion, then runs each
section's ``validate()`` for impossible values.

Example::

    cfg = load_config("configs/mask_rcnn_r18_fpn_synthetic.yaml", ["solver.lr=0.01"])
    cfg.solver.lr  # 0.01
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from loce.config.model import ModelConfig
from loce.config.schema import Config, DataConfig, EvalConfig, SolverConfig, TrainConfig
from loce.errors import ConfigError

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "SolverConfig",
    "TrainConfig",
    "bundled_configs",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "resolve_config_path",
    "save_config",
]


def bundled_configs() -> list[str]:
    """Names of the configs shipped with the package (without ``.yaml``)."""
    root = resources.files("loce") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A YAML path as given, or the bundled config of that name (``.yaml`` optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith((".yaml", ".yml")) else path.name
    bundled = resources.files("loce") / "configs" / f"{stem}.yaml"
    if bundled.is_file():
        return Path(str(bundled))
    names = bundled_configs()
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else " Run `loce configs` to list them."
    raise ConfigError(f"config {str(name_or_path)!r} is neither a file nor a bundled config.{hint}")


def _keys_at(root: Any, dotted: str) -> list[str]:
    """Field names of the dataclass instance at ``dotted`` below ``root`` ("" = root)."""
    node: Any = root
    for part in [p for p in dotted.split(".") if p]:
        node = getattr(node, part, None)
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def _friendly(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    if isinstance(err, ConfigKeyError) and key:
        parent, _, leaf = key.rpartition(".")
        valid = _keys_at(Config(), parent)
        close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.6)
        hint = f" Did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
        where = f"'{parent}'" if parent else "the top level"
        return ConfigError(
            f"{source}: unknown key {key!r}.{hint} Valid keys at {where}: {', '.join(valid)}"
        )
    msg = str(err).splitlines()[0]
    if key:
        return ConfigError(f"{source}: {key}: {msg}")
    return ConfigError(f"{source}: {msg}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason}); "
                          "a config is a YAML file saved as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _layers(path: Path) -> list[tuple[dict[str, Any], str]]:
    """The YAML mappings to apply for ``path``, its ``base`` chain first.

    A config may start with ``base: NAME`` (a bundled config name or a path relative to the
    file) to change another config instead of the schema defaults — a fine-tune names its
    stage-1 config so that the model and data sections cannot drift apart.
    """
    chain: list[tuple[dict[str, Any], str]] = []
    seen: list[Path] = []
    current: Path | None = path
    while current is not None:
        if current.resolve() in seen:
            cycle = " -> ".join(p.name for p in [*seen, current.resolve()])
            raise ConfigError(f"{path}: 'base' configs form a cycle: {cycle}")
        seen.append(current.resolve())
        data = _read_yaml(current)
        base = data.pop("base", None)
        chain.append((data, str(current)))
        if base is None:
            current = None
        elif not isinstance(base, str) or not base:
            raise ConfigError(f"{current}: 'base' must be a config name or path, got {base!r}")
        else:
            relative = current.parent / base
            current = relative if relative.is_file() else resolve_config_path(base)
    return chain[::-1]


def _merge(base: DictConfig, data: Mapping[str, Any], source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, data)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise _friendly(err, source) from None


def _overrides_to_dict(overrides: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set solver.lr=0.01")
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: the key is empty")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: dict[str, Any] = {}
        cur = node
        parts = key.split(".")
        for part in parts[:-1]:
            cur[part] = {}
            cur = cur[part]
        cur[parts[-1]] = value
        out.append(node)
    return out


def _check_finite(node: Any, key: str, source: str) -> None:
    """Refuse NaN and infinite numbers anywhere in the config (YAML's ``.nan``, ``.inf``)."""
    if is_dataclass(node):
        for f in fields(node):
            _check_finite(getattr(node, f.name), f"{key}.{f.name}" if key else f.name, source)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            _check_finite(item, f"{key}[{i}]", source)
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{source}: {key} must be a finite number, got {node}")


def _finish(conf: DictConfig, source: str) -> Config:
    try:
        cfg = OmegaConf.to_object(conf)
    except OmegaConfBaseException as err:
        raise _friendly(err, source) from None
    assert isinstance(cfg, Config)
    _check_finite(cfg, "", source)
    cfg.validate()
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a config.

    Args:
        path: a YAML file, the name of a bundled config, or None for the schema defaults. A
            file may name a ``base`` config that it changes (applied first).
        overrides: ``KEY=VALUE`` strings (``model.backbone=resnet18``); values are parsed as
            YAML, so ``solver.steps=[3,5]`` and ``train.init_from=null`` work.

    Raises:
        ConfigError: unreadable file, unknown key (with a suggestion), wrong type or an
            impossible value, naming the key path.
    """
    conf: DictConfig = OmegaConf.structured(Config)
    name = ""
    if path is not None:
        resolved = resolve_config_path(path)
        for layer, source in _layers(resolved):
            conf = _merge(conf, layer, source)
        name = resolved.stem
    for override, item in zip(_overrides_to_dict(overrides), overrides):
        conf = _merge(conf, override, f"--set {item}")
    if not conf.name and name:
        conf.name = name
    return _finish(conf, str(path) if path is not None else "config")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A plain-dict copy of ``cfg`` (for checkpoints and JSON)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def config_from_dict(
    data: Mapping[str, Any], source: str = "checkpoint config", overrides: Sequence[str] = ()
) -> Config:
    """Rebuild a :class:`Config` from :func:`config_to_dict` output, then apply ``overrides``.

    Raises:
        ConfigError: ``data`` is not a mapping, or does not fit the schema.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of config sections, found a "
                          f"{type(data).__name__}")
    conf = _merge(OmegaConf.structured(Config), dict(data), source)
    for override, item in zip(_overrides_to_dict(overrides), overrides):
        conf = _merge(conf, override, f"--set {item}")
    return _finish(conf, source)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML, atomically."""
    from loce.fileio import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)), what="config")

