// One WebSocket connection to main: handshake, frames in and out, the calls
// this page is waiting for and the requests it is serving (docs/protocol.md).
// The page API (renderer.js) owns listeners and handlers and outlives sessions.

import {
  AuthenticationError,
  ConnectionClosedError,
  FrameTooLargeError,
  IpcTimeoutError,
  ProtocolError,
  errorFromReply,
  pyRepr,
} from "./errors.js";
import { IpcMessagePort } from "./ports.js";
import { checkArgs, checkValue, decodeBody, encodeBody } from "./values.js";
import * as W from "./wire.js";

const { CloseCode } = W;

/** A broken protocol rule: ends the connection with Goodbye(PROTOCOL_ERROR). */
class Violation extends Error {}

/** @param {boolean} ok @param {string} what */
function need(ok, what) {
  if (!ok) throw new Violation(what);
}

const isInt = Number.isInteger;

/**
 * @typedef {object} Host  what a session needs from the page API
 * @property {(channel: string, args: unknown[], ports: IpcMessagePort[]) => boolean} deliver
 * @property {(channel: string) => ((event: any, ...args: unknown[]) => unknown) | undefined} takeHandler
 * @property {(channel: string, signal: AbortSignal) => object} invokeEvent
 * @property {(session: Session, code: number | null, reason: string) => void} closed
 */

/**
 * @typedef {object} Call  a request of ours awaiting its Reply
 * @property {string} channel
 * @property {(ok: boolean, value: unknown) => void} settle
 * @property {(error: Error) => void} fail
 * @property {((value: unknown) => void)} [item]  streams only
 * @property {number} [credit]  streams only: items main may still send
 */

/**
 * @typedef {object} Served  a request of main's this page is serving
 * @property {AbortController} controller
 * @property {{credit: number, wake: (() => void) | null, iterator: any} | null} stream
 */

export class Session {
  /** @type {"handshake" | "open" | "closed"} */
  state = "handshake";
  id = 0;
  /** @type {number | null} */
  closeCode = null;
  closeReason = "";
  /** Resolves on Welcome; rejects if main refuses or the link fails first. */
  ready;

  #host;
  #socket;
  #url;
  #maxFrameSize;
  #peerMaxFrameSize = W.DEFAULT_MAX_FRAME_SIZE;
  #nextRequestId = 1;
  #lastPeerRequestId = 0;
  /** @type {Map<number, Call>} */
  #calls = new Map();
  /** @type {Set<number>} ids we sent Cancel for; their one Reply is dropped */
  #cancelled = new Set();
  /** @type {Map<number, Served>} */
  #serving = new Map();
  /** Ports main sent us, held weakly: one the page lets go of closes (#collected). @type {Map<number, WeakRef<IpcMessagePort>>} */
  #ports = new Map();
  /** Started, open ports: they could still receive, so they are kept. @type {Set<IpcMessagePort>} */
  #kept = new Set();
  #gone = new FinalizationRegistry((/** @type {number} */ id) => this.#collected(id));
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #handshakeTimer;
  /** @type {(value: void) => void} */
  #resolveReady = () => {};
  /** @type {(error: Error) => void} */
  #rejectReady = () => {};
  #portLink;

