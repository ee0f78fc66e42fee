// A fake WebSocket whose other end plays main with real msgpack frames.
// Frames the client sends are decoded with @msgpack/msgpack as it is (bigints
// for every 64-bit int), so tests see exactly what went on the wire.

import { decode, encode } from "@msgpack/msgpack";
import { IpcRenderer } from "../src/renderer.js";

export const hex = (/** @type {string} */ text) => Uint8Array.from(Buffer.from(text, "hex"));
export const toHex = (/** @type {Uint8Array} */ bytes) => Buffer.from(bytes).toString("hex");

/** Main's side of one connection. */
export class FakeMain {
  /** @type {FakeSocket | null} */
  socket = null;
  /** @type {Uint8Array[]} raw frames the client sent */
  raw = [];
  #frames = [];
  #waiters = [];
  closedByClient = false;

  constructor() {
    const main = this;
    this.WebSocket = class FakeSocket {
      binaryType = "blob";
      readyState = 0;
      onopen = null;
      onmessage = null;
      onclose = null;
      onerror = null;
      constructor(url) {
        this.url = url;
        main.socket = this;
        setImmediate(() => {
          if (this.readyState !== 0) return;
          this.readyState = 1;
          this.onopen?.({ type: "open" });
        });
      }
      send(data) {
        if (this.readyState !== 1) throw new Error(`send in readyState ${this.readyState}`);
        main.#received(new Uint8Array(data));
      }
      close(code = 1005, reason = "") {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        main.closedByClient = true;
        setImmediate(() => this.onclose?.({ type: "close", code, reason }));
      }
    };
  }

  #received(bytes) {
    this.raw.push(bytes);
    const frame = decode(bytes, { useBigInt64: true });
    const waiter = this.#waiters.shift();
    if (waiter) waiter(frame);
    else this.#frames.push(frame);
  }

  /** The next frame the client sends (decoded). */
  next() {
    if (this.#frames.length > 0) return Promise.resolve(this.#frames.shift());
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Frames sent but not yet taken with next(). */
  get pending() {
    return this.#frames.length;
  }

  /** Send one frame body (an array, or raw bytes) to the client. */
  push(body) {
    const bytes = body instanceof Uint8Array ? body : encode(body, { useBigInt64: true });
    const copy = bytes.slice().buffer;
    this.socket.onmessage?.({ type: "message", data: copy });
  }

  /** The link drops (the server went away). */
  drop(code = 1006) {
    this.socket.readyState = 3;
    this.socket.onclose?.({ type: "close", code, reason: "" });
  }
}

/**
 * A fresh IpcRenderer connected to a FakeMain (renderer id 1 unless given).
 * @returns {Promise<{ipc: IpcRenderer, main: FakeMain}>}
 */
export async function connected({ id = 1, maxFrameSize = 0, setup } = {}) {
  const ipc = new IpcRenderer();
  const main = new FakeMain();
  setup?.(ipc);
  const done = ipc.connect({ url: "ws://127.0.0.1:1/ipcbus", token: "s3cret", WebSocket: main.WebSocket });
  const hello = await main.next();
  if (hello[0] !== 1) throw new Error(`expected Hello, got ${hello}`);
  main.push([2, 1, id, maxFrameSize]);
  await done;
  return { ipc, main };
}

/** A promise and its resolve, for events. */
export function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}
