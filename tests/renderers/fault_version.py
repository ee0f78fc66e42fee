"""A renderer that speaks another protocol version (argv[1]) to $IPCBUS_ADDRESS.

Prints ``ProtocolError: <message>`` when main refuses it (the expected outcome)
and exits 0; prints ``connected`` and exits 1 if main accepts it.
"""

from __future__ import annotations

import sys

import anyio

import ipcbus
import ipcbus._protocol

ipcbus._protocol.PROTOCOL_VERSION = int(sys.argv[1])  # type: ignore[attr-defined]


async def main() -> int:
    try:
        async with ipcbus.connect():
            print("connected", flush=True)
            return 1
    except ipcbus.ProtocolError as exc:
        print(f"ProtocolError: {exc}", flush=True)
        return 0


sys.exit(anyio.run(main))
