"""One config system: typed dataclasses, loaded from YAML, overridden with `key=value` strings.

`load_config(TrainConfig, "recipe.yaml", ["lr=1e-4", "lora.r=8"])` reads the file, applies the
overrides (dotted keys reach nested dataclasses) and checks every key and type, so a typo in a
recipe fails at once instead of being ignored.

`add_flags(parser, ServeConfig)` generates a command's flags from the same dataclass (`--max-queue`
for `max_queue`; help and short names from `option(...)` metadata) plus `--config FILE` and
`key=value` positionals, and `from_args(ServeConfig, args)` builds the config from them: the file
first, then the flags given, then the overrides. Flags have no argparse defaults, so a value in
the file is not overwritten by a flag left out.
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


def option(default: Any = dataclasses.MISSING, help: str | None = None, *, flag: str | None | bool = None,
           short: str | None = None, choices: tuple | None = None, append: bool = False,
           factory: Any = None):
    """A dataclass field with what `add_flags` needs: the help text, the flag (default
    `--field-name`; False for none), a short alias, choices, and `append` for a repeatable flag
    that builds a list."""
    meta = {"help": help, "flag": flag, "short": short, "choices": choices, "append": append}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def add_flags(parser, cls, *, skip: tuple[str, ...] = ()) -> None:
    """Add `--config`, one flag per field of `cls` (not in `skip`) and `key=value` overrides."""
    import argparse

    parser.add_argument("--config", default=None, metavar="FILE",
                        help="YAML config; flags, then key=value overrides apply on top")
    hints = typing.get_type_hints(cls)
    example = "key=value"
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if example == "key=value" and hints[f.name] is int:
            example = f"{f.name}={f.default}"
        if f.name in skip or meta.get("flag") is False:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        tp = _unoptional(hints[f.name])
        names = [meta.get("flag") or "--" + f.name.replace("_", "-")]
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS}
        help_ = meta.get("help") or ""
        if tp is bool and default is None:  # unset means "decide for me": --x and --no-x both exist
            kw.update(action=argparse.BooleanOptionalAction)
        elif tp is bool:
            if default is True and not meta.get("flag"):
                names = ["--no-" + f.name.replace("_", "-")]
            kw.update(action="store_const", const=not default)
        else:
            origin, args = typing.get_origin(tp), typing.get_args(tp)
            if origin in (list, tuple):
                item = args[0] if args else str
                if meta.get("append"):
                    kw.update(action="append", type=_flag_type(item), metavar=f.name.upper().rstrip("S"))
                else:
                    kw.update(type=_list_type(item), metavar="A,B")
            elif origin is typing.Literal:
                kw.update(choices=args)
            else:
                kw.update(type=_flag_type(tp), metavar={int: "N", float: "X"}.get(tp, f.name.upper()))
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
                kw.pop("metavar", None)
            if default is not None and default != []:
                shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
                help_ = f"{help_} (default: {shown})" if help_ else f"default: {shown}"
        if meta.get("short"):
            names.insert(0, meta["short"])
        parser.add_argument(*names, help=help_ or None, **kw)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"any config key, e.g. {example}")


def from_args(cls: type[T], args, **values: Any) -> T:
    """The config that `add_flags` flags describe: --config file, then given flags (and `values`),
    then key=value overrides."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    return load_config(cls, getattr(args, "config", None), getattr(args, "overrides", None), **{**values, **given})


def _unoptional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _flag_type(tp):
    return tp if tp in (int, float) else str


def _list_type(item):
    def parse(text: str) -> list:
        import argparse

        try:
            return [_flag_type(item)(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None
    return parse


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
