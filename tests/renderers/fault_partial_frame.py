"""A renderer killed in the middle of a large frame.

It speaks the protocol by hand over the socket ``IpcMain.spawn`` gave it: the
handshake, then one write holding a whole ``ready`` message followed by the
header and the first 2 MiB of an 8 MiB frame. Then it sleeps until killed.
"""

from __future__ import annotations

import os
import socket
import time

import msgspec

from ipcbus._framing import FrameDecoder, append_frame
from ipcbus._wire import PROTOCOL_VERSION, Hello, Message, Welcome

encoder = msgspec.msgpack.Encoder()
sock = socket.socket(fileno=int(os.environ["IPCBUS_FD"]))
out = bytearray()
append_frame(encoder, Hello(PROTOCOL_VERSION, os.environ["IPCBUS_TOKEN"], os.getpid()), out)
sock.sendall(out)

frames = FrameDecoder(1024 * 1024)
while (body := frames.next_body()) is None:
    frames.feed(sock.recv(65536))
assert isinstance(msgspec.msgpack.decode(body, type=Welcome), Welcome)

out = bytearray()
append_frame(encoder, Message("ready", msgspec.Raw(encoder.encode([]))), out)
out += (8 * 1024 * 1024).to_bytes(4, "big") + b"\x93\x03\xa3big" + bytes(2 * 1024 * 1024)
sock.sendall(out)
time.sleep(3600)
