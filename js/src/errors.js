// The errors the client raises, named as ipcbus's Python ones (src/ipcbus/_errors.py):
//
//   IpcError
//   ├── NoHandlerError         invoke/sendSync reached nobody
//   ├── RemoteError            main's handler or listener threw
//   ├── ValidationError        the arguments did not fit the handler's annotations
//   ├── SerializationError     a value cannot be put on the wire; nothing was sent
//   ├── IpcTimeoutError        no reply within the timeout (main was told: Cancel)
//   ├── ConnectionClosedError  the connection is gone, or was never there
//   ├── ProtocolError          main broke docs/protocol.md
//   │   └── FrameTooLargeError a frame over the size limit
//   └── AuthenticationError    main refused the token
//
// Each error's `name` is its class name, so `${error}` and the console show it.

/** Base class of every error the client raises on purpose. */
export class IpcError extends Error {
  /** @param {string} message @param {ErrorOptions} [options] */
  constructor(message, options) {
    super(message, options);
  }
}

/** An error main sent back in a Reply; keeps what main said. */
class RemoteReplyError extends IpcError {
  /**
   * @param {string} message
   * @param {string} channel
   * @param {string} remoteType
   * @param {string} remoteMessage
   * @param {string | null} remoteTraceback
   */
  constructor(message, channel, remoteType, remoteMessage, remoteTraceback) {
    super(message);
    this.channel = channel;
    this.remoteType = remoteType;
    this.remoteMessage = remoteMessage;
    this.remoteTraceback = remoteTraceback;
  }
}

/** Rejects a call when main has no handler (invoke) or no listener (sendSync). */
export class NoHandlerError extends RemoteReplyError {}

/** Rejects a call whose arguments did not fit main's handler; it was not run. */
export class ValidationError extends RemoteReplyError {}

/** Rejects a call when main's handler or listener raised. */
export class RemoteError extends RemoteReplyError {
  /**
   * @param {string} channel
   * @param {string} remoteType
   * @param {string} remoteMessage
   * @param {string | null} [remoteTraceback]
   */
  constructor(channel, remoteType, remoteMessage, remoteTraceback = null) {
    super(
      `Error invoking remote method ${pyRepr(channel)}: ${remoteType}: ${remoteMessage}`,
      channel,
      remoteType,
      remoteMessage,
      remoteTraceback,
    );
  }
}

/** Thrown (send, postMessage) or rejected (the rest) when a value cannot be sent. */
export class SerializationError extends IpcError {}

/** Rejects a call that got no reply within its timeout. */
export class IpcTimeoutError extends IpcError {}

/** Rejects calls made while not connected, and the calls a lost connection leaves. */
export class ConnectionClosedError extends IpcError {}

/** Main broke the wire protocol (or speaks another version). */
export class ProtocolError extends IpcError {}

/** A frame over the size limit: ours (nothing was sent) or main's (the link ends). */
export class FrameTooLargeError extends ProtocolError {}

/** Rejects connect() when main refused the token. */
export class AuthenticationError extends IpcError {}

// Names written out, not taken from `cls.name`: a bundler may rename classes.
for (const [cls, name] of /** @type {const} */ ([
  [IpcError, "IpcError"],
  [RemoteReplyError, "RemoteReplyError"],
  [NoHandlerError, "NoHandlerError"],
  [ValidationError, "ValidationError"],
  [RemoteError, "RemoteError"],
  [SerializationError, "SerializationError"],
  [IpcTimeoutError, "IpcTimeoutError"],
  [ConnectionClosedError, "ConnectionClosedError"],
  [ProtocolError, "ProtocolError"],
  [FrameTooLargeError, "FrameTooLargeError"],
  [AuthenticationError, "AuthenticationError"],
])) {
  Object.defineProperty(cls.prototype, "name", { value: name, writable: true, configurable: true });
}

// ErrorKind in docs/protocol.md
const NO_HANDLER = 2;
const VALIDATION = 3;

/**
 * The error a caller rejects with for a failed Reply's `value` (an ErrorInfo),
 * as the Python renderer builds it (_endpoint.error_from_reply).
 * @param {string} channel
 * @param {unknown} info
 * @returns {IpcError}
 */
export function errorFromReply(channel, info) {
  if (
    !Array.isArray(info) ||
    info.length < 3 ||
    !Number.isInteger(info[0]) ||
    typeof info[1] !== "string" ||
    typeof info[2] !== "string" ||
    (info[3] != null && typeof info[3] !== "string")
  ) {
    return new RemoteError(channel, "ProtocolError", "the error reply could not be decoded");
  }
  const [kind, type, message] = info;
  const traceback = info[3] ?? null;
  if (kind === NO_HANDLER) return new NoHandlerError(message, channel, type, message, traceback);
  if (kind === VALIDATION) return new ValidationError(message, channel, type, message, traceback);
  return new RemoteError(channel, type, message, traceback);
}

/**
 * A string as Python's repr() writes it, so messages read exactly as the
 * Python renderer's: 'add', "it's".
 * @param {string} text
 */
export function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    if (char === "\\" || char === quote) out += `\\${char}`;
    else if (char === "\n") out += "\\n";
    else if (char === "\r") out += "\\r";
    else if (char === "\t") out += "\\t";
    else if (code < 0x20 || (code >= 0x7f && code < 0xa0)) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += char;
  }
  return out + quote;
}
