"""A main joined to an app through NATS: the queue group, renderer ids, broadcasts.

SPEC section 11 and docs/scale-out.md. A ``Replica`` answers connect requests
for its share of the app's renderers (NATS's queue group picks one replica
per request), serves each over a ``NatsFrames`` with main's own ``_serve``,
and relays broadcasts between the app's replicas. Leaving the app (or
``async with ipc_main`` ending) first leaves the queue group, so no renderer
is assigned to a replica that is going away.

A renderer answered with its subject costs the replica one small record
(``_Unheard``) until its first message comes: only then are its
``NatsFrames`` and endpoint made. A connect request is a few dozen bytes
that anyone allowed to publish on the app's subjects can send as fast as
NATS carries them; an endpoint for each, most of them dropped before they
ever spoke, was most of what a flood of them cost (docs/scale-out.md).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import msgspec

from . import _nats
from ._errors import ConnectionClosedError, FrameTooLargeError
from ._lograte import WarningRate
from ._nats import (
    HEADROOM,
    PREFIX,
    SEQ_HEADER,
    ConnectReply,
    ConnectRequest,
    NatsFrames,
    check_app,
    connect_subject,
)
from ._natsclient import NatsClient
from ._refusing import goodbye
from ._serving import Waiting
from ._wire import CloseCode

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from .main import IpcMain

__all__ = ("Replica", "join")

logger = logging.getLogger("ipcbus")

_ID_BITS = 20  # renderer ids: a random 32-bit prefix, then a 20-bit counter

#: A replica's connections waiting for their Hello, as a multiple of
#: ``max_pending_handshakes`` (64 -> 1,024): over NATS the Hello is a network
#: round trip away, and an app's renderers may all ask at once (a restart).
WAITING_PER_PENDING = 16
#: Connect requests nats-py may hold for the replica to take (one per turn of
#: its loop), as a multiple of its ``Waiting``'s limit; past that (or
#: CONNECT_QUEUE_BYTES) nats-py drops them, and their renderers ask again.
CONNECT_QUEUE_PER_WAITING = 4
CONNECT_QUEUE_BYTES = 4 * 1024 * 1024
#: Longest inbox a connect request may name (nats-py's are about 50 characters):
#: the replica keeps it for every renderer that has not spoken yet.
MAX_INBOX = 256


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
        client: NatsClient,
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
        self._served: set[int] = set()  # renderer ids of ours (while connected)
        # Ours before their Hello: bounded, so a flood of connect requests is too.
        self._waiting = Waiting(lambda: WAITING_PER_PENDING * main.max_pending_handshakes)
        self._connect_sub: Subscription | None = None
        self._broadcast_sub: Subscription | None = None
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        # Anyone who may ask for a connection may ask wrongly, as fast as NATS carries it.
        self._ignored = WarningRate(logger, f"ignored connect requests for NATS app {app!r}")
        # Answered, not yet heard from (oldest first): bounded as _waiting is.
        self._unheard: dict[_Unheard, None] = {}

    @property
    def _base(self) -> str:
        return f"{PREFIX}.{self.app}"

    async def _start(self) -> None:
        nc = self._client.nc
        self._connect_sub = await nc.subscribe(
            connect_subject(self.app),
            queue=self._base,
            cb=self._on_connect,
            pending_msgs_limit=CONNECT_QUEUE_PER_WAITING * self._waiting.limit(),
            pending_bytes_limit=CONNECT_QUEUE_BYTES,
        )
        self._broadcast_sub = await nc.subscribe(f"{self._base}.broadcast.*", cb=self._on_broadcast)
        # Every renderer's frames, through one subscription (NatsClient.route);
        # closed with the client, once every renderer of ours is gone.
        await nc.subscribe(f"{self._base}.replica.{self.replica_id}.*", cb=self._client.route)
        await nc.flush()  # the server has the subscriptions: renderers can come

    async def _run(self) -> None:
        """Hold the NATS client while main runs; close it once main's renderers are gone."""
        try:
            with self._scope:
                await self._client.watch()
        finally:
            with anyio.CancelScope(shield=True):
                with suppress(ValueError):
                    self._main._joined.remove(self)
                self._ignored.flush()
                await self._client.close()
                self._done.set()

    async def _on_connect(self, msg: Msg) -> None:
        # nats-py calls this for each request in turn, without a turn of the loop
        # between them while more are queued: let the connections started for the
        # earlier ones run first, so max_pending_handshakes drops the oldest as
        # they come rather than after a whole flood of requests has been taken.
        await anyio.lowlevel.checkpoint()
        main = self._main
        if main._closing or self._connect_sub is None:
            return  # leaving: no answer, the renderer asks again and gets another replica
        try:
            inbox = msgspec.msgpack.decode(msg.data, type=ConnectRequest).inbox
        except msgspec.DecodeError:
            self._ignored.warning(
                "NATS app %r: ignored a connect request that is not ipcbus's", self.app
            )
            return
        if (
            not msg.reply
            or not inbox
            or len(inbox) > MAX_INBOX
            or any(c in inbox for c in "*> \t\r\n")
        ):
            self._ignored.warning(
                "NATS app %r: ignored a connect request without a usable inbox", self.app
            )
            return
        if inbox.startswith(f"{PREFIX}."):
            # ipcbus's own subjects: the replica may publish on the app's
            # broadcasts, which every replica relays to all its renderers.
            self._ignored.warning(
                "NATS app %r: ignored a connect request whose inbox %r is one of ipcbus's subjects",
                self.app,
                inbox[:100],
            )
            return
        # Unguessable: another renderer allowed to publish on the app's
        # subjects cannot aim at this one's (docs/scale-out.md, spoofing).
        subject = f"{self._base}.replica.{self.replica_id}.{secrets.token_hex(12)}"
        if len(main._contents) >= main.max_connections:
            # Full: _serve refuses it with a Goodbye at once, as a listener does.
            frames = NatsFrames(self._client, owns_client=False, max_queued=_nats.MAX_QUEUED)
            frames.send_subject = inbox
            frames.attach(subject)
            if await self._answer(msg, subject):
                main._require_running("join").start_soon(self._serve, frames, next(self._ids))
            else:
                await frames.aclose()
            return
        await self._make_room()
        unheard = _Unheard(self, subject, inbox)
        self._client.streams[subject] = unheard  # from now on its Hello may come
        if not await self._answer(msg, subject):
            self._client.streams.pop(subject, None)
        elif self._client.streams.get(subject) is unheard:  # still silent
            if self._connect_sub is None:  # the replica began leaving meanwhile
                await self._drop(unheard, CloseCode.SHUTDOWN, f"main is leaving app {self.app!r}")
                return
            self._unheard[unheard] = None
            main._handshakes.watch(unheard, main._require_running("join"))

    async def _answer(self, msg: Msg, subject: str) -> bool:
        """Tell the renderer its subject; whether that worked."""
        try:
            await msg.respond(msgspec.msgpack.encode(ConnectReply(subject)))
        except Exception as exc:
            logger.warning("NATS app %r: could not answer a renderer: %r", self.app, exc)
            return False
        return True

    def _heard(self, unheard: _Unheard, msg: Msg) -> None:
        """A renderer's first message (its Hello): now it gets frames and an endpoint."""
        self._forget(unheard)
        main = self._main
        if main._closing or main._tg is None:
            return  # leaving: it asks again
        frames = NatsFrames(self._client, owns_client=False, max_queued=_nats.MAX_QUEUED)
        frames.send_subject = unheard.inbox
        frames.attach(unheard.subject)  # in its record's place
        frames.deliver(msg)
        main._tg.start_soon(self._serve, frames, next(self._ids))

    def _forget(self, unheard: _Unheard) -> None:
        """It spoke, was dropped, or NATS lost a message for it: no record any more."""
        self._unheard.pop(unheard, None)
        self._main._handshakes.forget(unheard)  # its deadline, if it had one
        self._client.streams.pop(unheard.subject, None)

    async def _make_room(self) -> None:
        """Drop the renderers that waited longest while the bound has no room for one more.

        Those silent past ``handshake_timeout`` main's ``HandshakeDeadlines``
        drops, as it does a socket's (``_Unheard.handshake_expired``).
        """
        unheard = self._unheard
        limit = self._waiting.limit()
        while len(unheard) >= limit:
            await self._drop(
                next(iter(unheard)),
                CloseCode.TOO_MANY_CONNECTIONS,
                "too many connections waiting for their handshake: this replica holds "
                f"at most {limit}, and this one had waited longest",
            )

    async def _drop(self, unheard: _Unheard, code: CloseCode, reason: str) -> None:
        """Tell a renderer not yet heard from that it is dropped, and forget it."""
        self._forget(unheard)
        if code is not CloseCode.SHUTDOWN:  # leaving is no one's fault
            self._main._handshake_warnings.warning(
                "NATS app %r: dropped a renderer before its handshake: %s", self.app, reason
            )
        with suppress(Exception):
            # Its first message from us, as its NatsFrames would have numbered it.
            await self._client.nc.publish(
                unheard.inbox,
                memoryview(goodbye(code, reason))[4:],  # type: ignore[arg-type]
                headers={SEQ_HEADER: "1"},
            )

    async def _serve(self, frames: NatsFrames, renderer_id: int) -> None:
        self._served.add(renderer_id)
        try:
            # Accepted, as from a listener: until its Hello it waits in this
            # replica's own Waiting (one more drops the oldest), so a flood of
            # connect requests costs main a bounded number of connections.
            await self._main._serve(
                frames,
                self._token,
                0,
                None,
                allowed=self._allowed,
                accepted=self._waiting,
                renderer_id=renderer_id,
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
        limit = self._client.nc.max_payload - HEADROOM
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
        for unheard in list(self._unheard):
            await self._drop(unheard, CloseCode.SHUTDOWN, f"main is leaving app {self.app!r}")
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


class _Unheard:
    """A renderer given its subject that has sent nothing on it yet.

    In ``NatsClient.streams`` in place of a ``NatsFrames`` until its first
    message, which makes one (``Replica._heard``).
    """

    __slots__ = ("inbox", "replica", "subject")

    def __init__(self, replica: Replica, subject: str, inbox: str) -> None:
        self.replica = replica
        self.subject = subject  # where it sends
        self.inbox = inbox  # where it is sent to

    def deliver(self, msg: Msg) -> None:
        self.replica._heard(self, msg)

    def lose(self, reason: str) -> None:
        self.replica._forget(self)

    def handshake_expired(self, reason: str) -> None:
        """Silent for ``handshake_timeout`` (main's ``HandshakeDeadlines``)."""
        replica = self.replica
        if self in replica._unheard and (tg := replica._main._tg) is not None:
            replica._forget(self)  # at once: it no longer counts against the bound
            tg.start_soon(replica._drop, self, CloseCode.PROTOCOL_ERROR, reason)


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
    client = await NatsClient.open(url, timeout, nats_options)
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
