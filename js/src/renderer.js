// The page API (SPEC section 10): the `ipcRenderer` singleton with Electron's
// names, and connect(). Listeners and handlers belong to ipcRenderer and stay
// registered across connections; each connect() opens a new Session.

import { ConnectionClosedError, IpcError, pyRepr } from "./errors.js";
import { Session } from "./session.js";
import { IpcStream } from "./stream.js";
import { DEFAULT_MAX_FRAME_SIZE, INVOKE, SYNC } from "./wire.js";

/** @typedef {(event: IpcRendererEvent, ...args: any[]) => void} Listener */
/** @typedef {(event: IpcRendererInvokeEvent, ...args: any[]) => unknown} Handler */

/**
 * @typedef {object} IpcRendererEvent
 * @property {IpcRenderer} sender
 * @property {number} senderId  always 0: main
 * @property {import("./ports.js").IpcMessagePort[]} ports
 * @property {string} channel
 */

/**
 * @typedef {IpcRendererEvent & {signal: AbortSignal}} IpcRendererInvokeEvent
 */

/** The "disconnect" event: the connection to main ended. */
export class DisconnectEvent extends Event {
  /**
   * @param {number | null} code  main's Goodbye code, or null when the link was lost
   * @param {string} reason
   */
  constructor(code, reason) {
    super("disconnect");
    this.code = code;
    this.reason = reason;
  }
}

/** @param {unknown} channel */
function checkChannel(channel) {
  if (typeof channel !== "string") {
    throw new TypeError(`channel must be a string, not ${channel === null ? "null" : typeof channel}`);
  }
  if (channel === "") throw new TypeError("channel must be a non-empty string");
}

/** @param {unknown} fn @param {string} what */
function checkFunction(fn, what) {
  if (typeof fn !== "function") throw new TypeError(`${what} must be a function, not ${typeof fn}`);
}

const report = (/** @type {unknown} */ error) => {
  const reportError = /** @type {any} */ (globalThis).reportError;
  if (typeof reportError === "function") reportError(error);
  else console.error("ipcbus: a listener threw", error);
};

export class IpcRenderer extends EventTarget {
  /** @type {Map<string, {fn: Listener, once: boolean}[]>} */
  #listeners = new Map();
  /** @type {Map<string, {fn: Handler, once: boolean}>} */
  #handlers = new Map();
  /** @type {Session | null} */
  #session = null;
  /** @type {Promise<void> | null} */
  #connecting = null;

  /** What a Session calls back. */
  #host = {
    deliver: (/** @type {string} */ channel, /** @type {unknown[]} */ args, /** @type {any[]} */ ports) =>
      this.#deliver(channel, args, ports),
    takeHandler: (/** @type {string} */ channel) => {
      const entry = this.#handlers.get(channel);
      if (entry?.once) this.#handlers.delete(channel);
      return entry?.fn;
    },
    invokeEvent: (/** @type {string} */ channel, /** @type {AbortSignal} */ signal) => ({
      sender: this,
      senderId: 0,
      ports: [],
      channel,
      signal,
    }),
    closed: (/** @type {Session} */ session, /** @type {number | null} */ code, /** @type {string} */ reason) => {
      if (session === this.#session) this.#connecting = null;
      this.dispatchEvent(new DisconnectEvent(code, reason));
    },
  };

  /** This page's renderer id, given by main (`WebContents.id`); 0 until connected. */
  get id() {
    return this.#session?.state === "open" ? this.#session.id : 0;
  }

  /** Whether the connection to main is open. */
  get connected() {
    return this.#session?.state === "open";
  }

  // ---- listeners (Electron's EventEmitter names) ------------------------------

  /** @param {string} channel @param {Listener} listener */
  on(channel, listener) {
    return this.#add(channel, listener, false);
  }

  /** @param {string} channel @param {Listener} listener */
  addListener(channel, listener) {
    return this.#add(channel, listener, false);
  }

  /** @param {string} channel @param {Listener} listener */
  once(channel, listener) {
    return this.#add(channel, listener, true);
  }

