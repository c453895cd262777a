"""One config system: typed dataclasses, loaded from YAML, overridden with `key=value` strings.

`load_config(TrainConfig, "recipe.yaml", ["lr=1e-4", "lora.r=8"])` reads the file, applies the
overrides (dotted keys reach nested dataclasses) and checks every key and type, so a typo in a
recipe fails at once instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from lmlab.errors import LmlabError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                **values: Any) -> T:
    """Build `cls` from a YAML file, then `values` (Python), then `key=value` overrides (CLI)."""
    import yaml

    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise LmlabError(f"{path}: cannot read config ({e})") from None
        if not isinstance(data, dict):
            raise LmlabError(f"{path}: a config must be a mapping of keys to values")
    for key, value in values.items():
        _set(data, key.split("."), value)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise LmlabError(f"override {item!r} must look like key=value")
        _set(data, key.strip().split("."), yaml.safe_load(text))
    return _build(cls, data, where=str(path) if path else "config")


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def save_config(obj, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


def _set(data: dict, keys: list[str], value) -> None:
    for k in keys[:-1]:
        data = data.setdefault(k, {})
        if not isinstance(data, dict):
            raise LmlabError(f"{'.'.join(keys)}: {k} is not a section")
    data[keys[-1]] = value


def _build(cls, data: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise LmlabError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{where}: {name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise LmlabError(f"{where}: {e}") from None


def _coerce(tp, value, where: str):
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise LmlabError(f"{where} must be a mapping")
        return _build(tp, value, where)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(a, value, where)
            except LmlabError as e:
                errors.append(str(e))
        raise LmlabError(errors[0])
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise LmlabError(f"{where} must be a list")
        return origin(_coerce(args[0], v, where) if args else v for v in value)
    if tp is Any or origin is typing.Literal:
        if origin is typing.Literal and value not in args:
            raise LmlabError(f"{where} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise LmlabError(f"{where} must be true or false, got {value!r}")
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise LmlabError(f"{where} must be {getattr(tp, '__name__', tp)}, got {value!r}")
