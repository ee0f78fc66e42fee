"""Values of every type SPEC section 5 lists, shared by tests and renderer children.

Each sample says what it arrives as without annotations (its msgpack form)
and what it arrives as when the receiving parameter is annotated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import msgspec

UTC = dt.UTC


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 3


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    width: int
    label: str


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    value: Any
    annotation: Any
    untyped: Any  # what an unannotated receiver gets (the msgpack form)
    typed: Any  # what a receiver annotated with ``annotation`` gets


_AWARE = dt.datetime(2024, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)
_PLUS_TWO = dt.datetime(2024, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
_NAIVE = dt.datetime(2024, 1, 2, 3, 4, 5)
_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")

SAMPLES: tuple[Sample, ...] = (
    Sample("none", None, None, None, None),
    Sample("bool", True, bool, True, True),
    Sample("int", 42, int, 42, 42),
    Sample("int-min", -(2**63), int, -(2**63), -(2**63)),
    Sample("int-max", 2**64 - 1, int, 2**64 - 1, 2**64 - 1),
    Sample("float", 1.5, float, 1.5, 1.5),
    Sample("str", "héllo ✓", str, "héllo ✓", "héllo ✓"),
    Sample("bytes", b"\x00\xff\x10", bytes, b"\x00\xff\x10", b"\x00\xff\x10"),
    Sample("bytearray", bytearray(b"ab"), bytearray, b"ab", bytearray(b"ab")),
    Sample("memoryview", memoryview(b"mv"), bytes, b"mv", b"mv"),
    Sample("list", [1, "a", None], list[Any], [1, "a", None], [1, "a", None]),
    Sample("tuple", (1, "a"), tuple[int, str], [1, "a"], (1, "a")),
    Sample("dict", {"a": 1, "b": [2]}, dict[str, Any], {"a": 1, "b": [2]}, {"a": 1, "b": [2]}),
    Sample("datetime-utc", _AWARE, dt.datetime, _AWARE, _AWARE),
    Sample("datetime-offset", _PLUS_TWO, dt.datetime, _PLUS_TWO, _PLUS_TWO),
    Sample("datetime-naive", _NAIVE, dt.datetime, "2024-01-02T03:04:05", _NAIVE),
    Sample("date", dt.date(2024, 1, 2), dt.date, "2024-01-02", dt.date(2024, 1, 2)),
    Sample("time", dt.time(3, 4, 5), dt.time, "03:04:05", dt.time(3, 4, 5)),
    Sample(
        "timedelta",
        dt.timedelta(days=1, seconds=5, microseconds=7),
        dt.timedelta,
        "P1DT5.000007S",
        dt.timedelta(days=1, seconds=5, microseconds=7),
    ),
    Sample("uuid", _UUID, uuid.UUID, str(_UUID), _UUID),
    Sample("decimal", decimal.Decimal("1.10"), decimal.Decimal, "1.10", decimal.Decimal("1.10")),
    Sample("enum", Color.BLUE, Color, "blue", Color.BLUE),
    Sample("intenum", Level.HIGH, Level, 3, Level.HIGH),
    Sample("struct", Point(1, 2), Point, {"x": 1, "y": 2}, Point(1, 2)),
    Sample("dataclass", Box(3, "x"), Box, {"width": 3, "label": "x"}, Box(3, "x")),
    Sample("set", {3, 1, 2}, set[int], [1, 2, 3], {1, 2, 3}),
    Sample("frozenset", frozenset({5}), frozenset[int], [5], frozenset({5})),
    Sample(
        "nested",
        {"when": _AWARE, "ids": (_UUID,), "point": Point(0, -1)},
        dict[str, Any],
        {"when": _AWARE, "ids": [str(_UUID)], "point": {"x": 0, "y": -1}},
        {"when": _AWARE, "ids": [str(_UUID)], "point": {"x": 0, "y": -1}},
    ),
)

BY_NAME = {sample.name: sample for sample in SAMPLES}


def typed_handler(sample: Sample) -> Any:
    """A handler whose one parameter is annotated with ``sample.annotation``.

    It returns the received value's type name and whether it equals
    ``sample.typed``.
    """

    def handler(event: Any, value: Any) -> list[Any]:
        return [type(value).__name__, value == sample.typed]

    handler.__annotations__ = {"value": sample.annotation, "return": list[Any]}
    return handler


def normalize(sample: Sample, received: Any) -> Any:
    """Sets arrive as lists in iteration order: compare them sorted."""
    if sample.name in ("set", "frozenset") and isinstance(received, list):
        return sorted(received)
    return received
