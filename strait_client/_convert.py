"""Plain Python values -> protobuf request fields, driven by the message descriptors (the way back is in
_models: each result type decodes its own message).

From keyword-style mappings: JSON fields take any JSON-encodable value under the short name ("payload") or
text under the full name ("payload_json"); Timestamps take aware datetimes, Durations timedeltas (or
seconds), enums their short name, StrEnum member or number, messages dicts, messages, or the client's
dataclasses (JobRetryPolicy, ApiRateLimit; those with a `to_proto()`, like Step, build their own message).
Unknown names raise TypeError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

JSON_SUFFIX = "_json"
_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
_DURATION = Duration.DESCRIPTOR.full_name
_WELL_KNOWN = frozenset({_TIMESTAMP, _DURATION})
M = TypeVar("M", bound=Message)


def _enum_prefix(enum: EnumDescriptor) -> str:
    """RUN_STATUS_ for RunStatus: the name of value 0 ("..._UNSPECIFIED") without UNSPECIFIED."""
    zero = enum.values_by_number.get(0)
    return zero.name.removesuffix("UNSPECIFIED") if zero is not None else ""


def enum_number(enum: EnumDescriptor, value: str | int) -> int:
    if isinstance(value, int):
        return value
    full = _enum_prefix(enum) + value.upper()
    found = enum.values_by_name.get(full) or enum.values_by_name.get(value.upper())
    if found is None:
        names = sorted(v.name.removeprefix(_enum_prefix(enum)).lower() for v in enum.values if v.number)
        raise ValueError(f"{value!r} is not a {enum.name}; expected one of {', '.join(names)}")
    return int(found.number)


def _descriptor(message: Message) -> Descriptor:
    return cast(Descriptor, message.DESCRIPTOR)  # the upb and pure-Python descriptors share this API


def _message_type(field: FieldDescriptor) -> Descriptor:
    if field.message_type is None:
        raise TypeError(f"{field.name} is not a message field")
    return field.message_type


def _enum_type(field: FieldDescriptor) -> EnumDescriptor:
    if field.enum_type is None:
        raise TypeError(f"{field.name} is not an enum field")
    return field.enum_type


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _is_json(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_STRING and field.name.endswith(JSON_SUFFIX)


def _field(descriptor: Descriptor, key: str) -> tuple[FieldDescriptor, bool]:
    """The field a keyword names, and whether its value must be JSON-encoded first."""
    field = descriptor.fields_by_name.get(key)
    if field is not None:
        return field, False
    field = descriptor.fields_by_name.get(key + JSON_SUFFIX)
    if field is not None and _is_json(field):
        return field, True
    raise TypeError(f"{descriptor.name} has no field {key!r}")


def encode_json(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _timestamp(value: Any) -> Timestamp:
    if isinstance(value, Timestamp):
        return value
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware (e.g. datetime.now(UTC))")
    out = Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def _duration(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta):
        raise TypeError(f"expected a timedelta, got {type(value).__name__}")
    out = Duration()
    out.FromTimedelta(value)
    return out


def _set_message(target: Message, value: Any) -> None:
    full_name = _descriptor(target).full_name
    if full_name == _TIMESTAMP:
        target.CopyFrom(_timestamp(value))
    elif full_name == _DURATION:
        target.CopyFrom(_duration(value))
    elif isinstance(value, Message):
        target.CopyFrom(value)
    elif isinstance(value, Mapping):
        fill(target, value)
    elif is_dataclass(value) and not isinstance(value, type):
        # A type that knows its message (Step, JobStep...) builds it; others (JobRetryPolicy...) map by name.
        to_proto = getattr(value, "to_proto", None)
        if to_proto is not None:
            target.CopyFrom(to_proto())
        else:
            fill(target, _dataclass_values(value))
    else:
        raise TypeError(f"expected a dict for {target.DESCRIPTOR.name}, got {type(value).__name__}")


def _dataclass_values(value: Any) -> dict[str, Any]:
    """A result dataclass (JobRetryPolicy, ApiRateLimit...) as keywords; its None fields are left unset."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


def _scalar_in(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_number(_enum_type(field), value)
    return value


def _set(message: Message, field: FieldDescriptor, value: Any) -> None:
    current = getattr(message, field.name)
    if _is_map(field):
        value_field = _message_type(field).fields_by_name["value"]
        for k, v in dict(value).items():
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                _set_message(current[k], v)
            else:
                current[k] = _scalar_in(value_field, v)
    elif field.is_repeated:
        if isinstance(value, str | bytes | Mapping):
            raise TypeError(f"{field.name} takes a list")
        for item in value:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                _set_message(current.add(), item)
            else:
                current.append(_scalar_in(field, item))
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.containing_oneof is not None:
            current.SetInParent()  # naming a oneof member picks it, even with nothing in it (approval={})
        _set_message(current, value)
    else:
        setattr(message, field.name, _scalar_in(field, value))


def fill(message: M, values: Mapping[str, Any]) -> M:
    """Sets the fields named in `values` (None values are skipped) and returns the message."""
    for key, value in values.items():
        field, as_json = _field(_descriptor(message), key)
        if value is None:
            continue
        try:
            _set(message, field, encode_json(value) if as_json else value)
        except (TypeError, ValueError) as exc:
            raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{key}: {exc}") from exc
    return message


def mask_paths(descriptor: Descriptor, values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """FieldMask paths for the keywords in `values`. For a (non well-known) message field, a dict names the
    sub-fields to change and leaves the others alone; a message instance replaces every sub-field."""
    paths: list[str] = []
    for key, value in values.items():
        field, _ = _field(descriptor, key)
        nested = field.message_type
        if nested is None or _is_map(field) or field.is_repeated or nested.full_name in _WELL_KNOWN:
            paths.append(prefix + field.name)
        elif isinstance(value, Mapping) and value:
            paths.extend(mask_paths(nested, value, f"{prefix}{field.name}."))
        elif isinstance(value, Message) or (is_dataclass(value) and not isinstance(value, type)):
            paths.extend(mask_paths(nested, dict.fromkeys(f.name for f in nested.fields), f"{prefix}{field.name}."))
        else:
            paths.append(prefix + field.name)
    return paths


def top_level_paths(descriptor: Descriptor, values: Mapping[str, Any]) -> list[str]:
    """FieldMask paths naming whole fields, for methods that take no sub-field paths (UpdateProject,
    UpdateApiKey): a message value replaces the whole message."""
    return [_field(descriptor, key)[0].name for key in values]
