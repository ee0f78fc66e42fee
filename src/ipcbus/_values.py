"""Values on the wire: encoding errors that say where, and typed arguments.

Encoding is msgspec's own (SPEC section 5 lists nothing msgspec lacks). This
module adds what msgspec does not say on failure: *which* argument, and where
inside it, could not be encoded. That walk runs only after a failure, so the
hot path is one ``encode_into`` per frame. A value too large for the peer's
``max_frame_size`` gets its caller's error here too (``too_large``).

Decoding is deferred: arguments arrive as one ``msgspec.Raw`` msgpack array.
A callback without annotations gets them decoded generically (msgpack forms);
one with annotations gets a Decoder built for exactly those types, so the
arguments are decoded and validated in one pass, and a mismatch never reaches
the callback.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from ._errors import FrameTooLargeError, SerializationError, ValidationError

__all__ = (
    "DECODE_ERRORS",
    "ENCODE_ERRORS",
    "RAISE_THE_LIMIT",
    "Signature",
    "decode_argument_list",
    "decode_one_argument",
    "decode_value",
    "encode_error",
    "invalid_arguments",
    "too_large",
    "unencodable",
    "untyped_decoder",
)

untyped_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()

#: The arguments of an untyped callback: any msgpack array, as a list; for
#: anything else it raises one of ``DECODE_ERRORS`` (see ``invalid_arguments``).
decode_argument_list: Callable[[msgspec.Raw], list[Any]] = msgspec.msgpack.Decoder(list).decode
#: Exactly one argument of any type, as a 1-tuple (an untyped callback of one argument).
decode_one_argument: Callable[[msgspec.Raw], tuple[Any]] = msgspec.msgpack.Decoder(
    tuple[Any]
).decode

#: What decoding a peer's bytes can raise: msgspec's errors, and two that are
#: not msgspec.DecodeError (a str that is not UTF-8; nesting too deep).
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

#: What encoding a value can raise: msgspec's errors for unsupported types and
#: out-of-range integers, and RecursionError for a reference cycle.
ENCODE_ERRORS = (TypeError, OverflowError, msgspec.EncodeError, RecursionError)
_probe = msgspec.msgpack.Encoder()
_SUPPORTED = (
    "None, bool, int, float, str, bytes, bytearray, memoryview, list, tuple, dict, set, "
    "frozenset, datetime, date, time, timedelta, uuid.UUID, decimal.Decimal, enum.Enum, "
    "msgspec.Struct and dataclasses"
)


def invalid_arguments(channel: str, raw: msgspec.Raw, exc: Exception) -> ValidationError:
    """The error for untyped arguments that ``decode_argument_list`` refused with ``exc``."""
    if isinstance(exc, msgspec.ValidationError):  # well-formed, but not an array
        return ValidationError(f"Invalid arguments for {channel!r}: not an argument list")
    return ValidationError(f"Invalid arguments for {channel!r}: {_locate(raw, exc, None)}")


#: The arguments as one Raw each, to find which one fails. Skipping a value
#: does not validate its contents (a str that is not UTF-8 passes as Raw).
_raw_items: Callable[[msgspec.Raw], list[msgspec.Raw]] = msgspec.msgpack.Decoder(
    list[msgspec.Raw]
).decode


def _locate(raw: msgspec.Raw, exc: Exception, signature: Signature | None) -> str:
    """Which argument in ``raw`` failed with ``exc`` and why, in ipcbus's words first.

    Runs only after a failure: each argument is decoded again on its own (against
    its annotation if ``signature`` is typed). msgspec's own account follows in
    parentheses; its wording is msgspec's and changes between releases.
    """
    try:
        items = _raw_items(raw)
    except DECODE_ERRORS:
        items = []  # the array itself is broken: say so for the whole list
    for index, item in enumerate(items):
        label = signature.label(index) if signature is not None else ""
        try:
            if signature is not None:
                signature.item_decoder(index).decode(item)
            else:
                untyped_decoder.decode(item)
        except msgspec.ValidationError:
            return f"argument {index}{label} does not fit its annotation ({exc})"
        except DECODE_ERRORS as item_exc:
            return f"argument {index}{label} could not be decoded, {_why(item_exc)} ({exc})"
        except Exception:  # an annotation msgspec cannot use
            return f"argument {index}{label} has an annotation ipcbus cannot check ({exc})"
    if isinstance(exc, msgspec.ValidationError):
        return f"the arguments do not fit the annotations ({exc})"
    return f"the argument list could not be decoded, {_why(exc)} ({exc})"


def _why(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    return "it is not valid msgpack"


def decode_value(raw: msgspec.Raw | bytes) -> Any:
    """Decode a result or reply value into its msgpack form."""
    return untyped_decoder.decode(raw)


def _find_unencodable(
    value: Any, path: str, seen: frozenset[int] = frozenset()
) -> tuple[str, Any] | None:
    """Depth-first: the path and value of the innermost thing that fails to encode.

    A container met again below itself is a reference cycle, reported as such.
    """
    if id(value) in seen:
        return path, _CYCLE
    try:
        _probe.encode(value)
    except ENCODE_ERRORS:
        pass
    else:
        return None
    seen = seen | {id(value)}
    children: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            shown = _shown(key)
            children.append((f"{path}[{shown}] (key)", key))
            children.append((f"{path}[{shown}]", item))
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    elif isinstance(value, msgspec.Struct):
        children = [(f"{path}.{f}", getattr(value, f)) for f in value.__struct_fields__]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = [(f"{path}.{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
    for child_path, child in children:
        if (found := _find_unencodable(child, child_path, seen)) is not None:
            return found
    return path, value


def _shown(value: Any) -> str:
    """``repr(value)`` for an error message, short, and never raising: a repr that
    fails (an int past Python's 4,300 digits, a broken ``__repr__``) names the type."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object>"
    return text if len(text) <= 60 else f"{text[:57]}..."


class _Cycle:
    """Marks a value found again inside itself."""


_CYCLE = _Cycle()


def encode_error(
    what: str, channel: str, args: Any, exc: BaseException, *, named: str | None = None
) -> SerializationError:
    """Build the ``SerializationError`` for ``args`` that failed to encode with ``exc``.

    ``what`` names the call ("send", "invoke", "return a value"...), and the
    message names the channel, the position inside the arguments and the type.
    ``named``: ``args`` is one value (a result, an item), called so.
    """
    return SerializationError(
        f"Cannot {what} on channel {channel!r}: {unencodable(args, exc, named=named)}. "
        f"Supported types are {_SUPPORTED}; any other object could not be cloned."
    )


RAISE_THE_LIMIT = (
    "Raise max_frame_size on the receiving side (IpcMain(max_frame_size=...) "
    "or IpcRenderer(max_frame_size=...)) to allow it"
)


def too_large(
    what: str, channel: str | None, exc: FrameTooLargeError, advice: str = RAISE_THE_LIMIT
) -> FrameTooLargeError:
    """The caller's error for a frame over the peer's announced ``max_frame_size``
    (``channel`` ``None``: a message on a port)."""
    where = f"channel {channel!r}" if channel is not None else "a port"
    return FrameTooLargeError(
        f"Cannot {what} on {where}: {exc}; nothing was sent and the connection is fine. {advice}"
    )


def unencodable(args: Any, exc: BaseException, *, named: str | None = None) -> str:
    """Where in ``args`` encoding failed, and why.

    ``args`` is an argument list, or with ``named`` one value called so ("the
    value", "the message"). Never raises: a value nested deeper than Python
    can walk is reported as such, with the position of the argument it is in.
    """
    found = None
    where = named or "the value"
    too_deep = False
    try:
        if named is None and isinstance(args, (list, tuple)):
            for i, arg in enumerate(args):
                where = f"argument {i}"
                if (found := _find_unencodable(arg, where)) is not None:
                    break
        else:
            found = _find_unencodable(args, where)
    except RecursionError:  # the walk itself went too deep: no inner path to give
        found, too_deep = None, True
    except Exception:  # a value that breaks the walk itself: say where it began
        found = None
    where, bad = found if found is not None else (where, args)
    if bad is _CYCLE or (found is None and (too_deep or isinstance(exc, RecursionError))):
        problem = (
            "it contains itself (a reference cycle), or is nested too deeply; "
            "values are sent by copy, so send a structure without cycles"
        )
    elif isinstance(exc, OverflowError) or (
        isinstance(bad, int) and not isinstance(bad, enum.Enum)
    ):
        problem = f"the integer {_shown(bad)} is outside msgpack's range (-2**63 to 2**64-1)"
    else:
        problem = f"objects of type {type(bad).__module__}.{type(bad).__qualname__} cannot be sent"
    return f"{where}: {problem}"


def _array_length(raw: msgspec.Raw) -> int | None:
    """Length from a msgpack array header, or ``None`` if ``raw`` is not an array."""
    data = memoryview(raw)
    if not data:
        return None
    first = data[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first == 0xDC and len(data) >= 3:
        return int.from_bytes(data[1:3], "big")
    if first == 0xDD and len(data) >= 5:
        return int.from_bytes(data[1:5], "big")
    return None


class Signature:
    """How to decode the arguments of one callback (everything after ``event``).

    Built once, at registration. ``decode`` returns the positional arguments
    to call the callback with, or raises ``ValidationError``.
    """

    __slots__ = (
        "_decoders",
        "_item_decoders",
        "_max",
        "_min",
        "_names",
        "_types",
        "_variadic",
        "arity",
        "fast_decode",
        "typed",
    )

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.typed = False
        #: ``fast_decode(raw)``: the arguments in one C call when they fit (any
        #: argument list if untyped; typed: only of a fixed count), raising one
        #: of ``DECODE_ERRORS`` otherwise; then ``decode`` says what is wrong.
        #: ``None`` where the count must be read first (defaults, ``*args``).
        self.fast_decode: Callable[[msgspec.Raw], list[Any] | tuple[Any, ...]] | None = (
            decode_argument_list
        )
        self._types: list[Any] = []
        self._names: list[str] = []
        self._variadic: Any = None
        self._min = 0
        self._max: int | None = None
        #: How many arguments the callback takes, if always the same (else None).
        self.arity: int | None = None
        self._decoders: dict[int, msgspec.msgpack.Decoder[Any]] = {}
        self._item_decoders: dict[int, msgspec.msgpack.Decoder[Any]] = {}
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return  # a builtin or other callable without a signature: untyped
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}  # unresolvable annotations: decode generically
        positional = [
            p
            for p in params
            if p.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        variadic = [p for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL]
        arguments = positional[1:]  # the first parameter receives the event
        self._types = [hints.get(p.name, Any) for p in arguments]
        self._names = [p.name for p in arguments]
        self._min = sum(1 for p in arguments if p.default is inspect.Parameter.empty)
        self._max = None if variadic else len(arguments)
        self.arity = self._min if self._min == self._max else None
        if variadic:
            self._variadic = hints.get(variadic[0].name, Any)
            self._names.append(f"*{variadic[0].name}")
        self.typed = any(t is not Any for t in self._types) or self._variadic not in (None, Any)
        if not self.typed and self.arity == 1:
            # A 1-tuple or a DECODE_ERROR: dispatch may then call fn(event, args[0])
            # (Callback.one); another count goes through decode and fails in the call.
            self.fast_decode = decode_one_argument
        if self.typed:
            self.fast_decode = None
            if self._max == self._min:
                try:
                    self.fast_decode = self._decoder_for(self._min).decode
                except Exception:  # an annotation msgspec cannot use: reported per call
                    pass

    def _decoder_for(self, count: int) -> msgspec.msgpack.Decoder[Any]:
        decoder = self._decoders.get(count)
        if decoder is None:
            types = self._types[:count] + [self._variadic] * (count - len(self._types))
            decoder = msgspec.msgpack.Decoder(tuple[tuple(types)] if types else tuple[()])  # type: ignore[misc]
            if len(self._decoders) < 64:
                self._decoders[count] = decoder
        return decoder

    def _type_at(self, index: int) -> Any:
        return self._types[index] if index < len(self._types) else self._variadic

    def label(self, index: int) -> str:
        """`` (name: type)`` of the parameter that takes argument ``index``."""
        names = self._names
        if not names or (index >= len(self._types) and self._variadic is None):
            return ""
        name = names[index] if index < len(self._types) else names[-1]
        annotation = self._type_at(index)
        shown = annotation.__qualname__ if isinstance(annotation, type) else str(annotation)
        return f" ({name}: {shown.replace('typing.', '')})"

    def item_decoder(self, index: int) -> msgspec.msgpack.Decoder[Any]:
        """A Decoder for argument ``index`` alone (for error reports)."""
        decoder = self._item_decoders.get(index)
        if decoder is None:
            decoder = msgspec.msgpack.Decoder(self._type_at(index))
            if len(self._item_decoders) < 64:
                self._item_decoders[index] = decoder
        return decoder

    def decode(self, channel: str, raw: msgspec.Raw) -> list[Any] | tuple[Any, ...]:
        """Decode ``raw`` (a msgpack array) into positional arguments."""
        if not self.typed:
            try:
                return decode_argument_list(raw)
            except DECODE_ERRORS as exc:
                raise invalid_arguments(channel, raw, exc) from None
        count = _array_length(raw)
        if count is None:
            raise ValidationError(f"Invalid arguments for {channel!r}: not an argument list")
        if count < self._min or (self._max is not None and count > self._max):
            expected = (
                f"at least {self._min}"
                if self._max is None
                else f"{self._min}"
                if self._min == self._max
                else f"{self._min} to {self._max}"
            )
            raise ValidationError(
                f"Invalid arguments for {channel!r}: expected {expected} "
                f"argument{'s' if expected != '1' else ''}, got {count}"
            )
        decoder = self._decoder_for(count)
        try:
            return decoder.decode(raw)  # type: ignore[no-any-return]
        except DECODE_ERRORS as exc:  # msgspec.ValidationError is a DecodeError
            where = _locate(raw, exc, self)
            raise ValidationError(f"Invalid arguments for {channel!r}: {where}") from None
