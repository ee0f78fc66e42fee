"""A real ``nats-server`` on a free loopback port, started and killed by fixtures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
)


class NatsServer:
    """One nats-server process: ``url``, and ``stop()`` (also run by the fixture)."""

    def __init__(self, tmp: Path, config: str = "") -> None:
        if NATS_SERVER is None:
            if os.environ.get("CI"):
                pytest.fail("nats-server is not installed, and CI must run the NATS tests")
            pytest.skip("nats-server is not installed (CI installs it: .ci/run)")
        self.port = _free_port()
        argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)]
        if config:
            path = tmp / f"nats-{self.port}.conf"
            path.write_text(config)
            argv += ["-c", str(path)]
        self.url = f"nats://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_accepting()

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                # The server greets every client with INFO: it is serving.
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("nats-server did not start")
            time.sleep(0.02)  # between attempts to connect; the wait itself is the connect

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url
