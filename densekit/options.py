"""Options declared once: a dataclass field carries its flag, help and choices, and everything else is made from it.

A command's options are a few dataclasses, one per concern (``EncoderOptions``, ``DenoiseConfig``, ...). From
them come the command-line flags (:func:`add_options`), the YAML keys a ``--config`` file may use
(:func:`from_mapping`, which also serves Python callers), and the objects the library itself takes: there is
no second copy of an option anywhere. A field is declared with :func:`option`::

    @dataclass
    class EncoderOptions:
        batch_size: int = option(64, help="encoding batch size")
        backend: Literal["torch", "onnx"] = option("torch", help="...")

Types map to flags as expected: ``bool`` is a switch (``--x``, or ``--no-x`` when it defaults to true),
``Literal`` gives choices, ``list[T]`` a repeatable flag (or ``nargs``), ``tuple[T, T]`` a fixed number of
values and ``dict`` repeatable ``KEY=VALUE`` items. Fields of a Hugging Face ``TrainingArguments`` subclass are
turned into flags by ``transformers.HfArgumentParser`` itself, so the trainer's own settings keep their names.

Flags default to "not given" (``argparse.SUPPRESS``): a parsed command line holds only what the user typed,
and :func:`resolve` layers it over the YAML file and the dataclass defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Literal

from densekit.errors import ConfigError

META_KEY = "densekit"


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    help: str
    flag: str | None = None  # the long flag, default --field-name
    aliases: tuple[str, ...] = ()
    metavar: str | tuple[str, ...] | None = None
    nargs: int | str | None = None
    nested: bool = False  # dict of dicts from NAME.KEY=VALUE items (--retriever-option bm25.k1=1.2)


def option(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING,
           flag: str | None = None, aliases: Iterable[str] = (), metavar: str | tuple[str, ...] | None = None,
           nargs: int | str | None = None, nested: bool = False) -> Any:
    """A dataclass field that is also a command-line flag and a config key."""
    spec = OptionSpec(help=help, flag=flag, aliases=tuple(aliases), metavar=metavar, nargs=nargs, nested=nested)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={META_KEY: spec})


def hf_option(default: Any = dataclasses.MISSING, *, help: str, aliases: Iterable[str] = ()) -> Any:
    """A field of a ``TrainingArguments`` subclass, in ``HfArgumentParser``'s own metadata convention."""
    return dataclasses.field(default=default, metadata={"help": help, "aliases": list(aliases)})


def parse_key_values(items: Iterable[Any] | Mapping[str, Any] | None, flag: str) -> dict[str, Any]:
    """``["nlist=100", "metric=ip"]`` -> ``{"nlist": 100, "metric": "ip"}``; values are parsed as JSON when they
    can be (numbers, booleans, lists), keys have ``-`` turned into ``_``; mappings pass through."""
    if isinstance(items, Mapping):
        return {str(k).replace("-", "_"): v for k, v in items.items()}
    out: dict[str, Any] = {}
    for item in items or []:
        if isinstance(item, Mapping):
            out.update(parse_key_values(item, flag))
            continue
        if "=" not in str(item):
            raise ConfigError(f"{flag} expects KEY=VALUE, got '{item}'")
        key, value = str(item).split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def nest_key_values(values: Mapping[str, Any], flag: str) -> dict[str, dict[str, Any]]:
    """``{"bm25.k1": 1.2}`` (or already nested ``{"bm25": {"k1": 1.2}}``) -> ``{"bm25": {"k1": 1.2}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.setdefault(key, {}).update(parse_key_values(value, flag))
            continue
        name, dot, inner = key.partition(".")
        if not dot or not inner:
            raise ConfigError(f"{flag} expects NAME.KEY=VALUE, got '{key}={value}'")
        out.setdefault(name, {})[inner.replace("-", "_")] = value
    return out


# --- types -------------------------------------------------------------------------------------------------

def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return tp
    return tp


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_hf_arguments(cls: type) -> bool:
    try:
        from transformers import TrainingArguments
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(cls, type) and issubclass(cls, TrainingArguments)


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are options (declared with :func:`option`, or any field of TrainingArguments)."""
    if _is_hf_arguments(cls):
        return [f for f in dataclasses.fields(cls) if f.init]
    return [f for f in dataclasses.fields(cls) if f.init and META_KEY in f.metadata]


def _spec(field: dataclasses.Field) -> OptionSpec:
    return field.metadata[META_KEY]


