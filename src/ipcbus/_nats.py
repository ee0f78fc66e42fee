"""NATS as a transport: main's replicas of an app, and the renderers that join them.

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
"""

from __future__ import annotations

import itertools
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec

from ._errors import ConnectionClosedError, FrameTooLargeError
from ._framestream import FrameStream

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from .main import IpcMain

__all__ = ("PREFIX", "SEQ_HEADER", "NatsFrames", "Replica", "join", "open_renderer_stream")

logger = logging.getLogger("ipcbus")

PREFIX = "ipcbus"  # every subject of an app starts with PREFIX.<app>.
SEQ_HEADER = "Ipcbus-Seq"  # each message's number, from 1, per direction
HEARTBEAT = 3.0  # "auto" over NATS: pings every 3 s, a peer silent 9 s is gone
_HEADROOM = 256  # bytes of the server's max_payload left for the headers
_BUFFER = 256  # messages moved from nats-py's queue, waiting for the reader
_ID_BITS = 20  # renderer ids: a random 32-bit prefix, then a 20-bit counter


class _ConnectRequest(msgspec.Struct, frozen=True, array_like=True):
    """A renderer asks for a replica: where to send it its frames."""

    inbox: str


class _ConnectReply(msgspec.Struct, frozen=True, array_like=True):
    """A replica answers: where the renderer sends its frames."""

    subject: str


def _nats() -> Any:
    try:
        import nats
    except ImportError:
        raise ImportError(
            "ipcbus over NATS needs the nats-py client: pip install 'ipcbus[nats]'"
        ) from None
    return nats


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


