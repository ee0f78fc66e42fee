"""One connected renderer as main's code sees it: ``WebContents``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from ._endpoint import Endpoint
from ._errors import ConnectionClosedError
from ._mainevents import DisconnectDetails
from ._portends import Sink
from ._protocol import OPEN, State
from ._registry import Registry, check_channel
from ._streams import DEFAULT_WINDOW, IpcStream
from ._wire import INVOKE, CloseCode
from .ports import MessagePortMain, check_transfer

if TYPE_CHECKING:
    from .main import IpcMain

__all__ = ("WebContents",)


class WebContents:
    """One connected renderer, as main sees it.

    Attributes:
        id: unique among the renderers of one ``IpcMain``, never reused.
        process_id: the renderer's process id.
        ipc: listeners and handlers for messages from this renderer only; they
            run before ``ipc_main``'s, and a handler here answers ``invoke``
            instead of ``ipc_main``'s.
    """

    def __init__(self, main: IpcMain, id: int, process_id: int) -> None:
        self.id = id
        self.process_id = process_id
        self._ipc: Registry | None = None  # made when first asked for (issue 12)
        self._main = main
        self._endpoint: Endpoint | None = None
        self._process: anyio.abc.Process | None = None
        # Set once the renderer is gone; the Event is made only if someone waits.
        self._is_finished = False
        self._finished_event: anyio.Event | None = None
        self._port_sink: Sink | None = None
        self.disconnect_details: DisconnectDetails | None = None

    @property
    def ipc(self) -> Registry:
        """Listeners and handlers for this renderer only (see the class docstring)."""
        if self._ipc is None:
            self._ipc = Registry()
        return self._ipc

    def _finished(self) -> None:
        self._is_finished = True
        if self._finished_event is not None:
            self._finished_event.set()

    async def _wait_finished(self) -> None:
        if not self._is_finished:
            if self._finished_event is None:
                self._finished_event = anyio.Event()
            await self._finished_event.wait()

    def _open_endpoint(self) -> Endpoint:
        endpoint = self._endpoint
        if endpoint is None or endpoint.conn.state is not OPEN:
            reason = endpoint.reason if endpoint is not None else "not connected"
            raise ConnectionClosedError(f"renderer {self.id} is gone ({reason})")
        return endpoint

    async def send(self, channel: str, *args: Any) -> None:
        """Send a message to the renderer's ``ipc_renderer.on(channel)`` listeners.

        Raises:
            ConnectionClosedError: the renderer is gone.
            SerializationError: an argument cannot be encoded; nothing was sent.
        """
        check_channel(channel)
        endpoint = self._open_endpoint()
        if endpoint.outbox.queue_message(channel, args):
            await endpoint.outbox.flush()

    async def invoke(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """Call the renderer's ``ipc_renderer.handle(channel)`` and return its result."""
        check_channel(channel)
        return await self._open_endpoint().calls.request(INVOKE, channel, args, timeout)

    async def post_message(
        self, channel: str, message: Any, transfer: Iterable[MessagePortMain] = ()
    ) -> None:
        """Send ``message`` with the ports in ``transfer`` to ``ipc_renderer.on(channel)``.

        The renderer's listeners get ``(event, message)`` with the ports in
        ``event.ports``; the ports here are neutered. If the renderer has no
        listener on ``channel``, it closes the ports (their peers see "close").

        Raises:
            TypeError: a bad ``transfer`` (the message names the index).
            SerializationError: ``message`` cannot be encoded; nothing is sent.
            FrameTooLargeError: the message could be over the peer's
                ``max_frame_size``; nothing is sent and the ports are untouched.
            ConnectionClosedError: the renderer is gone.
        """
        check_channel(channel)
        router = self._main._ports
        ports = check_transfer(transfer, None, router)
        await self._open_endpoint().outbox.post_message(
            channel,
            message,
            len(ports),
            lambda: router.send_out([router.claim(port) for port in ports], self._sink()),
        )

    def stream(self, channel: str, *args: Any, window: int = DEFAULT_WINDOW) -> IpcStream:
        """Iterate what the renderer's async-generator ``handle(channel)`` yields.

        ``window`` items at most are buffered or in flight: a slow loop here
        pauses the generator there. See :class:`ipcbus.IpcStream`.

        Raises:
            ConnectionClosedError: the renderer is gone.
        """
        check_channel(channel)
        return IpcStream(self._open_endpoint(), channel, args, window)

    def _sink(self) -> Sink:
        endpoint = self._endpoint
        assert endpoint is not None
        if self._port_sink is None or self._port_sink.endpoint is not endpoint:
            self._port_sink = Sink(endpoint)
        return self._port_sink

    def is_destroyed(self) -> bool:
        """Whether the renderer's connection has ended."""
        return self._endpoint is None or self._endpoint.conn.state is State.CLOSED

    async def close(self) -> None:
        """Close the connection to this renderer (a spawned child is left to exit)."""
        if self._endpoint is not None:
            await self._endpoint.close(CloseCode.NORMAL, "closed by main")
        await self._wait_finished()

    async def wait_closed(self) -> None:
        """Return once the renderer is gone (and, if spawned, its process has exited)."""
        await self._wait_finished()

    def __repr__(self) -> str:
        state = "destroyed" if self.is_destroyed() else "live"
        return f"<WebContents id={self.id} pid={self.process_id} {state}>"