  /**
   * @param {Host} host
   * @param {WebSocket} socket  a new WebSocket (any object with the same shape)
   * @param {{url: string, token: string, maxFrameSize: number, timeout: number}} options
   */
  constructor(host, socket, { url, token, maxFrameSize, timeout }) {
    this.#host = host;
    this.#socket = socket;
    this.#url = url;
    this.#maxFrameSize = maxFrameSize;
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.#portLink = {
      post: (/** @type {number} */ id, /** @type {unknown} */ data) => {
        checkValue("post a message", `port ${id}`, data, "the message");
        if (this.state === "open") this.#send(this.#encode([W.PORT_MESSAGE, id, data], "post a message", `port ${id}`));
      },
      close: (/** @type {number} */ id) => {
        if (this.#ports.delete(id) && this.state === "open") this.#write([W.PORT_CLOSE, id]);
      },
      keep: (/** @type {IpcMessagePort} */ port, /** @type {boolean} */ kept) => {
        if (kept) this.#kept.add(port);
        else this.#kept.delete(port);
      },
    };
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      if (this.state === "handshake") this.#write([W.HELLO, W.PROTOCOL_VERSION, token, 0, maxFrameSize]);
    };
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onerror = () => {}; // a close event follows and says it
    socket.onclose = (event) => {
      const detail = event.reason ? `${event.code}: ${event.reason}` : `${event.code}`;
      this.#terminate(null, `connection lost (WebSocket closed with code ${detail})`, false);
    };
    if (timeout > 0) {
      this.#handshakeTimer = setTimeout(() => {
        const reason = `no answer to the handshake from ${url} within ${timeout} ms`;
        this.#terminate(null, reason, false, new IpcTimeoutError(reason));
      }, timeout);
    }
  }

  // ---- calls from the page -------------------------------------------------

  /**
   * Send a Message (send, postMessage).
   * @param {string} what @param {string} channel @param {unknown[]} args
   */
  message(what, channel, args) {
    if (what === "post a message") checkValue(what, channel, args[0], "the message");
    else checkArgs(what, channel, args);
    this.#send(this.#encode([W.MESSAGE, channel, args], what, channel));
  }

  /**
   * Make a request (invoke, sendSync) and wait for its Reply.
   * @param {number} kind @param {string} what @param {string} channel @param {unknown[]} args
   * @param {{timeout?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<unknown>}
   */
  request(kind, what, channel, args, { timeout, signal } = {}) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) throw signal.reason;
      checkArgs(what, channel, args);
      const id = this.#nextRequestId;
      const bytes = this.#encode([W.REQUEST, id, kind, channel, args], what, channel);
      this.#nextRequestId++;
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const onAbort = () => giveUp(signal?.reason);
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      /** @param {unknown} error */
      const giveUp = (error) => {
        if (!this.#calls.delete(id)) return;
        done();
        this.#cancel(id);
        reject(error);
      };
      this.#calls.set(id, {
        channel,
        settle: (ok, value) => {
          done();
          if (ok) resolve(value);
          else reject(errorFromReply(channel, value));
        },
        fail: (error) => {
          done();
          reject(error);
        },
      });
      this.#send(bytes);
      if (timeout !== undefined) {
        timer = setTimeout(
          () => giveUp(new IpcTimeoutError(`${what} ${pyRepr(channel)}: no reply within ${timeout} ms`)),
          timeout,
        );
      }
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Start a stream request: Request(STREAM) and the first credit.
   * @param {string} channel @param {unknown[]} args @param {number} window
   * @param {{item: (value: unknown) => void, settle: (ok: boolean, value: unknown) => void, fail: (error: Error) => void}} sink
   * @returns {number} the request id
   */
  startStream(channel, args, window, sink) {
    checkArgs("stream", channel, args);
    const id = this.#nextRequestId;
    const bytes = this.#encode([W.REQUEST, id, W.STREAM, channel, args], "stream", channel);
    this.#nextRequestId++;
    this.#calls.set(id, { channel, credit: window, ...sink });
    this.#send(bytes);
    this.#write([W.STREAM_CREDIT, id, window]);
    return id;
  }

  /** Let main send `n` more items of stream `id`. @param {number} id @param {number} n */
  grant(id, n) {
    const call = this.#calls.get(id);
    if (call === undefined || this.state !== "open") return;
    call.credit = (call.credit ?? 0) + n;
    this.#write([W.STREAM_CREDIT, id, n]);
  }

  /** Give up on request `id` (a stream left early). @param {number} id */
  abandon(id) {
    if (this.#calls.delete(id)) this.#cancel(id);
  }

  /** Leave: Goodbye(NORMAL), then close. */
  close() {
    this.#terminate(CloseCode.NORMAL, "the renderer disconnected", true);
  }

  // ---- frames in ------------------------------------------------------------

  /** @param {unknown} data */
  #receive(data) {
    if (this.state === "closed") return;
    try {
      need(data instanceof ArrayBuffer, "a text message (ipcbus frames are binary messages)");
      const size = /** @type {ArrayBuffer} */ (data).byteLength;
      if (size > this.#maxFrameSize) {
        const reason = `frame of ${size} bytes exceeds the limit of ${this.#maxFrameSize} bytes`;
        this.#terminate(CloseCode.FRAME_TOO_LARGE, reason, true, new FrameTooLargeError(reason));
        return;
      }
      need(size > 0, "an empty frame");
      /** @type {unknown} */
      let body;
      try {
        body = decodeBody(/** @type {ArrayBuffer} */ (data));
      } catch (error) {
        throw new Violation(`a malformed frame (${/** @type {Error} */ (error).message})`);
      }
      need(Array.isArray(body) && isInt(body[0]), "a frame that is not an array with a tag first");
      if (this.state === "handshake") this.#handshake(/** @type {unknown[]} */ (body));
      else this.#dispatch(/** @type {unknown[]} */ (body));
    } catch (error) {
      if (!(error instanceof Violation)) throw error;
      const reason = `protocol error: ${error.message}`;
      this.#terminate(CloseCode.PROTOCOL_ERROR, reason, true, new ProtocolError(reason));
    }
  }

  /** @param {unknown[]} body */
  #handshake(body) {
    const [tag, a, b, c] = body;
    if (tag === W.GOODBYE) {
      need(isInt(a) && typeof b === "string", "a malformed Goodbye");
      this.#terminate(/** @type {number} */ (a), /** @type {string} */ (b), false);
      return;
    }
    need(tag === W.WELCOME, `frame ${tag} before Welcome`);
    need(isInt(a) && isInt(b) && (c === undefined || isInt(c)), "a malformed Welcome");
    if (a !== W.PROTOCOL_VERSION) {
      const reason = `main speaks protocol version ${a}, this client ${W.PROTOCOL_VERSION}`;
      this.#terminate(CloseCode.VERSION_MISMATCH, reason, true, new ProtocolError(reason));
      return;
    }
    clearTimeout(this.#handshakeTimer);
    this.state = "open";
    this.id = /** @type {number} */ (b);
    if (/** @type {number} */ (c) > 0) this.#peerMaxFrameSize = /** @type {number} */ (c);
    this.#resolveReady();
  }

  /** @param {unknown[]} body */
  #dispatch(body) {
    const [tag, a, b, c, d] = body;
    switch (tag) {
      case W.MESSAGE: {
        need(typeof a === "string", "a Message whose channel is not a string");
        const channel = /** @type {string} */ (a);
        const ports = this.#land(c);
        if (!Array.isArray(b)) {
          console.warn(`ipcbus: a message on ${pyRepr(channel)} whose arguments are not an array was dropped`);
          for (const port of ports) port.close();
        } else if (!this.#host.deliver(channel, b, ports)) {
          for (const port of ports) port.close(); // nobody took them: their peers see "close"
        }
        return;
      }
      case W.REQUEST: {
        need(isInt(a) && isInt(b) && typeof c === "string", "a malformed Request");
        const id = /** @type {number} */ (a);
        need(id > this.#lastPeerRequestId, `request id ${id} reused or out of order (last was ${this.#lastPeerRequestId})`);
        need(b === W.INVOKE || b === W.SYNC || b === W.STREAM, `a Request of unknown kind ${b}`);
        this.#lastPeerRequestId = id;
        this.#serve(id, /** @type {number} */ (b), /** @type {string} */ (c), d);
        return;
      }
      case W.REPLY: {
        need(isInt(a) && typeof b === "boolean", "a malformed Reply");
        const id = /** @type {number} */ (a);
        const call = this.#calls.get(id);
        if (call !== undefined) {
          this.#calls.delete(id);
          call.settle(/** @type {boolean} */ (b), c);
        } else {
          need(this.#cancelled.delete(id), `a Reply to request id ${id}, which is not awaited`);
        }
        return;
      }
      case W.CANCEL: {
        need(isInt(a), "a malformed Cancel");
        const id = /** @type {number} */ (a);
        const served = this.#serving.get(id);
        if (served !== undefined) {
          this.#serving.delete(id);
          this.#write([W.REPLY, id, false, W.CANCEL_ACK]);
          this.#stop(served, "main cancelled the request");
        } else {
          need(id <= this.#lastPeerRequestId && id > 0, `a Cancel for request id ${id}, which was never sent`);
        }
        return;
      }
      case W.GOODBYE:
        need(isInt(a) && typeof b === "string", "a malformed Goodbye");
        this.#terminate(/** @type {number} */ (a), /** @type {string} */ (b), false);
        return;
      case W.PING:
        need(isInt(a) || typeof a === "bigint", "a malformed Ping");
        this.#write([W.PONG, a]);
        return;
      case W.PONG:
        return;
      case W.PORT_MESSAGE: {
        need(isInt(a) && /** @type {number} */ (a) > 0, "a PortMessage with a bad port id");
        const id = /** @type {number} */ (a);
        const ref = this.#ports.get(id);
        if (ref === undefined) {
          // closed here already: give it back, main knows what to do with it
          this.#write([W.PORT_MESSAGE, id, b, Array.isArray(c) ? c : [], true]);
          return;
        }
        const port = ref.deref();
        if (port === undefined) {
          // collected: nobody can read this, or the ports it carries; close it now
          // rather than wait for the finalizer, which may come late or never
          for (const carried of this.#land(c)) carried.close();
          this.#collected(id);
          return;
        }
        port._deliver(b, this.#land(c));
        return;
      }
      case W.PORT_CLOSE: {
        need(isInt(a) && /** @type {number} */ (a) > 0, "a PortClose with a bad port id");
        const id = /** @type {number} */ (a);
        const ref = this.#ports.get(id);
        if (ref === undefined) {
          this.#write([W.PORT_CLOSE, id, true]);
          return;
        }
        this.#ports.delete(id);
        this.#write([W.PORT_CLOSE, id]); // acknowledge: main may forget the end
        ref.deref()?._closed();
        return;
      }
      case W.STREAM_ITEM: {
        need(isInt(a), "a malformed StreamItem");
        const id = /** @type {number} */ (a);
        const call = this.#calls.get(id);
        if (call?.item !== undefined) {
          need(/** @type {number} */ (call.credit) > 0, `a StreamItem for request id ${id} beyond the credit granted`);
          call.credit = /** @type {number} */ (call.credit) - 1;
          call.item(b);
        } else {
          need(this.#cancelled.has(id), `a StreamItem for request id ${id}, which is not a stream of ours`);
        }
        return;
      }
      case W.STREAM_CREDIT: {
        need(isInt(a) && isInt(b) && /** @type {number} */ (b) >= 1, "a malformed StreamCredit");
        const id = /** @type {number} */ (a);
        const served = this.#serving.get(id);
        if (served !== undefined) {
          need(served.stream !== null, `a StreamCredit for request id ${id}, which is not a stream`);
          const stream = /** @type {NonNullable<Served["stream"]>} */ (served.stream);
          stream.credit += /** @type {number} */ (b);
          stream.wake?.();
        } else {
          need(id <= this.#lastPeerRequestId && id > 0, `a StreamCredit for request id ${id}, which was never sent`);
        }
        return;
      }
      default:
        throw new Violation(`an unexpected frame (tag ${tag}) while open`);
    }
  }

  /** @param {unknown} refs  a frame's PortRefs @returns {IpcMessagePort[]} */
  #land(refs) {
    if (refs === undefined || refs === null) return [];
    need(Array.isArray(refs), "ports that are not an array");
    return /** @type {unknown[]} */ (refs).map((ref) => {
      const id = Array.isArray(ref) ? ref[0] : undefined;
      need(isInt(id) && id > 0, "a port reference with a bad id");
      const port = new IpcMessagePort(id, this.#portLink);
      this.#ports.set(id, new WeakRef(port));
      this.#gone.register(port, id);
      return port;
    });
  }

  /**
   * A port main sent us was garbage-collected while open (a started one is
   * kept, see #kept): nobody can read it or post on it, so its channel closes
   * and the other end hears "close", as with the DOM's MessagePort.
   * @param {number} id
   */
  #collected(id) {
    const ref = this.#ports.get(id);
    if (ref !== undefined && ref.deref() === undefined) {
      this.#ports.delete(id);
      if (this.state === "open") this.#write([W.PORT_CLOSE, id]);
    }
  }

  // ---- serving main's requests ------------------------------------------------

  /** @param {number} id @param {number} kind @param {string} channel @param {unknown} args */
  #serve(id, kind, channel, args) {
    if (kind === W.SYNC) {
      // main never sends these (no WebContents.send_sync); listeners run, the answer is nil
      if (Array.isArray(args)) this.#host.deliver(channel, args, []);
      this.#write([W.REPLY, id, true, null]);
      return;
    }
    const handler = this.#host.takeHandler(channel);
    if (handler === undefined) {
      const info = [W.NO_HANDLER, "NoHandlerError", `No handler registered for ${pyRepr(channel)}`, null];
      this.#write([W.REPLY, id, false, info]);
      return;
    }
    /** @type {Served} */
    const served = {
      controller: new AbortController(),
      stream: kind === W.STREAM ? { credit: 0, wake: null, iterator: null } : null,
    };
    this.#serving.set(id, served);
    const event = this.#host.invokeEvent(channel, served.controller.signal);
    const run = async () => handler(event, ...(Array.isArray(args) ? args : [args]));
    const result = run();
    if (kind === W.INVOKE) {
      result.then(
        (value) => this.#answer(id, served, channel, value),
        (error) => this.#answerError(id, served, error),
      );
    } else {
      this.#pump(id, served, channel, result).catch((error) => this.#answerError(id, served, error));
    }
  }

  /** @param {number} id @param {Served} served @param {string} channel @param {unknown} value */
  #answer(id, served, channel, value) {
    if (this.#serving.get(id) !== served || this.state !== "open") return; // cancelled: answered already
    let bytes;
    try {
      checkValue("reply", channel, value, "the result");
      bytes = this.#encode([W.REPLY, id, true, value], "reply", channel);
    } catch (error) {
      this.#answerError(id, served, error);
      return;
    }
    this.#serving.delete(id);
    this.#send(bytes);
  }

  /** @param {number} id @param {Served} served @param {unknown} error */
  #answerError(id, served, error) {
    if (this.#serving.get(id) !== served || this.state !== "open") return;
    this.#serving.delete(id);
    const isError = error instanceof Error;
    const type = isError ? error.name : "Error";
    const message = isError ? error.message : String(error);
    const stack = isError && typeof error.stack === "string" ? error.stack : null;
    let bytes = encodeBody([W.REPLY, id, false, [W.REMOTE, type, message, stack]]);
    if (bytes.byteLength > this.#peerMaxFrameSize) {
      bytes = encodeBody([W.REPLY, id, false, [W.REMOTE, type, message.slice(0, 1000), null]]);
    }
    this.#send(bytes);
  }

  /**
   * Serve a STREAM request: send what the handler's (async) iterable yields, as credit allows.
   * @param {number} id @param {Served} served @param {string} channel @param {Promise<unknown>} result
   */
  async #pump(id, served, channel, result) {
    const stream = /** @type {NonNullable<Served["stream"]>} */ (served.stream);
    const iterable = /** @type {any} */ (await result);
    const iterator =
      iterable?.[Symbol.asyncIterator]?.() ??
      iterable?.[Symbol.iterator]?.() ??
      (() => {
        throw new TypeError(`the handler for ${pyRepr(channel)} did not return an iterable`);
      })();
    stream.iterator = iterator;
    if (this.#serving.get(id) !== served) {
      iterator.return?.();
      return;
    }
    for (;;) {
      while (stream.credit <= 0) {
        await new Promise((resolve) => {
          stream.wake = () => resolve(undefined);
        });
        stream.wake = null;
        if (this.#serving.get(id) !== served) return;
      }
      const { value, done } = await iterator.next();
      if (this.#serving.get(id) !== served || this.state !== "open") return;
      if (done) {
        this.#answer(id, served, channel, null);
        return;
      }
      checkValue("stream", channel, value, "a yielded value");
      this.#send(this.#encode([W.STREAM_ITEM, id, value], "stream", channel));
      stream.credit--;
    }
  }

  /** Stop serving: abort the handler's signal, close a stream's iterator. @param {Served} served @param {string} why */
  #stop(served, why) {
    served.controller.abort(new ConnectionClosedError(why));
    if (served.stream !== null) {
      served.stream.wake?.();
      Promise.resolve()
        .then(() => served.stream?.iterator?.return?.())
        .catch(() => {});
    }
  }

  // ---- frames out -------------------------------------------------------------

  /** Encode a frame the page asked for; refuse it over main's limit. @param {unknown[]} body @param {string} what @param {string} channel */
  #encode(body, what, channel) {
    const bytes = encodeBody(body);
    if (bytes.byteLength > this.#peerMaxFrameSize) {
      throw new FrameTooLargeError(
        `Cannot ${what} on channel ${pyRepr(channel)}: frame of ${bytes.byteLength} bytes exceeds ` +
          `the limit of ${this.#peerMaxFrameSize} bytes; nothing was sent and the connection is fine. ` +
          "Raise max_frame_size on main (IpcMain(max_frame_size=...)) to allow it",
      );
    }
    return bytes;
  }

  /** @param {unknown[]} body */
  #write(body) {
    this.#send(encodeBody(body));
  }

  /** @param {Uint8Array} bytes */
  #send(bytes) {
    this.#socket.send(bytes);
  }

  /** @param {number} id */
  #cancel(id) {
    if (this.state !== "open") return;
    this.#cancelled.add(id);
    this.#write([W.CANCEL, id]);
  }

  // ---- the end ------------------------------------------------------------------

  /**
   * Close for good: tell main (if `sendGoodbye`), fail every call, stop every
   * handler, close every port, then tell the page.
   * @param {number | null} code  the Goodbye's code, null for a lost link
   * @param {string} reason
   * @param {boolean} sendGoodbye
   * @param {Error} [error]  what connect() rejects with, if still in the handshake
   */
  #terminate(code, reason, sendGoodbye, error) {
    if (this.state === "closed") return;
    const wasOpen = this.state === "open";
    this.state = "closed";
    this.closeCode = code;
    this.closeReason = reason;
    clearTimeout(this.#handshakeTimer);
    if (sendGoodbye && code !== null) {
      try {
        this.#write([W.GOODBYE, code, reason]);
      } catch {
        // the socket is gone already
      }
    }
    try {
      this.#socket.close(1000);
    } catch {
      // already closing
    }
    const calls = [...this.#calls.values()];
    this.#calls.clear();
    for (const call of calls) {
      call.fail(new ConnectionClosedError(`connection to main closed before ${pyRepr(call.channel)} replied (${reason})`));
    }
    const served = [...this.#serving.values()];
    this.#serving.clear();
    for (const item of served) this.#stop(item, `the connection to main ended (${reason})`);
    const ports = [...this.#ports.values()].map((ref) => ref.deref());
    this.#ports.clear();
    for (const port of ports) port?._closed();
    if (wasOpen) {
      this.#host.closed(this, code, reason);
    } else {
      this.#rejectReady(error ?? refusal(this.#url, code, reason));
    }
  }
}

/** What connect() rejects with when main ends the handshake. @param {string} url @param {number | null} code @param {string} reason */
function refusal(url, code, reason) {
  const text = `main at ${url} refused the connection: ${reason}`;
  if (code === CloseCode.AUTHENTICATION_FAILED) {
    return new AuthenticationError(`${text}. Open the page with the URL main printed (it carries #token=...)`);
  }
  if (code === CloseCode.PROTOCOL_ERROR || code === CloseCode.VERSION_MISMATCH || code === CloseCode.FRAME_TOO_LARGE) {
    return new ProtocolError(text);
  }
  if (code === null) return new ConnectionClosedError(`could not connect to main at ${url}: ${reason}`);
  return new ConnectionClosedError(text);
}
