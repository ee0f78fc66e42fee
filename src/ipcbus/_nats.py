"""NATS as a transport: one ipcbus connection as two subjects, and a renderer's way in.

SPEC section 11; the design, subjects and permissions are in docs/scale-out.md.
Rules:

* One ipcbus connection over NATS is a pair of subjects, one NATS message per
  frame body (docs/protocol.md, "Transports that carry whole frames"): the
  renderer publishes on the subject its replica named for it, the replica on
  the renderer's inbox. The same ``Connection`` core and ``Endpoint`` drive it
  as over a socket; nothing here parses a frame.
* A renderer finds its replica with one NATS request on
  ``ipcbus.<app>.connect``, which the replicas serve as one queue group: NATS
  picks one. No responder means no replica: ``ConnectionClosedError`` naming
  the app.
* Core NATS keeps the order of one publisher's messages to one subscriber but
  may drop messages (a slow consumer, a broken route). Every message carries
  its number in the ``Ipcbus-Seq`` header; a gap, or a slow-consumer report
  from nats-py, ends that connection (``"connection-lost"``, "messages were
  lost") rather than letting the protocol run on with a hole in it.
* NATS never reports that a peer died: heartbeats are always on
  (``heartbeat_auto``), so a silent peer is found within 15 s by default.
* nats-py runs on asyncio only: so does this transport.

The replica's side (the queue group, ids, broadcasts) is in ``_natsreplica``;
the nats-py client that connections share, in ``_natsclient``.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec

from ._errors import ConnectionClosedError
from ._framestream import FrameStream
from ._framing import split_frames
from ._natsclient import NatsClient, nats_module
from ._refusing import goodbye
from ._wire import CloseCode

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription


__all__ = (
    "HEADROOM",
    "MAX_QUEUED",
    "PREFIX",
    "SEQ_HEADER",
    "ConnectReply",
    "ConnectRequest",
    "NatsFrames",
    "check_app",
    "connect_subject",
    "open_renderer_stream",
)

logger = logging.getLogger("ipcbus")

PREFIX = "ipcbus"  # every subject of an app starts with PREFIX.<app>.
SEQ_HEADER = "Ipcbus-Seq"  # each message's number, from 1, per direction
HEARTBEAT = 3.0  # "auto" over NATS: pings every 3 s, a peer silent 9 s is gone
HEADROOM = 256  # bytes of the server's max_payload left for the headers
#: Bytes of one connection's messages that may wait for its reader in a replica:
#: NATS has no backpressure, so past this (or four of the server's largest
#: messages, if more) the connection ends as a socket's would not
#: (docs/scale-out.md). A renderer trusts its main further: RENDERER_MAX_QUEUED,
#: what nats-py's own queue held before (main cannot pace its pushes over NATS).
MAX_QUEUED = 16 * 1024 * 1024
RENDERER_MAX_QUEUED = 128 * 1024 * 1024
#: Bytes each waiting message is charged beyond its own: its bytes object and
#: its slot, so a flood of empty or tiny messages meets the bound too.
MESSAGE_COST = 64


class ConnectRequest(msgspec.Struct, frozen=True, array_like=True):
    """A renderer asks for a replica: where to send it its frames."""

    inbox: str


class ConnectReply(msgspec.Struct, frozen=True, array_like=True):
    """A replica answers: where the renderer sends its frames."""

    subject: str


def check_app(app: str) -> str:
    """An app name is one NATS subject token: no dots, wildcards or spaces."""
    if not isinstance(app, str) or not app or any(c in app for c in ".*> \t\r\n"):
        raise ValueError(
            f"app must be a non-empty name without '.', '*', '>' or whitespace, not {app!r}"
        )
    return app


def connect_subject(app: str) -> str:
    return f"{PREFIX}.{app}.connect"


def _frames_from_seq(value: str | None) -> int | None:
    with suppress(TypeError, ValueError):
        return int(value)  # type: ignore[arg-type]
    return None


class NatsFrames(FrameStream):
    """One ipcbus connection over NATS: frames out on one subject, in on another."""

    heartbeat_auto = HEARTBEAT

    def __init__(self, client: NatsClient, *, owns_client: bool, max_queued: int) -> None:
        self._client = client
        self._nc = client.nc
        self._owns_client = owns_client
        self.send_subject = ""
        self._sub: Subscription | None = None
        self._subject = ""
        self._sent = 0
        self._received = 0
        # Messages waiting for the reader, and their bytes (at most max_queued)
        self._inbox: deque[bytes] = deque()
        self._queued = 0
        self._arrived: anyio.Event | None = None  # while the reader waits
        self._ended = False  # lost, or closed: nothing more is delivered
        self._closed = False
        max_payload = self._nc.max_payload
        self.max_frame_size = max_payload - HEADROOM
        self.max_queued = max(max_queued, 4 * max_payload)
        self.limit_advice = (
            f"Over NATS a frame is one message, and the server's max_payload is "
            f"{max_payload} bytes: send large values in parts (a stream), or raise "
            "max_payload in the NATS server's configuration"
        )

    async def subscribe(self, subject: str) -> None:
        """Receive this connection's frames on ``subject``, by a subscription of its own."""
        self.attach(subject)
        self._sub = await self._nc.subscribe(subject, cb=self._on_message)

    def attach(self, subject: str) -> None:
        """Receive this connection's frames on ``subject`` through ``NatsClient.route``.

        For a subject a subscription of the client already covers (a
        replica's one wildcard for all its renderers).
        """
        self._subject = subject
        self._client.streams[subject] = self

    async def _on_message(self, msg: Msg) -> None:
        self.deliver(msg)

    def deliver(self, msg: Msg) -> None:
        """Hand one message to the reader, in order, without waiting.

        Never blocks: the messages of every renderer of a replica come
        through one callback, which must not wait for any one reader.
        """
        if self._ended:
            return
        headers = msg.headers
        expected = self._received + 1
        seq = headers.get(SEQ_HEADER) if headers else None
        if seq != str(expected):
            got = _frames_from_seq(seq)
            self.lose(
                f"messages were lost: expected message {expected}, got "
                + (f"message {got}" if got is not None else "one without a valid sequence number")
            )
            return
        self._received = expected
        data = msg.data
        self._queued += len(data) + MESSAGE_COST
        if self._queued > self.max_queued:
            self.lose(
                f"more than {self.max_queued} bytes of messages waited to be read; NATS "
                "has no backpressure: the peer sent faster than this side read"
            )
            return
        self._inbox.append(data)
        if (arrived := self._arrived) is not None:
            self._arrived = None
            arrived.set()

    def lose(self, reason: str) -> None:
        """End the connection now, saying why; what its reader has not taken is dropped.

        Now, not after what was queued: the reader may be paused
        (backpressure), and a link with a hole in it carries nothing useful.
        """
        if self.lost_reason is None and not self._closed:
            self.lost_reason = reason
            logger.warning("NATS link on %s: %s", self._subject or "?", reason)
        self._end()
        if self.on_lost is not None:
            self.on_lost(reason)

    def _end(self) -> None:
        """Nothing more is delivered, and what was not read is dropped; wake the reader."""
        self._ended = True
        self._inbox.clear()
        self._queued = 0
        if (arrived := self._arrived) is not None:
            self._arrived = None
            arrived.set()

    async def receive_frame(self) -> bytes:
        inbox = self._inbox
        while not inbox:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._ended:
                raise anyio.EndOfStream
            self._arrived = arrived = anyio.Event()
            await arrived.wait()
        data = inbox.popleft()
        self._queued -= len(data) + MESSAGE_COST
        return data

    async def send_frame(self, body: memoryview) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        await self._publish(body)

    async def _publish(self, body: memoryview) -> None:
        self._sent += 1
        try:
            # A view is fine: nats-py copies the payload into its command at once.
            await self._nc.publish(
                self.send_subject,
                body,  # type: ignore[arg-type]
                headers={SEQ_HEADER: str(self._sent)},
            )
        except Exception as exc:
            raise anyio.BrokenResourceError(f"publishing on NATS failed: {exc!r}") from exc

    async def send_eof(self) -> None:
        """Nothing to do: NATS has no half-close; a Goodbye frame says it."""

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._end()
        self._client.streams.pop(self._subject, None)
        with anyio.CancelScope(shield=True):
            if self.lost_reason is not None and self.send_subject:
                # Our side of the link has a hole; the other is whole: tell the
                # peer now rather than leave it to its heartbeat.
                with suppress(anyio.BrokenResourceError), anyio.move_on_after(1):
                    await self._publish(_goodbye(self.lost_reason))
            if self._sub is not None:
                with suppress(Exception):
                    await self._sub.unsubscribe()
            if self._owns_client:
                await self._client.close()