def flag_of(field: dataclasses.Field) -> str:
    if META_KEY in field.metadata and _spec(field).flag:
        return _spec(field).flag
    return "--" + field.name.replace("_", "-")


def _names(field: dataclasses.Field) -> set[str]:
    """Every spelling that selects this field in a config file: its name, its flags and aliases."""
    names = {field.name, flag_of(field)}
    if META_KEY in field.metadata:
        names |= set(_spec(field).aliases)
    else:
        aliases = field.metadata.get("aliases", [])
        names |= {aliases} if isinstance(aliases, str) else set(aliases)
    return {_normalise(n) for n in names}


def _normalise(name: str) -> str:
    return name.lstrip("-").replace("-", "_")


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


# --- flags -------------------------------------------------------------------------------------------------

def add_options(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """Add a flag for every option of ``cls`` (in an argument group named ``title``), each defaulting to unset."""
    if _is_hf_arguments(cls):
        _add_hf_options(parser, cls, title)
        return
    group = parser.add_argument_group(title) if title else parser
    hints = _field_types(cls)
    for field in option_fields(cls):
        spec = _spec(field)
        tp = _unwrap_optional(hints[field.name])
        origin = typing.get_origin(tp)
        default = _default_of(field)
        shown = "" if default is dataclasses.MISSING or default in (None, [], {}, False) else f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": spec.help + shown}
        if spec.metavar is not None:
            kwargs["metavar"] = spec.metavar
        flags = [flag_of(field), *spec.aliases]
        if tp is bool:
            kwargs.pop("metavar", None)
            kwargs["action"] = "store_false" if default is True else "store_true"
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs["type"] = type(typing.get_args(tp)[0])
        elif origin is dict or tp is dict:
            kwargs["action"] = "append"
            kwargs.setdefault("metavar", "NAME.KEY=VALUE" if spec.nested else "KEY=VALUE")
        elif origin is tuple:
            item_types = typing.get_args(tp)
            kwargs["nargs"] = len(item_types)
            kwargs["type"] = item_types[0]
        elif origin is list:
            (item,) = typing.get_args(tp) or (str,)
            kwargs["type"] = _unwrap_optional(item)
            if spec.nargs is not None:
                kwargs["nargs"] = spec.nargs
            else:
                kwargs["action"] = "append"
        else:
            kwargs["type"] = tp if tp in (int, float, str) else str
            if spec.nargs is not None:
                kwargs["nargs"] = spec.nargs
        group.add_argument(*flags, **kwargs)


class _Unset:
    """Hands ``add_argument`` calls on to a parser with every default replaced by "not given"."""

    def __init__(self, parser) -> None:
        self.parser = parser

    def add_argument(self, *args: Any, **kwargs: Any):
        kwargs["default"] = argparse.SUPPRESS
        kwargs.pop("required", None)  # required-ness is checked after the config file is merged in
        return self.parser.add_argument(*args, **kwargs)


def _add_hf_options(parser: argparse.ArgumentParser, cls: type, title: str | None) -> None:
    from transformers import HfArgumentParser

    group = _Unset(parser.add_argument_group(title or cls.__name__))
    hints = _field_types(cls)
    for field in option_fields(cls):
        original = field.type
        field.type = hints[field.name]  # HfArgumentParser wants resolved types
        try:
            HfArgumentParser._parse_dataclass_field(group, field)
        finally:
            field.type = original


# --- values ------------------------------------------------------------------------------------------------

def _coerce(field: dataclasses.Field, tp: Any, value: Any, where: str) -> Any:
    """A value from a config file or a parsed flag, as the field's type wants it."""
    name = flag_of(field)
    if value is None:
        return None
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    spec = field.metadata.get(META_KEY)
    try:
        if tp is dict or origin is dict:
            values = parse_key_values(value if isinstance(value, list | Mapping) else [value], name)
            return nest_key_values(values, name) if spec is not None and spec.nested else values
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if origin is Literal:
            choices = typing.get_args(tp)
            if value not in choices:
                raise ConfigError(f"{where}option '{name}' must be one of {', '.join(map(str, choices))}, "
                                  f"got {value!r}")
            return value
        if origin is tuple:
            items = list(value) if isinstance(value, list | tuple) else [value]
            item_types = typing.get_args(tp)
            if len(items) != len(item_types):
                raise ConfigError(f"{where}option '{name}' takes {len(item_types)} values, got {items!r}")
            return tuple(_scalar(t, v) for t, v in zip(item_types, items, strict=True))
        if origin is list:
            (item,) = typing.get_args(tp) or (str,)
            items = list(value) if isinstance(value, list | tuple) else [value]
            return [_scalar(_unwrap_optional(item), v) for v in items]
        if isinstance(tp, type) and issubclass(tp, Enum):
            return tp(value)
        return _scalar(tp, value)
    except (TypeError, ValueError):
        expected = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"{where}option '{name}' expects {expected}, got {value!r}") from None