  /** Remove the most recently added `listener` on `channel`. @param {string} channel @param {Listener} listener */
  off(channel, listener) {
    const entries = this.#listeners.get(channel);
    if (entries !== undefined) {
      for (let i = entries.length - 1; i >= 0; i--) {
        if (entries[i].fn === listener) {
          entries.splice(i, 1);
          break;
        }
      }
      if (entries.length === 0) this.#listeners.delete(channel);
    }
    return this;
  }

  /** @param {string} channel @param {Listener} listener */
  removeListener(channel, listener) {
    return this.off(channel, listener);
  }

  /** All listeners on `channel`, or on every channel. @param {string} [channel] */
  removeAllListeners(channel) {
    if (channel === undefined) this.#listeners.clear();
    else this.#listeners.delete(channel);
    return this;
  }

  /** @param {string} channel */
  listenerCount(channel) {
    return this.#listeners.get(channel)?.length ?? 0;
  }

  /** @param {string} channel @param {Listener} listener @param {boolean} once */
  #add(channel, listener, once) {
    checkChannel(channel);
    checkFunction(listener, "listener");
    const entries = this.#listeners.get(channel);
    if (entries === undefined) this.#listeners.set(channel, [{ fn: listener, once }]);
    else entries.push({ fn: listener, once });
    return this;
  }

  /** @param {string} channel @param {unknown[]} args @param {any[]} ports @returns {boolean} */
  #deliver(channel, args, ports) {
    const entries = this.#listeners.get(channel);
    if (entries === undefined) return false;
    const event = { sender: this, senderId: 0, ports, channel };
    for (const entry of [...entries]) {
      if (entry.once) this.off(channel, entry.fn);
      try {
        const result = /** @type {any} */ (entry.fn(event, ...args));
        if (typeof result?.then === "function") result.then(undefined, report);
      } catch (error) {
        report(error);
      }
    }
    return true;
  }

  // ---- handlers (answer main's contents.invoke) ---------------------------------

  /** @param {string} channel @param {Handler} handler */
  handle(channel, handler) {
    this.#setHandler(channel, handler, false);
  }

  /** @param {string} channel @param {Handler} handler */
  handleOnce(channel, handler) {
    this.#setHandler(channel, handler, true);
  }

  /** @param {string} channel */
  removeHandler(channel) {
    this.#handlers.delete(channel);
  }

  /** @param {string} channel @param {Handler} handler @param {boolean} once */
  #setHandler(channel, handler, once) {
    checkChannel(channel);
    checkFunction(handler, "handler");
    if (this.#handlers.has(channel)) {
      throw new IpcError(`Attempted to register a second handler for ${pyRepr(channel)}`);
    }
    this.#handlers.set(channel, { fn: handler, once });
  }

  // ---- calls to main -------------------------------------------------------------

  /** Fire and forget; throws at once if `args` cannot be sent or not connected. @param {string} channel @param {...unknown} args */
  send(channel, ...args) {
    checkChannel(channel);
    this.#open("send", channel).message("send", channel, args);
  }

  /** Main's `on(channel)` listeners answer with `event.return_value`. @param {string} channel @param {...unknown} args */
  async sendSync(channel, ...args) {
    checkChannel(channel);
    return this.#open("sendSync", channel).request(SYNC, "send_sync", channel, args);
  }

  /** Call main's `handle(channel)` handler. @param {string} channel @param {...unknown} args */
  async invoke(channel, ...args) {
    checkChannel(channel);
    return this.#open("invoke", channel).request(INVOKE, "invoke", channel, args);
  }

  /**
   * invoke() with a timeout (ms) and/or an AbortSignal; either sends Cancel,
   * which cancels the handler in main.
   * @param {{timeout?: number, signal?: AbortSignal}} options
   * @param {string} channel @param {...unknown} args
   */
  async invokeWith(options, channel, ...args) {
    const { timeout, signal } = options ?? {};
    if (timeout !== undefined && !(typeof timeout === "number" && timeout >= 0 && Number.isFinite(timeout))) {
      throw new RangeError(`timeout must be a number of milliseconds >= 0, not ${timeout}`);
    }
    checkChannel(channel);
    return this.#open("invoke", channel).request(INVOKE, "invoke", channel, args, { timeout, signal });
  }

  /**
   * Iterate what main's async-generator handler yields: `for await (const v of ipcRenderer.stream(ch))`.
   * @param {string} channel @param {...unknown} args
   */
  stream(channel, ...args) {
    return this.streamWith({}, channel, ...args);
  }

  /**
   * stream() with a window (items in flight, default 32) and/or an AbortSignal.
   * @param {{window?: number, signal?: AbortSignal}} options
   * @param {string} channel @param {...unknown} args
   */
  streamWith(options, channel, ...args) {
    checkChannel(channel);
    return new IpcStream(() => this.#open("stream", channel), channel, args, options ?? {});
  }

  /**
   * Send `message` to main's `on(channel)` listeners (`event.ports` is empty:
   * a page cannot transfer ports). @param {string} channel @param {unknown} message @param {unknown[]} [transfer]
   */
  postMessage(channel, message, transfer = []) {
    checkChannel(channel);
    if (transfer.length > 0) {
      throw new TypeError("ipcbus: a page cannot transfer message ports (transfer must be empty)");
    }
    this.#open("postMessage", channel).message("post a message", channel, [message]);
  }

  // ---- connection -------------------------------------------------------------------

  /**
   * Open the connection (see `connect`). While connecting or connected, returns
   * the same promise. @param {ConnectOptions} [options]
   */
  connect(options = {}) {
    if (this.#connecting !== null && this.#session?.state !== "closed") return this.#connecting;
    let url, token;
    try {
      url = options.url ?? defaultUrl();
      token = options.token ?? tokenFromHash();
    } catch (error) {
      return Promise.reject(error);
    }
    const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketImpl !== "function") {
      return Promise.reject(new TypeError("no WebSocket here: pass connect({ WebSocket })"));
    }
    const session = new Session(this.#host, new WebSocketImpl(url), {
      url,
      token,
      maxFrameSize: options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
      timeout: options.timeout ?? 10_000,
    });
    this.#session = session;
    this.#connecting = session.ready.catch((error) => {
      if (this.#session === session) this.#connecting = null;
      throw error;
    });
    return this.#connecting;
  }

  /** Leave: send Goodbye to main and close. Fires "disconnect". A no-op when not connected. */
  close() {
    this.#session?.close();
  }

  /** The open session, or throw ConnectionClosedError. @param {string} what @param {string} channel */
  #open(what, channel) {
    const session = this.#session;
    if (session?.state === "open") return session;
    if (session === null || session.state === "handshake") {
      throw new ConnectionClosedError(`Cannot ${what} on ${pyRepr(channel)}: not connected; await connect() first`);
    }
    throw new ConnectionClosedError(
      `Cannot ${what} on ${pyRepr(channel)}: the connection to main is closed (${session.closeReason})`,
    );
  }
}

