"""Checks for values that arrive over the wire: each raises InvalidRequest naming the field
(in the API's own names) and the rule it broke."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from updater.errors import InvalidRequest
from updater.events import MAX_MESSAGE_CHARS

I32_MAX = 2**31 - 1
MAX_STRING = 4096
MAX_LIST = 100_000


def need(value: Any, field: str, kind: type | tuple[type, ...] = object) -> Any:
    if value is None:
        raise InvalidRequest(field, "is required")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidRequest(field, "must be an integer")
    if not isinstance(value, kind):
        raise InvalidRequest(field, "has the wrong type")
    return value


def text(value: Any, field: str, limit: int = MAX_STRING, empty: bool = False) -> str:
    value = need(value, field, str)
    if not value and not empty:
        raise InvalidRequest(field, "must not be empty")
    if len(value) > limit:
        raise InvalidRequest(field, f"must be at most {limit} characters")
    return str(value)


def message(value: Any, field: str = "message") -> str:
    """Audit messages: optional, at most 1,024 characters (DESIGN §7)."""
    if value is None:
        return ""
    return text(value, field, MAX_MESSAGE_CHARS, empty=True)


def integer(value: Any, field: str, low: int = 0, high: int = I32_MAX) -> int:
    value = need(value, field, int)
    if not low <= value <= high:
        raise InvalidRequest(field, f"must be in {low}..{high}, got {value}")
    return int(value)


def listed(value: Any, field: str, limit: int = MAX_LIST) -> list[Any]:
    value = need(value, field, (list, set, tuple, frozenset))
    if len(value) > limit:
        raise InvalidRequest(field, f"must have at most {limit} entries")
    return list(value)


def enum_id(value: Any, table: Mapping[int, Any], field: str) -> Any:
    value = need(value, field, int)
    if value not in table:
        raise InvalidRequest(field, f"unknown value {value}")
    return table[value]


# -- field names --------------------------------------------------------------------------------

_WIRE_NAMES = {
    "stop_grace_ms": "stopGraceMs",
    "health_check": "healthCheck",
    "working_dir": "workingDir",
    "interval_ms": "intervalMs",
    "timeout_ms": "timeoutMs",
    "initial_delay_ms": "initialDelayMs",
    "healthy_threshold": "healthyThreshold",
    "unhealthy_threshold": "unhealthyThreshold",
}


def wire_field(field: str, prefix: str) -> str:
    """The API's name for a field the domain validated under its own name: `task.stop_grace_ms`
    in a request is `request.taskConfig.stopGraceMs`. Environment and label names stay as
    they are."""
    head, _, rest = field.partition(".")
    if head == "task":
        out = [f"{prefix}.taskConfig"]
        parts = rest.split(".") if rest else []
        for i, part in enumerate(parts):
            name, bracket, index = part.partition("[")
            out.append(_WIRE_NAMES.get(name, name) + bracket + index)
            if name in ("environment", "labels"):
                out += parts[i + 1 :]
                break
        return ".".join(out)
    return f"{prefix}.{field}" if field else prefix


def renamed(error: InvalidRequest, prefix: str) -> InvalidRequest:
    return InvalidRequest(wire_field(error.field, prefix), error.rule)
