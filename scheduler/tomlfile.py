"""TOML files with errors that point at a line: `load_toml`, a tiny declarative schema
(`Field`, `check_table`) and `locate`, since tomllib reports no positions for parsed keys.

Used for the scheduler config and, later, job files."""

from __future__ import annotations

import bisect
import builtins
import copy
import difflib
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from updater.errors import PulsegateError


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final[Any] = _Required()

Schema = Mapping[str, "Field | Mapping[str, Any]"]
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean (true or false)",
    list: "an array",
    dict: "a table",
}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[(\d+)\]")
_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)$")


class TomlError(PulsegateError):
    """A file (or another config source) broke a rule; names the dotted key and its line."""

    reason = "bad_file"

    def __init__(self, path: str, key: str, line: int | None, rule: str, hint: str = "") -> None:
        where = f"{path}:{line}" if line is not None else path
        parts = [p for p in (where, key) if p]
        parts.append(f"{rule} ({hint})" if hint else rule)
        super().__init__(": ".join(parts))
        self.path = path
        self.key = key
        self.line = line
        self.rule = rule
        self.hint = hint


def _tuple_or_none(values: Iterable[Any] | None) -> tuple[Any, ...] | None:
    return None if values is None else tuple(values)


@attrs.frozen
class Field:
    """One key of a schema. `items` checks each element of a list: a type, a Field, or a
    table schema (an array of tables). `check` returns the rule a value breaks, or None."""

    type: builtins.type
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = attrs.field(default=None, converter=_tuple_or_none)
    min: float | None = None
    max: float | None = None
    doc: str = ""
    items: builtins.type | Field | Mapping[str, Any] | None = None
    check: Callable[[Any], str | None] | None = None

    @property
    def is_required(self) -> bool:
        return self.default is REQUIRED


