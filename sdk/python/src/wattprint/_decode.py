"""JSON → dataclass decoding driven by the dataclasses' type hints.

Field names are the server's JSON names; a trailing underscore is dropped (``from_`` reads
``from``). Unknown JSON fields are ignored, so a newer server does not break an older client;
a missing field is an error unless the field has a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, cast

from .errors import DecodeError

T = TypeVar("T")


def json_name(field: str) -> str:
    """The JSON name of a dataclass field."""
    return field[:-1] if field.endswith("_") else field


def decode(tp: type[T], value: Any) -> T:
    """Decodes parsed JSON ``value`` as ``tp``; :class:`DecodeError` naming the path if it does
    not fit."""
    return cast(T, _decode(tp, value, "$"))


def _fail(path: str, expected: str, value: Any) -> DecodeError:
    return DecodeError(f"{path}: expected {expected}, got {type(value).__name__} {value!r:.80}")


def _decode(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, value, path)
            except DecodeError as e:
                errors.append(str(e))
        raise DecodeError("; ".join(errors))
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _fail(path, "a list", value)
        return [_decode(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _fail(path, "an object", value)
        return {str(k): _decode(item, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, "a boolean", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "an integer", value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, "a number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(path, "a string", value)
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _decode_dataclass(tp, value, path)
    raise DecodeError(f"{path}: no decoder for {tp!r}")


def _decode_dataclass(cls: type[Any], value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise _fail(path, f"an object ({cls.__name__})", value)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = json_name(f.name)
        if name in value:
            kwargs[f.name] = _decode(hints[f.name], value[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DecodeError(f"{path}: missing field {name!r} of {cls.__name__}")
    return cls(**kwargs)
