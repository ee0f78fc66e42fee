// Type declarations of ipcbus's browser client (/ipcbus.js), SPEC section 10.
// A web page is an ipcbus renderer: `ipcRenderer` has Electron's names.

/** The event a listener gets first: `(event, ...args)`. */
export interface IpcRendererEvent {
  /** The `ipcRenderer` that received the message. */
  sender: IpcRenderer;
  /** Always 0: messages come from main. */
  senderId: 0;
  /** Message ports main sent with the message (`contents.post_message`); else empty. */
  ports: IpcMessagePort[];
  /** The channel the message came on. */
  channel: string;
}

/** The event a `handle()` handler gets first. */
export interface IpcRendererInvokeEvent extends IpcRendererEvent {
  /** Aborted when main cancels the request (its timeout, or it gave up) or the connection ends. */
  signal: AbortSignal;
}

export type IpcListener = (event: IpcRendererEvent, ...args: any[]) => void | Promise<void>;

/**
 * A `handle()` handler: returns (or resolves to) the answer of `contents.invoke`;
 * for `contents.stream`, returns an (async) iterable, e.g. an async generator.
 */
export type IpcHandler = (event: IpcRendererInvokeEvent, ...args: any[]) => unknown;

export interface InvokeOptions {
  /** Milliseconds to wait for the reply; then reject with IpcTimeoutError and cancel main's handler. */
  timeout?: number;
  /** Aborting it rejects the call with `signal.reason` and cancels main's handler. */
  signal?: AbortSignal;
}

export interface StreamOptions {
  /** Items main may send ahead of the loop (default 32). */
  window?: number;
  /** Aborting it ends the loop with `signal.reason` and cancels main's generator. */
  signal?: AbortSignal;
}

export interface ConnectOptions {
  /** The WebSocket URL; default `ws[s]://<this page's host>/ipcbus`. */
  url?: string;
  /** The token; default `token` from `location.hash` (`#token=...`). */
  token?: string;
  /** Milliseconds to wait for main's answer to the handshake (default 10000; 0: no limit). */
  timeout?: number;
  /** The largest frame accepted from main, in bytes (default 64 MiB). */
  maxFrameSize?: number;
  /** The WebSocket class to use (default `globalThis.WebSocket`); for tests and other runtimes. */
  WebSocket?: new (url: string) => WebSocket;
}

/** The "disconnect" event: the connection to main ended. */
export class DisconnectEvent extends Event {
  readonly type: "disconnect";
  /** Main's Goodbye code (see CloseCode), or null when the link was lost. */
  readonly code: number | null;
  /** Why, in words: main's Goodbye reason or "connection lost (...)". */
  readonly reason: string;
  constructor(code: number | null, reason: string);
}

export interface IpcRendererEventMap {
  disconnect: DisconnectEvent;
}

/** A page's renderer; use the `ipcRenderer` singleton. */
export class IpcRenderer extends EventTarget {
  /** This page's renderer id given by main (`WebContents.id`); 0 while not connected. */
  readonly id: number;
  /** Whether the connection to main is open. */
  readonly connected: boolean;

  on(channel: string, listener: IpcListener): this;
  addListener(channel: string, listener: IpcListener): this;
  once(channel: string, listener: IpcListener): this;
  off(channel: string, listener: IpcListener): this;
  removeListener(channel: string, listener: IpcListener): this;
  removeAllListeners(channel?: string): this;
  listenerCount(channel: string): number;

  /** Fire and forget. Throws (SerializationError, FrameTooLargeError, ConnectionClosedError) and sends nothing if it cannot send. */
  send(channel: string, ...args: any[]): void;
  /** Main's `on(channel)` listeners answer with `event.return_value`. A Promise: a page must not block. */
  sendSync(channel: string, ...args: any[]): Promise<any>;
  /** Call main's `handle(channel)` handler. */
  invoke(channel: string, ...args: any[]): Promise<any>;
  /** `invoke` with a timeout and/or an AbortSignal, either of which cancels main's handler. */
  invokeWith(options: InvokeOptions, channel: string, ...args: any[]): Promise<any>;
  /** What main's async-generator handler yields: `for await (const v of ipcRenderer.stream(ch))`. */
  stream(channel: string, ...args: any[]): IpcStream;
  streamWith(options: StreamOptions, channel: string, ...args: any[]): IpcStream;
  /** Send `message` to main's `on(channel)` listeners; a page cannot transfer ports (`transfer` must be empty). */
  postMessage(channel: string, message: any, transfer?: never[]): void;

  /** Answer main's `contents.invoke(channel, ...)` (and `contents.stream`). */
  handle(channel: string, handler: IpcHandler): void;
  handleOnce(channel: string, handler: IpcHandler): void;
  removeHandler(channel: string): void;

  /** See `connect()`. */
  connect(options?: ConnectOptions): Promise<void>;
  /** Leave: Goodbye to main, close, fire "disconnect". A no-op when not connected. */
  close(): void;