class _Client:
    """One nats-py client and the ipcbus connections that ride on it."""

    def __init__(self, nc: Client, where: str) -> None:
        self.nc = nc
        self.where = where
        self.streams: dict[str, NatsFrames] = {}  # by the subject each receives on

    @classmethod
    async def open(
        cls,
        servers: str | list[str],
        timeout: float,
        options: Mapping[str, Any],
        tls: ssl.SSLContext | None = None,
    ) -> _Client:
        """Connect to NATS; fail at once on refused credentials, else within ``timeout``."""
        nats = _nats()
        options = dict(options)
        hooks = {
            name: options.pop(name, None)
            for name in ("error_cb", "disconnected_cb", "reconnected_cb", "closed_cb")
        }
        if tls is not None:
            options.setdefault("tls", tls)
        where = servers if isinstance(servers, str) else ", ".join(servers)
        nc = nats.aio.client.Client()
        client = cls(nc, where)
        refused: list[BaseException] = []
        connecting = anyio.CancelScope()
        opening = [True]  # until connected: credentials refused end the attempt

        async def error_cb(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                client.slow_consumer(exc.subject)
            elif opening[0] and isinstance(
                exc, nats.errors.AuthorizationError | nats.errors.SecureConnRequiredError
            ):
                refused.append(exc)  # retrying will not change the server's mind
                connecting.cancel()
            else:
                logger.warning("NATS at %s: %r", where, exc)
            await _call(hooks["error_cb"], exc)

        async def disconnected_cb() -> None:
            # Messages lost meanwhile show as a gap in Ipcbus-Seq; a peer gone for
            # good, as heartbeats that stop.
            logger.warning("disconnected from NATS at %s; reconnecting", where)
            await _call(hooks["disconnected_cb"])

        async def reconnected_cb() -> None:
            logger.info("reconnected to NATS at %s", where)
            await _call(hooks["reconnected_cb"])

        async def closed_cb() -> None:
            client.closed()
            await _call(hooks["closed_cb"])

        try:
            with connecting, anyio.fail_after(timeout):
                await nc.connect(
                    servers,
                    error_cb=error_cb,
                    disconnected_cb=disconnected_cb,
                    reconnected_cb=reconnected_cb,
                    closed_cb=closed_cb,
                    **options,
                )
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await client.close()
            if refused:
                raise ConnectionClosedError(
                    f"the NATS server at {where} refused the credentials ({refused[0]}); "
                    "check user/password, token, nkeys or TLS in the NATS options"
                ) from None
            if isinstance(exc, TimeoutError):
                raise ConnectionClosedError(
                    f"could not connect to the NATS server at {where} within {timeout} s"
                ) from None
            if isinstance(exc, Exception):
                raise ConnectionClosedError(
                    f"could not connect to the NATS server at {where}: {exc!r}"
                ) from exc
            raise
        opening[0] = False
        return client

    def slow_consumer(self, subject: str) -> None:
        if (stream := self.streams.get(subject)) is not None:
            stream.lose("NATS dropped messages for a slow consumer")

    def closed(self) -> None:
        for stream in list(self.streams.values()):
            stream.lose(f"the connection to the NATS server at {self.where} is closed")

    async def close(self) -> None:
        with suppress(Exception):
            await self.nc.close()


async def _call(hook: Callable[..., Awaitable[None]] | None, *args: Any) -> None:
    if hook is not None:
        await hook(*args)


class NatsFrames(FrameStream):
    """One ipcbus connection over NATS: frames out on one subject, in on another."""

    heartbeat_auto = HEARTBEAT

    def __init__(self, client: _Client, *, owns_client: bool) -> None:
        self._client = client
        self._nc = client.nc
        self._owns_client = owns_client
        self.send_subject = ""
        self._sub: Subscription | None = None
        self._subject = ""
        self._sent = 0
        self._received = 0
        self._to_reader, self._incoming = anyio.create_memory_object_stream[bytes](_BUFFER)
        self._closed = False
        max_payload = self._nc.max_payload
        self.max_frame_size = max_payload - _HEADROOM
        self.limit_advice = (
            f"Over NATS a frame is one message, and the server's max_payload is "
            f"{max_payload} bytes: send large values in parts (a stream), or raise "
            "max_payload in the NATS server's configuration"
        )

    async def subscribe(self, subject: str) -> None:
        """Start receiving this connection's frames on ``subject``."""
        self._subject = subject
        self._client.streams[subject] = self
        self._sub = await self._nc.subscribe(subject, cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
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
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            # Waits while the reader is behind: then nats-py's own queue fills,
            # and past its limits it drops, reports a slow consumer, and we end.
            await self._to_reader.send(msg.data)

    def lose(self, reason: str) -> None:
        """End the connection: the reader sees the end after what came before."""
        if self.lost_reason is None and not self._closed:
            self.lost_reason = reason
            logger.warning("NATS link on %s: %s", self._subject or "?", reason)
        self._to_reader.close()

    async def receive_frame(self) -> bytes:
        return await self._incoming.receive()

    async def send_frame(self, body: memoryview) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
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
        self._to_reader.close()
        self._incoming.close()
        self._client.streams.pop(self._subject, None)
        with anyio.CancelScope(shield=True):
            if self._sub is not None:
                with suppress(Exception):
                    await self._sub.unsubscribe()
            if self._owns_client:
                await self._client.close()


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
    nats = _nats()
    servers = address if isinstance(address, list) else str(address)
    client = await _Client.open(servers, timeout, nats_options, ssl_context)
    frames = NatsFrames(client, owns_client=True)
    try:
        await frames.subscribe(client.nc.new_inbox())
        request = msgspec.msgpack.encode(_ConnectRequest(frames._subject))
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
            frames.send_subject = msgspec.msgpack.decode(answer.data, type=_ConnectReply).subject
        except msgspec.DecodeError:
            raise ConnectionClosedError(
                f"a replica of app {app!r} sent an answer that is not ipcbus's"
            ) from None
    except BaseException:
        await frames.aclose()
        raise
    return frames


def _renderer_ids() -> Iterator[int]:
    """Ids unique across an app: a random 32-bit prefix per replica, then a counter.

    They stay below 2**52, so they fit msgpack's int64 and a JavaScript
    number. Two replicas draw the same prefix with odds of about n**2 / 2**33
    for n replicas (docs/scale-out.md).
    """
    while True:
        prefix = secrets.randbelow(2**32 - 1) + 1
        for n in range(1, 2**_ID_BITS):
            yield (prefix << _ID_BITS) | n


class Replica:
    """This ``IpcMain`` serving one app through NATS; ``IpcMain.join`` returns it.

    Attributes:
        app: the app's name.
        replica_id: this replica's name in the app's subjects.
    """

    def __init__(
        self,
        main: IpcMain,
        client: _Client,
        app: str,
        token: str,
        allowed: frozenset[str] | None,
    ) -> None:
        self.app = app
        self.replica_id = secrets.token_hex(8)
        self._main = main
        self._client = client
        self._token = token
        self._allowed = allowed
        self._ids = _renderer_ids()
        self._streams = itertools.count(1)
        self._served: set[int] = set()  # renderer ids of ours (while connected)
        self._connect_sub: Subscription | None = None
        self._broadcast_sub: Subscription | None = None
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()

    @property
    def _base(self) -> str:
        return f"{PREFIX}.{self.app}"

    async def _start(self) -> None:
        nc = self._client.nc
        self._connect_sub = await nc.subscribe(
            connect_subject(self.app), queue=self._base, cb=self._on_connect
        )
        self._broadcast_sub = await nc.subscribe(f"{self._base}.broadcast.*", cb=self._on_broadcast)
        await nc.flush()  # the server has the subscriptions: renderers can come

    async def _run(self) -> None:
        """Hold the NATS client while main runs; close it once main's renderers are gone."""
        try:
            with self._scope:
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                with suppress(ValueError):
                    self._main._joined.remove(self)
                await self._client.close()
                self._done.set()

    async def _on_connect(self, msg: Msg) -> None:
        main = self._main
        if main._closing or self._connect_sub is None:
            return  # leaving: no answer, the renderer asks again and gets another replica
        try:
            inbox = msgspec.msgpack.decode(msg.data, type=_ConnectRequest).inbox
        except msgspec.DecodeError:
            logger.warning("NATS app %r: ignored a connect request that is not ipcbus's", self.app)
            return
        if not msg.reply or not inbox or any(c in inbox for c in "*> \t\r\n"):
            logger.warning(
                "NATS app %r: ignored a connect request without a usable inbox", self.app
            )
            return
        frames = NatsFrames(self._client, owns_client=False)
        frames.send_subject = inbox
        try:
            await frames.subscribe(f"{self._base}.replica.{self.replica_id}.{next(self._streams)}")
            await msg.respond(msgspec.msgpack.encode(_ConnectReply(frames._subject)))
        except Exception as exc:
            logger.warning("NATS app %r: could not answer a renderer: %r", self.app, exc)
            await frames.aclose()
            return
        renderer_id = next(self._ids)
        main._require_running("join").start_soon(self._serve, frames, renderer_id)

    async def _serve(self, frames: NatsFrames, renderer_id: int) -> None:
        self._served.add(renderer_id)
        try:
            await self._main._serve(
                frames, self._token, 0, None, allowed=self._allowed, renderer_id=renderer_id
            )
        finally:
            self._served.discard(renderer_id)

    async def _on_broadcast(self, msg: Msg) -> None:
        if msg.subject.rsplit(".", 1)[-1] == self.replica_id:
            return  # our own: our renderers have it already
        body = msg.data
        await self._main._broadcast_frame(len(body).to_bytes(4, "big") + body)

    def check_broadcast(self, frame: bytes) -> None:
        """Refuse a broadcast the NATS server would refuse, before anything is sent."""
        limit = self._client.nc.max_payload - _HEADROOM
        if len(frame) - 4 > limit:
            raise FrameTooLargeError(
                f"Cannot broadcast: a frame of {len(frame) - 4} bytes is over the limit of "
                f"{limit} bytes that the NATS server's max_payload "
                f"({self._client.nc.max_payload}) sets; nothing was sent"
            )

    async def broadcast(self, frame: bytes) -> None:
        """Publish a broadcast for the app's renderers on the other replicas."""
        if self._broadcast_sub is None:
            return
        try:
            await self._client.nc.publish(
                f"{self._base}.broadcast.{self.replica_id}",
                memoryview(frame)[4:],  # type: ignore[arg-type]
            )
        except Exception as exc:
            raise ConnectionClosedError(
                f"broadcast to app {self.app!r} through NATS failed: {exc!r}"
            ) from exc

    async def stop_accepting(self) -> None:
        """Leave the queue group (no new renderer comes here) and the broadcasts."""
        subs, self._connect_sub, self._broadcast_sub = (
            (self._connect_sub, self._broadcast_sub),
            None,
            None,
        )
        for sub in subs:
            if sub is not None:
                with suppress(Exception):
                    await sub.unsubscribe()
        with suppress(Exception), anyio.move_on_after(5):
            await self._client.nc.flush()  # the server no longer picks us

    async def leave(self) -> None:
        """Leave the app: no new renderers; ours get a Goodbye; NATS closes.

        ``async with ipc_main`` does this by itself at its end.
        """
        await self.stop_accepting()
        async with anyio.create_task_group() as tg:
            for renderer_id in list(self._served):
                if (contents := self._main.from_id(renderer_id)) is not None:
                    tg.start_soon(contents.close)
        self._scope.cancel()
        await self._done.wait()

    def __repr__(self) -> str:
        return f"<Replica app={self.app!r} id={self.replica_id}>"


async def join(
    main: IpcMain,
    url: str | list[str],
    *,
    app: str,
    token: str | None,
    allowed: frozenset[str] | None,
    timeout: float,
    nats_options: Mapping[str, Any],
) -> Replica:
    """Make ``main`` a replica of ``app`` (``IpcMain.join``)."""
    check_app(app)
    if main.heartbeat_interval is None:
        raise ValueError(
            "a replica joined through NATS needs heartbeats: NATS does not report a "
            "renderer that died (IpcMain(heartbeat_interval=...) must not be None)"
        )
    tg = main._require_running("join")
    client = await _Client.open(url, timeout, nats_options)
    replica = Replica(main, client, app, token or "", allowed)
    try:
        await replica._start()
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await client.close()
        if isinstance(exc, Exception):
            raise ConnectionClosedError(
                f"could not join app {app!r} at {client.where}: {exc!r}"
            ) from exc
        raise
    main._joined.append(replica)
    tg.start_soon(replica._run)
    return replica
