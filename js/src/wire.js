// Frame tags and enumerations of the wire protocol (docs/protocol.md), as in
// src/ipcbus/_wire.py. Over a WebSocket each frame body is one binary message:
// a msgpack array, tag first, without the socket transport's 4-byte length.

export const PROTOCOL_VERSION = 1;

/** Largest frame body accepted by default (64 MiB), as ipcbus.DEFAULT_MAX_FRAME_SIZE. */
export const DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024;

export const HELLO = 1;
export const WELCOME = 2;
export const MESSAGE = 3;
export const REQUEST = 4;
export const REPLY = 5;
export const CANCEL = 6;
export const GOODBYE = 7;
export const PING = 8;
export const PONG = 9;
export const PORT_MESSAGE = 10;
export const PORT_CLOSE = 11;
export const STREAM_ITEM = 12;
export const STREAM_CREDIT = 13;

/** RequestKind */
export const INVOKE = 1;
export const SYNC = 2;
export const STREAM = 3;

/** ErrorKind */
export const REMOTE = 1;
export const NO_HANDLER = 2;
export const CANCELLED = 4;

/** CloseCode */
export const CloseCode = Object.freeze({
  NORMAL: 0,
  PROTOCOL_ERROR: 1,
  AUTHENTICATION_FAILED: 2,
  VERSION_MISMATCH: 3,
  FRAME_TOO_LARGE: 4,
  SHUTDOWN: 5,
  TOO_MANY_CONNECTIONS: 6,
});

/** The reply to a Cancel that reached a request still being served. */
export const CANCEL_ACK = Object.freeze([CANCELLED, "CancelledError", "cancelled by the caller", null]);
