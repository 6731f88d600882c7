"""YAML + `key=value` overrides -> a validated `Config`; every error names the offending key."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from dvla_hpc.config.schema import Config, ModelConfig
from dvla_hpc.model.conv_stack import min_conv_image_size
from dvla_hpc.model.presets import PRESETS, apply_preset

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


class ConfigError(ValueError):
    pass


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    return load_config_text(path.read_text(), overrides, f"config file {path}")


def load_config_text(text: str, overrides: list[str] | tuple[str, ...] = (),
                     origin: str = "config") -> Config:
    """A config from YAML text (a checkpoint carries its run's config this way)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin} must hold a mapping of sections, not {type(raw).__name__}")
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    apply_model_preset(raw)
    cfg = build(Config, raw, prefix="")
    validate_consistency(cfg)
    return cfg


def apply_model_preset(raw: dict) -> None:
    """Fill the `model:` keys the user left out from `model.preset` (explicit keys win)."""
    section = raw.get("model", {})
    if not isinstance(section, dict):
        return  # build() names the bad section
    name = section.get("preset", ModelConfig.preset)
    if name not in PRESETS:
        raise ConfigError(f"model.preset: {name!r} is not one of {', '.join(PRESETS)}")
    raw["model"] = apply_preset(section, name)


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:  # not YAML (e.g. "a: b"): the raw text is the value; the schema checks it
        value = text
    return key.strip(), value


def set_dotted(raw: dict, key: str, value: Any) -> None:
    *sections, leaf = key.split(".")
    node = raw
    for section in sections:
        child = node.setdefault(section, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {section} is not a section")
        node = child
    node[leaf] = value


def build(cls: type, raw: Any, prefix: str):
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known in {where}: {', '.join(fields)})")
    values = {}
    for name, value in raw.items():
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = build(hint, value, key + ".")
        else:
            values[name] = coerce(key, hint, value)
            check_bounds(key, fields[name].metadata, values[name])
    return cls(**values)


def coerce(key: str, hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")


def check_bounds(key: str, meta: Any, value: Any) -> None:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and value < low:
        raise ConfigError(f"{key}: {value} is below the minimum {low}")
    if high is not None and value > high:
        raise ConfigError(f"{key}: {value} is above the maximum {high}")


def validate_consistency(cfg: Config) -> None:
    """Rules that span several keys."""
    if cfg.model.encoder == "conv" and cfg.env.image_size < min_conv_image_size():
        raise ConfigError(f"env.image_size: {cfg.env.image_size} is too small for model.encoder=conv "
                          f"(its conv stack needs at least {min_conv_image_size()})")
    if cfg.model.encoder == "film_keypoints" and cfg.env.image_size % cfg.model.patch_size:
        raise ConfigError(
            f"model.patch_size: {cfg.model.patch_size} must divide env.image_size {cfg.env.image_size}")
    if cfg.model.width % cfg.model.heads:
        raise ConfigError(f"model.heads: {cfg.model.heads} must divide model.width {cfg.model.width}")
    if cfg.env.fault != "none" and cfg.env.name != "debug_faulty":
        raise ConfigError(f"env.fault: {cfg.env.fault!r} needs env.name=debug_faulty, not {cfg.env.name!r}")
    if cfg.env.envs_per_sampler % 2:
        raise ConfigError(
            f"env.envs_per_sampler: {cfg.env.envs_per_sampler} must be even (envs step in two halves)")
    if cfg.pipeline.poll_min_sleep_ms > cfg.pipeline.poll_max_sleep_ms:
        raise ConfigError(f"pipeline.poll_min_sleep_ms: {cfg.pipeline.poll_min_sleep_ms} is above "
                          f"pipeline.poll_max_sleep_ms {cfg.pipeline.poll_max_sleep_ms}")
    if cfg.run.mode == "sync" and cfg.learn.publish_every != 1:
        raise ConfigError(f"learn.publish_every: {cfg.learn.publish_every} must be 1 in sync mode "
                          "(each round waits for the weights trained on the round before)")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
