"""One nats-py client and the ipcbus connections that share it: connecting, routing, staying awake.

A replica's renderers all ride on its one client (``NatsClient.route`` hands
each message to its connection); a renderer has a client of its own. The
client turns nats-py's reports (refused credentials, a slow consumer, a
closed connection) into ipcbus's errors and connection ends, and
``watch`` reconnects a client whose reader has died while it still says it
is connected. Subjects, frames and the renderer's way in are ``_nats``'s.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._errors import ConnectionClosedError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ("WATCH_EVERY", "WATCH_WAIT", "NatsClient", "Routed", "nats_module")

logger = logging.getLogger("ipcbus")

#: A replica asks its NATS server for a PONG every WATCH_EVERY seconds; none
#: within WATCH_WAIT means nats-py no longer reads (see NatsClient.watch).
WATCH_EVERY = 3.0
WATCH_WAIT = 10.0


class Routed(Protocol):
    """What receives on a subject of the client's (a connection, or a replica's
    renderer that has not spoken yet)."""

    def deliver(self, msg: Msg) -> None:
        """One message, in order, without waiting."""

    def lose(self, reason: str) -> None:
        """NATS lost messages for it, or the client closed."""


def nats_module() -> Any:
    try:
        import nats
    except ImportError:
        raise ImportError(
            "ipcbus over NATS needs the nats-py client: pip install 'ipcbus[nats]'"
        ) from None
    return nats


class NatsClient:
    """One nats-py client and the ipcbus connections that ride on it."""

    def __init__(self, nc: Client, where: str) -> None:
        self.nc = nc
        self.where = where
        self.streams: dict[str, Routed] = {}  # by the subject each receives on

    async def route(self, msg: Msg) -> None:
        """A subscription's callback for many connections: to the one ``msg`` is for.

        A replica's renderers share one subscription (``NatsFrames.attach``),
        not one each: a nats-py subscription with a callback is a task and a
        queue of its own.
        """
        if (stream := self.streams.get(msg.subject)) is not None:
            stream.deliver(msg)

    @classmethod
    async def open(
        cls,
        servers: str | list[str],
        timeout: float,
        options: Mapping[str, Any],
        tls: ssl.SSLContext | None = None,
    ) -> NatsClient:
        """Connect to NATS; fail at once on refused credentials, else within ``timeout``."""
        nats = nats_module()
        try:  # sniffio is no dependency of ours (nor of a new anyio's)
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "ipcbus over NATS runs on asyncio only (the nats-py client does): "
                "run it with anyio.run(..., backend='asyncio') or asyncio.run()"
            ) from None
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
        opening = [True]  # until connected: credentials refused end the attempt

        async def error_cb(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                client.slow_consumer(exc.subject)
            elif opening[0] and _refused(nats, exc):
                refused.append(exc)
                # Retrying will not change the server's mind: nats-py gives up
                # after this attempt (its own way out, which closes everything).
                nc.options["allow_reconnect"] = False
            else:
                logger.warning("NATS at %s: %r", where, exc)
            await _call(hooks["error_cb"], exc)

        async def disconnected_cb() -> None:
            # Messages lost meanwhile show as a gap in Ipcbus-Seq; a peer gone for
            # good, as heartbeats that stop.
            if not nc.is_closed:
                logger.warning("disconnected from NATS at %s; reconnecting", where)
            await _call(hooks["disconnected_cb"])

        async def reconnected_cb() -> None:
            logger.info("reconnected to NATS at %s", where)
            await _call(hooks["reconnected_cb"])

        async def closed_cb() -> None:
            client.closed()
            await _call(hooks["closed_cb"])

        try:
            with anyio.fail_after(timeout):
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

    async def watch(self) -> None:
        """Reconnect when nats-py stops reading while it still says it is connected.

        nats-py's reader ends on some malformed messages the server passes on
        (a reply subject or a header that does not decode), logging once and
        reading nothing more, while the client stays "connected" and the
        server keeps sending: a replica would be deaf until nats-py's own
        stale-connection ping, minutes later. Any peer allowed to publish on
        the app's subjects can send such a message. So every ``WATCH_EVERY``
        seconds the server is asked for a PONG; none within
        ``WATCH_WAIT`` seconds, and the client reconnects: its subscriptions
        are made again, and connections whose messages were lost meanwhile
        end as "messages were lost". Runs until cancelled.
        """
        nc = self.nc
        # A PING and its PONG: rtt in nats-py 2.15 and later, whose flush
        # skips the PONG once its reader has ended; flush before that.
        probe: Callable[..., Awaitable[object]] = getattr(nc, "rtt", None) or nc.flush
        while True:
            await anyio.sleep(WATCH_EVERY)
            if not nc.is_connected:
                continue  # nats-py is reconnecting, or closed: its own business
            try:
                await probe(timeout=WATCH_WAIT)
            except Exception as exc:
                if not nc.is_connected:
                    continue
                logger.warning(
                    "NATS at %s: no answer to a ping within %g s (%r); reconnecting",
                    self.where,
                    WATCH_WAIT,
                    exc,
                )
                force = getattr(nc, "force_reconnect", None)  # nats-py 2.15 and later
                if force is not None:
                    await force()
                elif (op_err := getattr(nc, "_process_op_err", None)) is not None:
                    await op_err(exc)  # what earlier nats-py does when its reader fails
                else:
                    self.closed()  # no way to reconnect: end its connections, say why

    def slow_consumer(self, subject: str) -> None:
        if (stream := self.streams.get(subject)) is not None:
            stream.lose("NATS dropped messages for a slow consumer")

    def closed(self) -> None:
        for stream in list(self.streams.values()):
            stream.lose(f"the connection to the NATS server at {self.where} is closed")

    async def close(self) -> None:
        with suppress(Exception):
            await self.nc.close()


def _refused(nats: Any, exc: Exception) -> bool:
    """Whether the server refused our credentials (it says so as an -ERR line)."""
    if isinstance(exc, nats.errors.AuthorizationError | nats.errors.SecureConnRequiredError):
        return True
    text = str(exc).lower()
    return isinstance(exc, nats.errors.Error) and (
        "authorization violation" in text or "authentication" in text
    )


async def _call(hook: Callable[..., Awaitable[None]] | None, *args: Any) -> None:
    if hook is not None:
        await hook(*args)