  addEventListener<K extends keyof IpcRendererEventMap>(
    type: K,
    listener: (this: IpcRenderer, event: IpcRendererEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof IpcRendererEventMap>(
    type: K,
    listener: (this: IpcRenderer, event: IpcRendererEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/** The values a stream yields; leaving a `for await` early (break, throw) cancels main's generator. */
export class IpcStream implements AsyncIterableIterator<any> {
  readonly channel: string;
  [Symbol.asyncIterator](): IpcStream;
  next(): Promise<IteratorResult<any, undefined>>;
  return(): Promise<IteratorReturnResult<undefined>>;
}

/** One end of a message channel that main sent (`event.ports`); shaped like the DOM's MessagePort. */
export class IpcMessagePort extends EventTarget {
  /** Send `message` to the other end; a no-op once closed. */
  postMessage(message: any, transfer?: never[]): void;
  /** Start delivering "message" events (those that came before are kept). Setting `onmessage` starts too. */
  start(): void;
  /** Close the channel: "close" here at once, at the other end after what was posted before. */
  close(): void;
  onmessage: ((event: IpcMessageEvent) => void) | null;
  onclose: ((event: Event) => void) | null;
  addEventListener(type: "message", listener: (event: IpcMessageEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "close", listener: (event: Event) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export class IpcMessageEvent extends Event {
  readonly data: any;
  readonly ports: IpcMessagePort[];
}

/** Base class of every error the client raises on purpose. */
export class IpcError extends Error {}

interface RemoteReplyError extends IpcError {
  /** The channel that was called. */
  channel: string;
  /** The remote exception's class name, e.g. "ValueError". */
  remoteType: string;
  /** `str()` of the remote exception. */
  remoteMessage: string;
  /** Main's traceback as text, or null when main does not send tracebacks. */
  remoteTraceback: string | null;
}

/** Main's handler or listener raised: "Error invoking remote method 'add': ValueError: boom". */
export class RemoteError extends IpcError implements RemoteReplyError {
  name: "RemoteError";
  channel: string;
  remoteType: string;
  remoteMessage: string;
  remoteTraceback: string | null;
  constructor(channel: string, remoteType: string, remoteMessage: string, remoteTraceback?: string | null);
}
/** No handler (invoke) or no listener (sendSync) in main: "No handler registered for 'x'". */
export class NoHandlerError extends IpcError implements RemoteReplyError {
  name: "NoHandlerError";
  channel: string;
  remoteType: string;
  remoteMessage: string;
  remoteTraceback: string | null;
}
/** The arguments did not fit the annotations of main's handler; it was not run. */
export class ValidationError extends IpcError implements RemoteReplyError {
  name: "ValidationError";
  channel: string;
  remoteType: string;
  remoteMessage: string;
  remoteTraceback: string | null;
}
/** A value cannot be sent; the message names the channel, the argument and the path inside it. Nothing was sent. */
export class SerializationError extends IpcError {
  name: "SerializationError";
}
/** No reply within the timeout; main's handler was cancelled. */
export class IpcTimeoutError extends IpcError {
  name: "IpcTimeoutError";
}
/** Not connected, or the connection ended before the reply. */
export class ConnectionClosedError extends IpcError {
  name: "ConnectionClosedError";
}
/** Main broke the wire protocol, or speaks another version. */
export class ProtocolError extends IpcError {}
/** A frame over the size limit: ours (nothing was sent) or main's (the connection ends). */
export class FrameTooLargeError extends ProtocolError {
  name: "FrameTooLargeError";
}
/** connect(): main refused the token. */
export class AuthenticationError extends IpcError {
  name: "AuthenticationError";
}

/** The codes of main's Goodbye (`DisconnectEvent.code`). */
export const CloseCode: {
  readonly NORMAL: 0;
  readonly PROTOCOL_ERROR: 1;
  readonly AUTHENTICATION_FAILED: 2;
  readonly VERSION_MISMATCH: 3;
  readonly FRAME_TOO_LARGE: 4;
  readonly SHUTDOWN: 5;
  readonly TOO_MANY_CONNECTIONS: 6;
};

/** The wire protocol version this client speaks. */
export const PROTOCOL_VERSION: 1;
/** 64 MiB: the default frame size limit. */
export const DEFAULT_MAX_FRAME_SIZE: number;

/** The page's renderer (Electron's `ipcRenderer`). */
export const ipcRenderer: IpcRenderer;

/**
 * Connect `ipcRenderer` to main: token from `location.hash` (`#token=...`), URL from
 * `location` (`ws[s]://host:port/ipcbus`), unless given. Resolves once main welcomed
 * the page (main's `on_connect` has run); rejects with AuthenticationError on a wrong
 * token (no retry), ConnectionClosedError if main cannot be reached, IpcTimeoutError
 * after `timeout`. While connecting or connected, returns the same promise.
 */
export function connect(options?: ConnectOptions): Promise<void>;