def _scalar(tp: Any, value: Any) -> Any:
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if tp is float:
        return float(value)
    if tp is str:
        if isinstance(value, dict | list):
            raise ValueError
        return str(value)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):  # e.g. int | str: the first type that takes the value
            if arg is type(None):
                continue
            try:
                return _scalar(arg, value)
            except (TypeError, ValueError):
                continue
        raise ValueError
    return value


def route(values: Mapping[str, Any], classes: Iterable[type], where: str = "",
          skip: Iterable[str] = ()) -> dict[type, dict[str, Any]]:
    """Assign each ``key: value`` to the option it names (field name, flag or alias, ``-`` or ``_``), coerced to
    that option's type; an unknown key is a ConfigError listing the known ones."""
    classes = list(classes)
    table: dict[str, tuple[type, dataclasses.Field]] = {}
    negated: set[str] = set()  # `no-refill: true` in a config file means refill = false
    hints: dict[type, dict[str, Any]] = {}
    for cls in classes:
        hints[cls] = _field_types(cls)
        for field in option_fields(cls):
            for name in _names(field):
                table.setdefault(name, (cls, field))
                if name != field.name and name.startswith("no_") and field.default is True:
                    negated.add(name)
    skip = {_normalise(s) for s in skip}
    out: dict[type, dict[str, Any]] = {cls: {} for cls in classes}
    for key, value in values.items():
        name = _normalise(str(key))
        if name in skip:
            continue
        if name not in table:
            known = sorted({flag_of(f)[2:] for c in classes for f in option_fields(c) if META_KEY in f.metadata})
            raise ConfigError(f"{where}unknown option '{key}' (known: {', '.join(known)}; the trainer's own "
                              "settings use their TrainingArguments names)" if any(map(_is_hf_arguments, classes))
                              else f"{where}unknown option '{key}' (known: {', '.join(known)})")
        cls, field = table[name]
        if name in negated:
            value = not _coerce(field, bool, value, where)
        if _is_hf_arguments(cls) and META_KEY not in field.metadata:
            out[cls][field.name] = _coerce_hf(field, hints[cls][field.name], value, where)
        else:
            out[cls][field.name] = _coerce(field, hints[cls][field.name], value, where)
    return out


def _coerce_hf(field: dataclasses.Field, tp: Any, value: Any, where: str) -> Any:
    """TrainingArguments fields: plain scalars are checked here, the rest is left to its ``__post_init__``."""
    inner = _unwrap_optional(tp)
    if inner in (int, float, bool) and not isinstance(value, list | dict):
        return _coerce(field, inner, value, where)
    return value


def build(cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """``cls(**values)``; a required option that is missing, or a value ``__post_init__`` refuses, is a
    ConfigError that names the flag."""
    missing = [flag_of(f) for f in option_fields(cls) if f.name not in values and
               f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}missing required option{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    try:
        return cls(**values)
    except ConfigError as exc:
        if where and not str(exc).startswith(where):
            raise ConfigError(f"{where}{exc}") from None
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}{exc}") from None


def from_mapping(classes: Iterable[type], values: Mapping[str, Any], where: str = "") -> list[Any]:
    """One instance per class from a flat mapping of option names to values (a YAML file, keyword arguments)."""
    classes = list(classes)
    routed = route(values, classes, where)
    return [build(cls, routed[cls], where) for cls in classes]


def given(obj: Any) -> dict[str, Any]:
    """The options of ``obj`` that differ from their declared defaults."""
    out = {}
    for field in option_fields(type(obj)):
        default = _default_of(field)
        value = getattr(obj, field.name)
        if default is dataclasses.MISSING or value != default:
            out[field.name] = value
    return out


def as_dict(obj: Any) -> dict[str, Any]:
    """The options of ``obj`` as JSON-friendly values (what a model folder or a run records)."""
    out = {}
    for field in option_fields(type(obj)):
        value = getattr(obj, field.name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value)
        except TypeError:
            value = repr(value)
        out[field.name] = value
    return out
