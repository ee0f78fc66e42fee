"""A renderer killed in the middle of a large frame.

It speaks the protocol by hand over the socket ``IpcMain.spawn`` gave it: the
handshake, then one write holding a whole ``ready`` message followed by the
header and the first 2 MiB of an 8 MiB frame. Then it sleeps until killed.
``fault_partial_frame.py FRAME_MIB SENT_MIB [DONE_FILE]`` announces and sends
other sizes, and creates DONE_FILE once the kernel has taken every byte.
"""

from __future__ import annotations

import os
import socket
import sys
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

frame_mib, sent_mib = (int(arg) for arg in sys.argv[1:3]) if len(sys.argv) > 2 else (8, 2)
out = bytearray()
append_frame(encoder, Message("ready", msgspec.Raw(encoder.encode([]))), out)
out += (frame_mib << 20).to_bytes(4, "big") + b"\x93\x03\xa3big" + bytes(sent_mib << 20)
sock.sendall(out)
if len(sys.argv) > 3:
    open(sys.argv[3], "x").close()
time.sleep(3600)
