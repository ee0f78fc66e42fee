"""What the peer sends: bytes into frames into events.

The receiving half of ``Connection`` (``_protocol``), a base class so the
hot path stays one object's methods: reads cut into frames (rule 3: a bad
one ends the connection, never raises), the usual frames taken inline, the
rest handed to ``_meaning.Meaning._handle``, where rules 4, 7 and 8 of
``_protocol``'s docstring are enforced. The handshake itself is
``Connection``'s. This module imports only the standard library and msgspec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ._errors import FrameTooLargeError
from ._events import ConnectionTerminated, Event
from ._framing import HEADER_SIZE, SMALL_BODY, FrameDecoder, read_size
from ._meaning import CANCEL_ACK, Meaning
from ._states import CLOSED, OPEN, PeerViolation
from ._wire import (
    STREAM,
    Body,
    CloseCode,
    Goodbye,
    Message,
    Reply,
    Request,
)

__all__ = ("ALL", "CANCEL_ACK", "Receiving")

#: ``Connection.batch`` that takes every whole frame of a read at once.
ALL = 1 << 62

_body_decoder: msgspec.msgpack.Decoder[Body] = msgspec.msgpack.Decoder(Body)
#: The tags of the kinds ``receive_alone`` takes. Each is a positive fixint, so it
#: is the byte after a body's array header, which is one byte for every body we
#: encode (fewer than 16 fields); a peer's other encodings go the general way.
_ALONE_TAGS = frozenset(kind.__struct_config__.tag for kind in (Message, Request, Reply))
_TAG_AT = HEADER_SIZE + 1


class Receiving(Meaning):
    """The peer's bytes in, events out: ``Connection``'s inputs."""

    if not TYPE_CHECKING:  # what these methods keep is in Connection's slots, which
        __slots__ = ()  # mypy cannot see from here: it checks a mixin alone

    # Kept by Connection; declared here for the type checker (and in Meaning).
    _frames: FrameDecoder
    _holding: bool
    batch: int
    more: bool

    def receive_data(self, data: bytes | bytearray | memoryview) -> bool:
        """Feed bytes from the peer. Never raises for anything the peer sent.

        Returns whether bytes of a frame not yet whole are held: only then
        may the next read go into :meth:`receive_buffer`, so a driver need not
        ask after every read.
        """
        state = self.state
        if state is CLOSED:
            return False
        if state is OPEN and not self._holding and type(data) is bytes:
            # The usual read: nothing held from the last one, so its whole
            # frames are taken straight from ``data``, without the decoder's
            # bookkeeping; only what is left (a frame split across reads, one
            # over the limit) goes through it.
            try:
                # A view only where a frame may be large: a small read's
                # frames are sliced from ``data`` (see _walk)
                view = memoryview(data) if len(data) > SMALL_BODY else data
                pos = self._walk(data, view, 0)
            except BaseException as exc:
                self._peer_failed(exc)
                return False
            if pos == len(data) or self.state is CLOSED:
                return False
            if self.more:  # the rest waits for receive_more, where it lies
                self._frames.feed(data, pos)
                self._holding = True
                return True
            data = data[pos:]
        self._frames.feed(data)
        return self._parse_fed()

    def receive_alone(self, data: bytes) -> Event | None:
        """Take a read that is one whole small frame of the usual kinds; return its event.

        The usual kinds are those ``_walk`` takes without ``_handle``: a
        Message without ports, the Reply to a call we await (no stream of ours
        open), the peer's next call (a Request, not a stream). One call, or
        its reply, alone in a read is every read of a peer that waits for each
        answer: this spares it the general way's walk and event list.

        For anything else (more or less than one frame, bytes held from the
        last read, another kind, a body that does not decode, a call out of
        order) nothing is taken and ``None`` is returned: feed the read to
        :meth:`receive_data`, which handles it, errors included.
        """
        size = len(data) - HEADER_SIZE
        # No size limit to check: an open connection's is at least
        # MIN_MAX_FRAME_SIZE, over SMALL_BODY (tests/protocol/test_alone.py).
        if (
            self.state is not OPEN
            or self._holding
            or self._events
            or not 1 < size <= SMALL_BODY
            or data[_TAG_AT] not in _ALONE_TAGS  # the kind, before decoding
            or read_size(data, 0)[0] != size
        ):
            return None
        try:
            body = _body_decoder.decode(data[HEADER_SIZE:])
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None  # receive_data ends the connection, saying why
        # _walk's inline cases, on the same conditions
        if body.__class__ is Reply:
            request_id = body.request_id
            if request_id in self._awaiting and not self._granted:
                del self._awaiting[request_id]
                return body  # ReplyReceived
        elif body.__class__ is Request:
            request_id = body.request_id
            if request_id > self._peer_last_request_id and body.kind is not STREAM:
                self._peer_last_request_id = request_id
                self._serving[request_id] = None
                return body  # RequestReceived
        elif body.__class__ is Message and not body.ports:
            return body  # MessageReceived
        return None

    def receive_more(self) -> bool:
        """Take the next ``batch`` of a read that stopped early (:attr:`more`).

        Returns what :meth:`receive_data` returns.
        """
        self.more = False
        if self.state is CLOSED:
            return False
        return self._parse_fed()

    def receive_buffer(self, minimum: int = 64 * 1024) -> memoryview | None:
        """A buffer to read the peer's next bytes into, or ``None``: use ``receive_data``.

        Offered only while a large frame is being assembled (at least
        ``minimum`` bytes of it still to come): reading into it spares
        copying the frame chunk by chunk. Report with ``received_into``.
        """
        if self.state is CLOSED:
            return None
        return self._frames.window(minimum)

    def received_into(self, n: int) -> bool:
        """``n`` bytes of the peer's were read into the last ``receive_buffer``.

        Returns what :meth:`receive_data` returns.
        """
        if self.state is CLOSED:
            return False
        self._frames.filled(n)
        return self._parse_fed()

    def receive_frame(self, body: bytes | bytearray | memoryview) -> None:
        """Feed one whole frame body, for transports whose messages are frames.

        A WebSocket or NATS message already is one frame (docs/protocol.md,
        "Transports that carry whole frames"): its body comes here without the
        length prefix, and goes through the same size limit, decoder and state
        machine as a frame cut from a byte stream. Never raises for anything
        the peer sent.
        """
        if self.state is CLOSED:
            return
        size = len(body)
        try:
            if size > self._frames.max_frame_size:
                raise FrameTooLargeError(
                    f"frame of {size} bytes exceeds the limit of "
                    f"{self._frames.max_frame_size} bytes"
                )
            decoded = _body_decoder.decode(body)
            if decoded.__class__ is Message and not decoded.ports and self.state is OPEN:
                self._events.append(decoded)  # MessageReceived, as in _parse_open
            else:
                self._handle(decoded)
        except BaseException as exc:
            self._peer_failed(exc)

    def receive_eof(self, why: str | None = None) -> None:
        """The peer's byte stream ended (or the driver gave up on it). Idempotent.

        Args:
            why: the driver's account (write stalled, heartbeat timeout...),
                used instead of the default reason.
        """
        if self.state is CLOSED:
            return
        reason = f"connection lost: {why or 'the peer closed the stream without a Goodbye'}"
        code = None
        if self._frames.buffered:
            # A truncated frame: a protocol error, unless the peer died (the
            # driver knows an exit code and gives that precedence).
            reason += f" (in the middle of a frame, {self._frames.buffered} bytes buffered)"
            code = CloseCode.PROTOCOL_ERROR
        self._set_state(CLOSED)
        self._events.append(ConnectionTerminated(code, reason, remote=True))

    def _parse_fed(self) -> bool:
        """Parse what the decoder was fed; whether part of a frame is held (``_holding``)."""
        self._parse()
        self._holding = holding = not self._frames.idle()
        return holding

    def _parse(self) -> None:
        frames = self._frames
        try:
            # _handle may close the connection: re-read the state after every frame.
            while self.state is not CLOSED:
                if self.state is OPEN:
                    self._parse_open()  # the hot path: every whole frame of the input
                    if self.state is CLOSED or self.more:
                        break
                # A frame split across reads, one over the limit (raises), or a handshake.
                if (raw := frames.next_body()) is None:
                    break
                self._handle(_body_decoder.decode(raw))
        except BaseException as exc:
            self._peer_failed(exc)

    def _peer_failed(self, exc: BaseException) -> None:
        """End the connection for what the peer sent; re-raise anything else."""
        if isinstance(exc, FrameTooLargeError):
            self._terminate(CloseCode.FRAME_TOO_LARGE, f"protocol error: {exc}")
        elif isinstance(exc, msgspec.DecodeError | UnicodeDecodeError | RecursionError):
            # msgspec raises UnicodeDecodeError for a str that is not UTF-8 and
            # RecursionError for deeply nested arrays (even inside a Raw field):
            # both are the peer's malformed bytes, not our bug.
            self._terminate(CloseCode.PROTOCOL_ERROR, f"protocol error: malformed frame: {exc}")
        elif isinstance(exc, PeerViolation):
            self._terminate(exc.code, str(exc))
        else:
            raise exc

    def _parse_open(self) -> None:
        """The hot path of an open connection: take every whole frame of the input.

        Splits, decodes and handles them in one loop (one call per read, not
        per frame); a plain Message becomes its event without a call. Stops
        before a frame that is split across reads or over the limit, which
        ``next_body`` then takes (or refuses).
        """
        frames = self._frames
        data, view, pos = frames.unparsed()
        pos = self._walk(data, view, pos)
        if self.state is not CLOSED:  # else the decoder has let go of its input
            frames.parsed_to(pos)

    def _walk(self, data: bytes, view: memoryview | bytes, pos: int) -> int:
        """Take the whole frames of ``data`` from ``pos`` on; return where they end.

        ``view`` is ``data`` or a memoryview of it, which a large frame is
        sliced from without a copy.

        Stops before a frame split across reads or over the limit, and after
        a frame that closed the connection. May raise for what the peer sent
        (a malformed frame, a violation): the caller ends the connection.
        """
        limit, end_of_input = self._frames.max_frame_size, len(data)
        last = end_of_input - HEADER_SIZE  # the last offset a header fits at
        stop = min(last, pos + self.batch)  # where this batch ends
        # Locals, not globals, for what every frame needs (a read of one frame
        # pays for each alias, so the rarer cases below look theirs up).
        decode, events, unpack, small, message = (
            _body_decoder.decode,
            self._events,
            read_size,
            SMALL_BODY,
            Message,
        )
        while pos <= stop:
            (size,) = unpack(data, pos)
            start = pos + HEADER_SIZE
            end = start + size
            if end > end_of_input or size > limit:
                break
            body = decode(data[start:end] if size <= small else view[start:end])
            pos = end
            if body.__class__ is message and not body.ports:
                events.append(body)  # MessageReceived
            elif (
                body.__class__ is Reply and body.request_id in self._awaiting and not self._granted
            ):
                # _handle's usual Reply (to a call we await, no stream of
                # ours open), inline: a caller's every read has one
                del self._awaiting[body.request_id]
                events.append(body)  # ReplyReceived
            elif (
                body.__class__ is Request
                and body.request_id > self._peer_last_request_id
                and body.kind is not STREAM
            ):
                # _handle's usual Request (a call, its id in order), inline: main's
                # every read has one
                self._peer_last_request_id = request_id = body.request_id
                self._serving[request_id] = None
                events.append(body)  # RequestReceived
            else:
                self._handle(body)
                if self.state is CLOSED:  # a Goodbye, or a violation we answered
                    break
        else:
            self.more = pos <= last  # stopped at the batch's end: whole frames may remain
        return pos

    def _terminate(self, code: CloseCode, reason: str) -> None:
        self._queue(Goodbye(code, reason))
        self._set_state(CLOSED)
        self._events.append(ConnectionTerminated(code, reason, remote=False))
