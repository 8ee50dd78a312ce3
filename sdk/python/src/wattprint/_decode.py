"""JSON → dataclass decoding driven by the dataclasses' type hints.

Field names are the server's JSON names; a trailing underscore is dropped (``from_`` reads
``from``). Unknown JSON fields are ignored, so a newer server does not break an older client;
a missing field is an error unless the field has a default.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, cast

from .errors import DecodeError

T = TypeVar("T")


def json_name(field: str) -> str:
    """The JSON name of a dataclass field."""
    return field[:-1] if field.endswith("_") else field


def decode(tp: type[T], value: Any) -> T:
    """Decodes parsed JSON ``value`` as ``tp``; :class:`DecodeError` naming the path if it does
    not fit."""
    try:
        return cast(T, _converter(cast(Any, tp))(value))
    except _Mismatch:
        # The fast converters do not track where they are; the reference decoder below accepts
        # exactly what they accept and says where and why a value does not fit.
        return cast(T, _decode(tp, value, "$"))


class _Mismatch(Exception):
    """A value does not fit; raised by the fast converters, without a path."""


@functools.cache
def _converter(tp: Any) -> Callable[[Any], Any]:
    """A function decoding a value of type ``tp``, built once per type.

    It accepts and returns exactly what :func:`_decode` does, but raises :class:`_Mismatch`
    (not :class:`DecodeError`) on the first value that does not fit: resolving the type, and
    formatting a path for every field, per object made decoding a long series take seconds.
    """
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        nullable = type(None) in args
        options = tuple(_converter(a) for a in args if a is not type(None))

        def union(value: Any) -> Any:
            if value is None and nullable:
                return None
            for option in options:
                try:
                    return option(value)
                except _Mismatch:
                    pass
            raise _Mismatch

        return union
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        item = _converter(item_tp)

        def list_(value: Any) -> Any:
            if not isinstance(value, list):
                raise _Mismatch
            return [item(v) for v in value]

        return list_
    if origin is dict:
        _, item_tp = typing.get_args(tp)
        item = _converter(item_tp)

        def dict_(value: Any) -> Any:
            if not isinstance(value, dict):
                raise _Mismatch
            return {str(k): item(v) for k, v in value.items()}

        return dict_
    if tp is Any:
        return lambda value: value
    if tp is bool:

        def bool_(value: Any) -> Any:
            if not isinstance(value, bool):
                raise _Mismatch
            return value

        return bool_
    if tp is int:

        def int_(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Mismatch
            return value

        return int_
    if tp is float:

        def float_(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _Mismatch
            return float(value)

        return float_
    if tp is str:

        def str_(value: Any) -> Any:
            if not isinstance(value, str):
                raise _Mismatch
            return value

        return str_
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        cls = tp
        fields = tuple(
            (field, name, _converter(hint), required) for field, name, hint, required in _plan(cls)
        )

        def dataclass_(value: Any) -> Any:
            if not isinstance(value, dict):
                raise _Mismatch
            kwargs: dict[str, Any] = {}
            for field, name, convert, required in fields:
                if name in value:
                    kwargs[field] = convert(value[name])
                elif required:
                    raise _Mismatch
            return cls(**kwargs)

        return dataclass_

    def unknown(value: Any) -> Any:
        raise _Mismatch

    return unknown


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


@functools.cache
def _plan(cls: type[Any]) -> tuple[tuple[str, str, Any, bool], ...]:
    """How to decode ``cls``, resolved once per class: for each field its Python name, JSON name,
    type hint and whether it is required. ``typing.get_type_hints`` evaluates every annotation
    string of the class and its bases, far too slow to repeat for each object of a long series."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (
            f.name,
            json_name(f.name),
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )


def _decode_dataclass(cls: type[Any], value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise _fail(path, f"an object ({cls.__name__})", value)
    kwargs: dict[str, Any] = {}
    for field, name, hint, required in _plan(cast(Any, cls)):
        if name in value:
            kwargs[field] = _decode(hint, value[name], f"{path}.{name}")
        elif required:
            raise DecodeError(f"{path}: missing field {name!r} of {cls.__name__}")
    return cls(**kwargs)
