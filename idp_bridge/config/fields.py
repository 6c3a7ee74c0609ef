"""How a setting is declared, and how one table of the file becomes one frozen dataclass.

A section is a frozen dataclass whose fields are its keys: each field's type says what the file may hold
(``int``, ``float``, ``bool``, ``str``, ``Path``, ``tuple[str, ...]``, ``X | None``) and ``setting(...)``
adds the rest (bounds, an environment override, a check). ``parse_section`` reads one table against those
fields: an unknown key is refused with the keys it may have meant, a wrong type or an out-of-range number
names the key, the value and what was expected. Rule: no section keeps a hand-written list of its keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from idp_bridge.errors import ConfigError

Check = Callable[[Any, str], Any]


def setting(default: Any = dataclasses.MISSING, *, env: str | None = None, minimum: float | None = None,
            maximum: float | None = None, check: Check | None = None, parse: Check | None = None,
            key: str | None = None, in_file: bool = True, secret: bool = False) -> Any:
    """A field of a section: its default and how the file's value is read and checked.

    ``env``: an environment variable that overrides the file (secrets, per-deployment values);
    ``minimum``/``maximum``: bounds of a number; ``check(value, where)`` returns the value to keep or raises
    ConfigError; ``parse(raw, where)`` reads a value the file cannot spell directly (it replaces the type
    check); ``key``: the file's name for it when it differs from the field's; ``in_file=False``: not
    read from the file (filled in by the loader); ``secret``: kept out of ``repr``.
    """
    meta = {"env": env, "min": minimum, "max": maximum, "check": check, "parse": parse, "key": key,
            "in_file": in_file}
    if isinstance(default, list | dict | set):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, repr=not secret)
    return dataclasses.field(default=default, metadata=meta, repr=not secret)


def check_url(value: str, where: str) -> str:
    """An absolute http(s) URL without query or fragment, kept without its trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {value!r} is not an absolute http(s) URL", code="config_url")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: {value!r} must not carry a query or fragment", code="config_url")
    return value.rstrip("/")


def resolve_path(base_dir: Path, value: str | Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def file_key(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("key") or f.name


def file_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The section's keys in the file -> its fields (nested sections and loader-filled fields excluded)."""
    return {file_key(f): f for f in dataclasses.fields(cls) if f.metadata.get("in_file", True)}


def refuse_unknown(table: Mapping[str, Any], known: typing.Iterable[str], where: str) -> None:
    known = sorted(known)
    unknown = sorted(set(table) - set(known))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    where = where.rstrip(".") or "the top level"
    raise ConfigError(f"{where}: unknown key(s) {', '.join(hints)}; expected {', '.join(known) or 'none'}",
                      code="config_unknown_key")


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return "list"
    return {str: "string", int: "whole number", float: "number", bool: "true or false", Path: "path (string)"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def _coerce(value: Any, kind: Any, where: str, base_dir: Path) -> Any:
    """``value`` as the field's type, or ConfigError naming what was expected."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None:
            return None
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where, base_dir)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: {value!r} is a {type(value).__name__}; expected a list", code="config_type")
        item = typing.get_args(kind)[0]
        return tuple(_coerce(v, item, f"{where}[{i}]", base_dir) for i, v in enumerate(value))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {value!r} is not a path", code="config_type")
        return resolve_path(base_dir, value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {value!r} is a {type(value).__name__}; expected a {_type_name(kind)}",
                          code="config_type")
    return value


def parse_section(cls: type, table: Mapping[str, Any], where: str, *, env: Mapping[str, str],
                  base_dir: Path, **given: Any) -> dict[str, Any]:
    """The keyword arguments for ``cls`` read from ``table`` (``where`` prefixes every message, e.g. ``"saml."``).

    ``given`` holds fields the caller fills in itself (nested sections, lists of tables).
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where.rstrip('.')}: expected a table, got {type(table).__name__}", code="config_type")
    fields = file_fields(cls)
    refuse_unknown(table, [*fields, *given], where)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = dict(given)
    for key, f in fields.items():
        if f.name in given:
            continue
        name = where + key
        meta = f.metadata
        value = env.get(meta["env"]) if meta.get("env") else None
        if value is None or value == "":
            if key not in table:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ConfigError(f"{name}: missing (required)", code="config_missing_key")
                continue
            value = table[key]
        value = meta["parse"](value, name) if meta.get("parse") else _coerce(value, hints[f.name], name, base_dir)
        if isinstance(value, int | float) and not isinstance(value, bool):
            low, high = meta.get("min"), meta.get("max")
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = (f"between {low:g} and {high:g}" if low is not None and high is not None
                          else f"at least {low:g}" if low is not None else f"at most {high:g}")
                raise ConfigError(f"{name}: {value!r} must be {bounds}", code="config_range")
        if meta.get("check") is not None and value is not None:
            value = meta["check"](value, name)
        values[f.name] = value
    return values