def dotted(prefix: str, key: str | int) -> str:
    """Join a key to its table's dotted name, quoting keys that are not bare and writing
    array elements as `[i]`, so that `locate` can read the result back."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    part = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{prefix}.{part}" if prefix else part


def load_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; return the data and the text (for `locate`). Unreadable files and
    syntax errors become TomlError with the line tomllib reported."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TomlError(str(path), "", None, f"cannot read file: {e}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        match = _TOML_POSITION.search(message)
        line: int | None = None
        if match:
            line = int(match.group(1)) if match.group(1) else max(1, len(text.splitlines()))
            message = message[: match.start()]
        raise TomlError(str(path), "", line, message) from None


def check_table(
    data: Mapping[str, Any], schema: Schema, path: str, text: str, prefix: str = ""
) -> dict[str, Any]:
    """Validate `data` against `schema` (nested mappings are tables) and return a new dict
    with defaults filled in. The first broken rule raises TomlError naming the key and line."""
    for key in data:
        if key not in schema:
            name = dotted(prefix, key)
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f"did you mean {dotted(prefix, close[0])}?" if close else ""
            raise TomlError(path, name, locate(text, name), "unknown key", hint)
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        name = dotted(prefix, key)
        if isinstance(spec, Mapping):
            value = data.get(key, {})
            if not isinstance(value, dict):
                raise TomlError(path, name, locate(text, name), "must be a table")
            out[key] = check_table(value, spec, path, text, name)
        elif key in data:
            out[key] = _check_value(data[key], spec, name, path, text)
        elif spec.is_required:
            line = locate(text, prefix) if prefix else None
            raise TomlError(path, name, line, "missing required key")
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def _check_value(value: Any, field: Field, name: str, path: str, text: str) -> Any:
    def fail(rule: str) -> TomlError:
        shown = repr(value)
        hint = f"got {shown if len(shown) <= 60 else shown[:57] + '...'}"
        return TomlError(path, name, locate(text, name), rule, hint)

    kind = field.type
    if kind in (int, float):
        accepted = (int, float) if kind is float else (int,)
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise fail(f"must be {_TYPE_NAMES[kind]}")
        if kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise fail("must be a finite number")
    elif not isinstance(value, kind):
        raise fail(f"must be {_TYPE_NAMES.get(kind, kind.__name__)}")
    if kind is list and field.items is not None:
        value = [
            _check_item(item, field.items, dotted(name, i), path, text)
            for i, item in enumerate(value)
        ]
    if field.choices is not None and value not in field.choices:
        raise fail("must be one of " + ", ".join(str(c) for c in field.choices))
    low, high = field.min, field.max
    if (low is not None and value < low) or (high is not None and value > high):
        if low is None:
            raise fail(f"must be at most {_number(high)}")
        if high is None:
            raise fail(f"must be at least {_number(low)}")
        raise fail(f"must be between {_number(low)} and {_number(high)}")
    rule = field.check(value) if field.check is not None else None
    if rule:
        raise fail(rule)
    return value


def _number(value: float | None) -> str:
    """1000000, not 1e+06; 0.5 as is."""
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def _check_item(item: Any, spec: Any, name: str, path: str, text: str) -> Any:
    if isinstance(spec, Mapping):
        if not isinstance(item, dict):
            raise TomlError(path, name, locate(text, name), "must be a table")
        return check_table(item, spec, path, text, name)
    return _check_value(item, spec if isinstance(spec, Field) else Field(spec), name, path, text)


def locate(text: str, dotted_key: str) -> int | None:
    """The 1-based line where `dotted_key` (as written by `dotted`, e.g. `api.port`,
    `auth.principals[1].name`) is first defined or first implied, or None.

    Best effort, for error messages only: it understands `[table]` and `[[array]]` headers,
    `key = value` lines, dotted and quoted keys, inline tables and arrays (elements are
    `[i]`), and skips strings and comments. Limits: escapes in quoted keys other than `\\"`
    and `\\\\` are not decoded, and a line it cannot read is skipped.
    """
    try:
        target = _read_target(dotted_key)
    except (ValueError, IndexError):
        return None
    if not target:
        return None
    return _Scanner(text).scan().get(target)


def _read_target(key: str) -> tuple[str | int, ...]:
    scanner = _Scanner(key)
    parts, pos = scanner.key(0, indexes=True)
    if pos != len(key):
        raise ValueError(key)
    return parts


class _Scanner:
    """A forgiving TOML reader that records where each key path first appears."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self.found: dict[tuple[str | int, ...], int] = {}
        self.arrays: dict[tuple[str | int, ...], int] = {}

    def scan(self) -> dict[tuple[str | int, ...], int]:
        text, pos, table = self.text, 0, ()
        while (pos := self.skip(pos, newlines=True)) < len(text):
            try:
                if text[pos] == "[":
                    is_array = text.startswith("[[", pos)
                    parts, end = self.key(pos + (2 if is_array else 1))
                    end = self.expect(end, "]]" if is_array else "]")
                    table = self.resolve(parts, is_array, pos)
                else:
                    parts, end = self.key(pos)
                    self.record(table + parts, pos)
                    end = self.value(self.expect(end, "="), table + parts)
                pos = self.skip(end)
                if pos < len(text) and text[pos] != "\n":
                    raise ValueError(pos)
            except (ValueError, IndexError):
                newline = text.find("\n", pos)
                pos = len(text) if newline < 0 else newline + 1
        return self.found

    def record(self, path: tuple[str | int, ...], pos: int) -> None:
        line = bisect.bisect_right(self.starts, pos)
        for i in range(1, len(path) + 1):
            self.found.setdefault(path[:i], line)

    def resolve(self, parts: tuple[str | int, ...], is_array: bool, pos: int) -> tuple[Any, ...]:
        resolved: list[str | int] = []
        for i, part in enumerate(parts):
            resolved.append(part)
            here = tuple(resolved)
            if is_array and i == len(parts) - 1:
                self.arrays[here] = self.arrays.get(here, -1) + 1
                resolved.append(self.arrays[here])
            elif here in self.arrays:
                resolved.append(self.arrays[here])
        self.record(tuple(resolved), pos)
        return tuple(resolved)

    def skip(self, pos: int, newlines: bool = False) -> int:
        text = self.text
        while pos < len(text):
            if text[pos] == "#":
                end = text.find("\n", pos)
                pos = len(text) if end < 0 else end
            elif text[pos] in " \t\r" or (newlines and text[pos] == "\n"):
                pos += 1
            else:
                break
        return pos

    def expect(self, pos: int, token: str) -> int:
        pos = self.skip(pos)
        if not self.text.startswith(token, pos):
            raise ValueError(pos)
        return pos + len(token)

    def key(self, pos: int, indexes: bool = False) -> tuple[tuple[str | int, ...], int]:
        text, parts = self.text, list[str | int]()
        while True:
            pos = self.skip(pos)
            if text[pos] in "\"'":
                end = self.string(pos)
                raw = text[pos + 1 : end - 1]
                if text[pos] == '"':
                    raw = raw.replace('\\"', '"').replace("\\\\", "\\")
                parts.append(raw)
                pos = end
            elif match := _BARE_KEY.match(text, pos):
                parts.append(match.group())
                pos = match.end()
            else:
                raise ValueError(pos)
            while indexes and (match := _INDEX.match(text, pos)):
                parts.append(int(match.group(1)))
                pos = match.end()
            pos = self.skip(pos)
            if pos >= len(text) or text[pos] != ".":
                return tuple(parts), pos
            pos += 1

    def string(self, pos: int) -> int:
        """The position just after the string (basic, literal or multi-line) opening at pos."""
        text, quote = self.text, self.text[pos]
        delimiter = quote * 3 if text.startswith(quote * 3, pos) else quote
        pos += len(delimiter)
        while pos < len(text):
            if quote == '"' and text[pos] == "\\":
                pos += 2
            elif text.startswith(delimiter, pos):
                pos += len(delimiter)
                while len(delimiter) == 3 and pos < len(text) and text[pos] == quote:
                    pos += 1  # up to two quotes may end a multi-line string's content
                return pos
            elif text[pos] == "\n" and len(delimiter) == 1:
                break
            else:
                pos += 1
        raise ValueError(pos)

    def value(self, pos: int, path: tuple[str | int, ...]) -> int:
        text = self.text
        pos = self.skip(pos)
        char = text[pos]
        if char in "\"'":
            return self.string(pos)
        if char == "{":
            pos = self.skip(pos + 1, newlines=True)
            while text[pos] != "}":
                parts, end = self.key(pos)
                self.record(path + parts, pos)
                pos = self.skip(self.value(self.expect(end, "="), path + parts), newlines=True)
                if text[pos] == ",":
                    pos = self.skip(pos + 1, newlines=True)
                elif text[pos] != "}":
                    raise ValueError(pos)
            return pos + 1
        if char == "[":
            pos, index = self.skip(pos + 1, newlines=True), 0
            while text[pos] != "]":
                self.record((*path, index), pos)
                pos = self.skip(self.value(pos, (*path, index)), newlines=True)
                index += 1
                if text[pos] == ",":
                    pos = self.skip(pos + 1, newlines=True)
                elif text[pos] != "]":
                    raise ValueError(pos)
            return pos + 1
        end = pos
        while end < len(text) and text[end] not in ",]}\n#":
            end += 1
        if end == pos:
            raise ValueError(pos)
        return end
