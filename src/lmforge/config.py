"""Typed stage configs: YAML files plus `--set a.b=value` overrides, strict about keys.

Every stage has one pydantic model (subclass of `Config`) living next to the stage. This module
only holds the shared machinery, so that the lowest layer never imports a stage.
A wrong key or type fails before any work starts, with the file, the dotted key and what was
expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lmforge.errors import READ_ERRORS, LmforgeError, unreadable

C = TypeVar("C", bound="Config")


class ConfigError(LmforgeError):
    """A config that cannot be used; the message names the file and key."""


class Config(BaseModel):
    """Base of every stage config: unknown keys are errors, field docstrings are the help."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `["train.lr=3e-4", "model.preset=tiny"]` into a nested dict; values are YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {part!r} is set both as a value and as a section")
        try:
            node[leaf] = _scalar(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML "
                              f"({getattr(err, 'problem', None) or err}); quote it") from None
    return nested


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


def _scalar(raw: str) -> Any:
    """A YAML scalar, except that `3e-4` is a number (YAML 1.1 wants `3.0e-4`; users don't)."""
    if not raw.strip():
        return ""
    return float(raw) if _NUMBER.match(raw.strip()) else yaml.safe_load(raw)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge where `extra` wins; neither input is modified."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing, unreadable or malformed file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except READ_ERRORS as err:
        raise ConfigError(unreadable(path, err, "a YAML config file")) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, "
                          f"got {type(data).__name__}")
    return data


def build(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    """Validate `data` as `cls`, turning pydantic's report into one line per bad key."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + "; ".join(_describe(cls, e) for e in err.errors())) from None


def load(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None,
         values: dict[str, Any] | None = None) -> C:
    """Load `path` (optional) as `cls`, then apply the `--set` strings, then `values` on top.

    `values` is a nested dict of already-typed settings (a command's options: paths, names):
    they are never written into YAML text and parsed back, so a path holding a quote, a colon
    or a `#` arrives exactly as given. They win over the file and the `--set` strings.
    """
    data = read_yaml(path) if path is not None else {}
    data = deep_merge(data, parse_overrides(overrides or []))
    data = deep_merge(data, values or {})
    return build(cls, data, source=str(path) if path is not None else "config")


def _describe(cls: type[Config], error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        valid = _fields_at(cls, error["loc"][:-1])
        hint = f"; valid keys here: {', '.join(valid)}" if valid else ""
        return f"unknown key {key!r}{hint}"
    if error["type"] == "missing":
        return f"{key}: required, but not given"
    if error["type"] == "value_error":  # a validator's own sentence; its input may be the whole config
        message = error["msg"].removeprefix("Value error, ")
        return f"{key}: {message}" if error["loc"] else message
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def _fields_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the nested model found by following `loc` from `cls`."""
    model: Any = cls
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))


def to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as plain JSON types, as it goes into manifests."""
    return config.model_dump(mode="json")


def commented_yaml(config: Config) -> str:
    """The resolved config as YAML, each key preceded by its field docstring as a comment."""
    return "\n".join(_commented_lines(config, 0)) + "\n"


def _commented_lines(model: BaseModel, depth: int) -> list[str]:
    lines, pad = [], "  " * depth
    for name, field in type(model).model_fields.items():
        if field.description:
            lines += [f"{pad}# {line}" for line in field.description.splitlines()]
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines += [f"{pad}{name}:", *_commented_lines(value, depth + 1)]
        else:
            dumped = yaml.safe_dump({name: model.model_dump(mode="json", include={name})[name]},
                                    default_flow_style=True, width=10**6).strip()
            lines.append(f"{pad}{dumped.removeprefix('{').removesuffix('}')}")
    return lines
