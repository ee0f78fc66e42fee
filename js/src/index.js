// ipcbus's browser client: a web page as an ipcbus renderer (SPEC section 10).
export { connect, ipcRenderer, IpcRenderer, DisconnectEvent } from "./renderer.js";
export { IpcStream } from "./stream.js";
export { IpcMessagePort, IpcMessageEvent } from "./ports.js";
export {
  AuthenticationError,
  ConnectionClosedError,
  FrameTooLargeError,
  IpcError,
  IpcTimeoutError,
  NoHandlerError,
  ProtocolError,
  RemoteError,
  SerializationError,
  ValidationError,
} from "./errors.js";
export { CloseCode, DEFAULT_MAX_FRAME_SIZE, PROTOCOL_VERSION } from "./wire.js";
