"""How renderers come to main: ``listen``, ``serve_web``, ``join``, ``spawn``, ``connect_local``.

A base class of ``main.IpcMain``, so these stay the same object's methods.
Each is the public door to its own room (``_listening``, ``web``,
``_natsreplica``, ``_children``, a socket pair in this process), and every
way in ends in ``_serve``, which runs one renderer's connection to its end
(``_serving.serve``). The state they read and update (the listeners open,
the task group, the settings) is kept by ``IpcMain``.
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio.abc

from ._children import spawn
from ._listening import Listener, accept
from ._listensocket import create_listener
from ._refusing import OUT_OF_DESCRIPTORS
from ._registry import channel_set
from ._serving import Link, serve
from ._transport import child_socketpair, stream_from_socket
from ._webcontents import WebContents

if TYPE_CHECKING:
    from ._natsreplica import Replica
    from .main import IpcMain
    from .renderer import IpcRenderer
    from .web import WebServer

__all__ = ("Arrivals",)


class Arrivals:
    """The ways renderers arrive at ``IpcMain``: listeners, web pages, replicas, children."""

    # Its methods use IpcMain's state (the task group, the listeners open,
    # the settings) and hand the IpcMain to rooms that take one. ``IpcMain``
    # is its one subclass, so each method names ``self`` as one (a cast).

    async def listen(
        self,
        address: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allowed_channels: Iterable[str] | None = None,
    ) -> Listener:
        """Start accepting renderers; see SPEC section 2 for the address forms.

        Without an address: a unix socket in a new private (0700) directory,
        removed when the listener closes. Without a token: a random one.
        ``allowed_channels`` narrows what renderers connecting here may use.
        """
        main = cast("IpcMain", self)
        tg = main._require_running("listen")
        created = await create_listener(
            address, ssl_context, main.handshake_timeout, refusal=OUT_OF_DESCRIPTORS
        )
        listener = Listener(created, token if token is not None else secrets.token_hex(32))
        listener.allowed_channels = channel_set(allowed_channels)
        main._listeners_open.add(listener)
        tg.start_soon(accept, main, listener, tg)
        return listener

    async def serve_web(
        self,
        static_dir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        ssl: ssl.SSLContext | None = None,
        allowed_origins: Iterable[str] | None = None,
        allowed_channels: Iterable[str] | None = None,
        content_security_policy: str | None = "script-src 'self'",
    ) -> WebServer:
        """Serve web pages as renderers (SPEC section 10, docs/web.md); needs ``ipcbus[web]``.

        Serves ``static_dir`` (``index.html`` at ``/``), the JS client at
        ``/ipcbus.js`` with its types at ``/ipcbus.d.ts``, and the WebSocket
        pages connect to at ``/ipcbus``. Each page that connects with the
        token is a renderer with a ``WebContents``. ``allowed_origins`` adds
        browser origins besides the server's own that may open the
        WebSocket; ``allowed_channels`` narrows what pages may use;
        ``content_security_policy`` is sent with every response (``None``:
        no header). Open ``WebServer.url``.

        Raises:
            RuntimeError: not inside ``async with ipc_main:``.
            ValueError: a non-loopback ``host`` without ``ssl``.
            ImportError: the ``web`` extra is not installed.
        """
        main = cast("IpcMain", self)
        main._require_running("serve_web")
        try:
            from .web import _server
        except ImportError as exc:
            raise ImportError(
                f"IpcMain.serve_web() needs the web extra ({exc}): pip install 'ipcbus[web]'"
            ) from exc
        return await _server.start(
            main,
            None if static_dir is None else os.fspath(static_dir),
            host=host,
            port=port,
            token=token if token is not None else secrets.token_hex(32),
            ssl=ssl,
            allowed_origins=allowed_origins,
            allowed_channels=channel_set(allowed_channels),
            content_security_policy=content_security_policy,
        )

    async def join(
        self,
        url: str | list[str],
        *,
        app: str,
        token: str | None = None,
        allowed_channels: Iterable[str] | None = None,
        timeout: float = 10.0,
        **nats_options: Any,
    ) -> Replica:
        """Serve ``app``'s renderers as one of its replicas, joined through NATS.

        Returns once the server has confirmed the subscriptions, so a renderer
        connecting right after is served. ``nats_options`` go to
        ``nats.connect`` (user, password, token, nkeys_seed, tls, ...): the
        NATS server authenticates. ``token``, if given, is a shared ipcbus
        token every renderer of the app must present too. See docs/scale-out.md
        (subjects, permissions, liveness). Needs ``pip install 'ipcbus[nats]'``
        and the asyncio backend. ``allowed_channels`` narrows what the app's
        renderers may use here; ``timeout`` bounds reaching the server.

        Raises:
            ConnectionClosedError: the NATS server cannot be reached within
                ``timeout`` or refused the credentials.
        """
        from ._natsreplica import join

        main = cast("IpcMain", self)
        main._require_running("join")
        return await join(
            main,
            url,
            app=app,
            token=token,
            allowed=channel_set(allowed_channels),
            timeout=timeout,
            nats_options=nats_options,
        )

    async def spawn(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        allowed_channels: Iterable[str] | None = None,
    ) -> WebContents:
        """Start ``argv`` as a renderer, already connected, and return its ``WebContents``.

        The child inherits one end of a socket pair; ``ipcbus.connect()`` with
        no address finds it. Returns once the child has connected.
        ``allowed_channels`` narrows the channels this renderer may use (on
        top of ``IpcMain(allowed_channels=...)``).

        Raises:
            ConnectionClosedError: the child exited, or did not connect within
                ``handshake_timeout``. A child that never completed the
                handshake is terminated (killed after 1 s) and reaped first,
                also when ``spawn`` is cancelled.
        """
        main = cast("IpcMain", self)
        return await spawn(main, argv, env, cwd, allowed_channels)

    @asynccontextmanager
    async def connect_local(self) -> AsyncIterator[IpcRenderer]:
        """An ``IpcRenderer`` in this process, connected through a real socket pair."""
        from .renderer import IpcRenderer

        main = cast("IpcMain", self)
        tg = main._require_running("connect_local")
        token = secrets.token_hex(32)
        ours, theirs = child_socketpair()
        main_stream = await stream_from_socket(ours)
        await tg.start(main._serve_started, main_stream, token, None)
        renderer = IpcRenderer()
        async with renderer._connect_stream(await stream_from_socket(theirs), token):
            yield renderer

    async def _serve_started(
        self,
        stream: anyio.abc.ByteStream,
        token: str,
        process: anyio.abc.Process | None,
        allowed: frozenset[str] | None = None,
        *,
        task_status: anyio.abc.TaskStatus[Link],
    ) -> None:
        pid = process.pid if process is not None else os.getpid()
        await serve(
            cast("IpcMain", self), stream, token, pid, process, task_status, allowed=allowed
        )

    # Run one renderer's connection to its end: every way in ends here
    # (listeners, ``spawn``, ``connect_local``, the web server, a NATS
    # replica). ``_serving.serve`` itself, so a method of the IpcMain.
    _serve = serve