/**
 * @typedef {object} ConnectOptions
 * @property {string} [url]  the WebSocket URL; default ws[s]://<this page's host>/ipcbus
 * @property {string} [token]  default: `token` in location.hash (#token=...)
 * @property {number} [timeout]  ms to wait for main's answer (default 10000; 0: no limit)
 * @property {number} [maxFrameSize]  largest frame accepted from main (default 64 MiB)
 * @property {new (url: string) => WebSocket} [WebSocket]  the WebSocket class (tests, node)
 */

function defaultUrl() {
  const location = globalThis.location;
  if (location === undefined) throw new TypeError("no location here: pass connect({ url })");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ipcbus`;
}

function tokenFromHash() {
  const hash = globalThis.location?.hash ?? "";
  const token = new URLSearchParams(hash.replace(/^#/, "")).get("token");
  if (token === null) {
    throw new TypeError("no token: open the page with the URL main printed (#token=...) or pass connect({ token })");
  }
  return token;
}

/** The page's renderer: Electron's `ipcRenderer`. */
export const ipcRenderer = new IpcRenderer();

/**
 * Connect `ipcRenderer` to main. Resolves once main has welcomed the page;
 * rejects with AuthenticationError on a wrong token (no retry).
 * @param {ConnectOptions} [options]
 */
export function connect(options) {
  return ipcRenderer.connect(options);
}