def _goodbye(reason: str) -> memoryview:
    """A Goodbye frame body, made by the core as any other."""
    (body,) = split_frames(
        goodbye(CloseCode.PROTOCOL_ERROR, f"the peer lost messages from us ({reason})")
    )
    return body


async def open_renderer_stream(
    address: str | Any,
    app: str,
    timeout: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
    nats_options: Mapping[str, Any],
) -> NatsFrames:
    """Connect to NATS and be assigned a replica of ``app``: the renderer's transport.

    Raises:
        ConnectionClosedError: NATS cannot be reached or refused the
            credentials, or no replica serves ``app``.
    """
    check_app(app)
    if address is None:
        raise ConnectionClosedError(
            f"no NATS server to join app {app!r}: pass its URL, such as 'nats://127.0.0.1:4222'"
        )
    nats = nats_module()
    servers = address if isinstance(address, list) else str(address)
    client = await NatsClient.open(servers, timeout, nats_options, ssl_context)
    frames = NatsFrames(client, owns_client=True, max_queued=RENDERER_MAX_QUEUED)
    try:
        await frames.subscribe(client.nc.new_inbox())
        request = msgspec.msgpack.encode(ConnectRequest(frames._subject))
        try:
            answer = await client.nc.request(connect_subject(app), request, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise ConnectionClosedError(
                f"no replica serves app {app!r} at {client.where}: start one with "
                f"ipc_main.join(..., app={app!r}), then connect again"
            ) from None
        except nats.errors.TimeoutError:
            raise ConnectionClosedError(
                f"no replica of app {app!r} at {client.where} answered within {timeout} s"
            ) from None
        try:
            frames.send_subject = msgspec.msgpack.decode(answer.data, type=ConnectReply).subject
        except msgspec.DecodeError:
            raise ConnectionClosedError(
                f"a replica of app {app!r} sent an answer that is not ipcbus's"
            ) from None
    except BaseException:
        await frames.aclose()
        raise
    return frames
