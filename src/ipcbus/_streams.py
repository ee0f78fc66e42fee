"""The consumer's side of a stream: ``ipc_renderer.stream(...)`` and ``WebContents.stream``.

The server runs an async generator and may send as many items as the
consumer has granted (docs/ports-and-streams.md, "Streams"). The consumer
grants ``window`` items up front and, as it takes items out, grants them again
in batches of half a window. So at most ``window`` items are ever buffered or
in flight, and a consumer that stops reading stops the generator.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import anyio

from ._calls import StreamWaiter, error_from_reply
from ._endpoint import Endpoint
from ._errors import ConnectionClosedError
from ._protocol import State
from ._values import decode_value

__all__ = ("DEFAULT_WINDOW", "IpcStream")

#: Items a stream's producer may run ahead of its consumer, by default.
DEFAULT_WINDOW = 32
MAX_WINDOW = 2**32  # more than anyone buffers; a credit must fit in msgpack's ints


class IpcStream:
    """The values an async-generator handler yields, as an async iterator.

    Use ``async for value in stream`` or, to close it deterministically when
    the block ends, ``async with stream: async for value in stream``.
    Leaving early (``break``, an exception, cancellation, :meth:`aclose`)
    tells the other side, which closes its generator.

    Raises (from iteration):
        RemoteError: the generator raised; ``str()`` names the channel.
        NoHandlerError, ValidationError: as for ``invoke``.
        ConnectionClosedError: the connection ended first.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        channel: str,
        args: tuple[Any, ...],
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self._waiter: StreamWaiter | None = None
        self._finished = False
        if not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
            self._finished = True
            raise ValueError(f"window must be a positive int of at most 2**32, not {window!r}")
        self.channel = channel
        self._endpoint = endpoint
        self._args = args
        self._window = window
        self._request_id = 0
        self._taken = 0  # items taken since credit was last granted

    # ---- iteration -----------------------------------------------------

    def __aiter__(self) -> IpcStream:
        return self

    async def __anext__(self) -> Any:
        if self._waiter is None:
            if self._finished:
                raise StopAsyncIteration
            await self._start()
        waiter = self._waiter
        endpoint = self._endpoint
        assert waiter is not None
        try:
            while True:
                if waiter.items:
                    raw = waiter.items.popleft()
                    if self._took_one(endpoint):
                        # Send the grant now, not when this task next waits: the
                        # producer then refills while we work through the rest.
                        await endpoint.outbox.flush_quietly()
                    return decode_value(raw)
                if waiter.reply is not None:
                    self._finish(cancel=False)
                    if waiter.reply.ok:
                        raise StopAsyncIteration
                    raise error_from_reply(self.channel, waiter.reply.value)
                if endpoint.conn.state is not State.OPEN:
                    self._finish(cancel=False)
                    raise ConnectionClosedError(
                        f"connection to {endpoint.name} closed before the stream "
                        f"{self.channel!r} ended ({endpoint.reason})"
                    )
                waiter.arrived = anyio.Event()
                await waiter.arrived.wait()
        except BaseException as exc:
            if not isinstance(exc, StopAsyncIteration):
                await self._cancel()
            raise

    async def _start(self) -> None:
        endpoint = self._endpoint
        self._request_id, self._waiter = endpoint.calls.start_stream(
            self.channel, self._args, self._window
        )
        try:
            await endpoint.outbox.flush()
        except BaseException:
            await self._cancel()
            raise

    def _took_one(self, endpoint: Endpoint) -> bool:
        """Count one item taken; ``True`` if that queued a grant of more credit."""
        self._taken += 1
        if self._taken < max(1, self._window // 2) or endpoint.conn.state is not State.OPEN:
            return False
        endpoint.conn.grant_credit(self._request_id, self._taken)
        self._taken = 0
        return True

    # ---- closing -------------------------------------------------------

    def _finish(self, cancel: bool) -> None:
        if self._finished:
            return
        self._finished = True
        if self._waiter is not None:
            self._endpoint.calls.end_stream(self._request_id, cancel)

    async def _cancel(self) -> None:
        if self._finished:
            return
        self._finish(cancel=True)
        with anyio.move_on_after(1, shield=True):
            await self._endpoint.outbox.flush_quietly()  # best effort: stop the generator now

    async def aclose(self) -> None:
        """Stop the stream; the other side closes its generator. Idempotent."""
        if self._waiter is None:
            self._finished = True  # never started: nothing to tell
            return
        await self._cancel()

    async def __aenter__(self) -> IpcStream:
        if self._waiter is None and not self._finished:
            await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # ``break`` out of a bare ``async for`` drops the stream: cancel it then.
        if not self._finished and self._waiter is not None:
            try:
                self._finish(cancel=True)
            except Exception:  # pragma: no cover - interpreter or loop shutting down
                pass

    def __repr__(self) -> str:
        state = "finished" if self._finished else "open" if self._waiter else "not started"
        return f"<IpcStream {self.channel!r} {state}>"
