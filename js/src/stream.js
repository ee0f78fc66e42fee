// The page's side of ipcRenderer.stream(): what main's async-generator handler
// yields, as an async iterable (docs/ports-and-streams.md, "Streams").
//
// Flow control as the Python client: `window` items are granted with the
// request and granted again, half a window at a time, as the loop takes items
// out, so at most `window` items are ever buffered or in flight and a slow
// loop pauses the generator in main. Leaving the loop early (`break`, a throw,
// `return()`) or aborting the signal sends Cancel and main closes the generator.

import { errorFromReply } from "./errors.js";

/** Items main may run ahead of the loop, by default. */
export const DEFAULT_WINDOW = 32;

/**
 * @typedef {object} StreamSession  what a stream needs from its connection
 * @property {(channel: string, args: unknown[], window: number, sink: any) => number} startStream
 * @property {(id: number, n: number) => void} grant
 * @property {(id: number) => void} abandon
 */

/** @implements {AsyncIterableIterator<unknown>} */
export class IpcStream {
  #session;
  #channel;
  #args;
  #window;
  #signal;
  #id = 0;
  #started = false;
  #finished = false;
  #taken = 0;
  /** @type {unknown[]} */
  #items = [];
  /** @type {{ok: boolean, value: unknown} | null} */
  #reply = null;
  /** @type {unknown} */
  #error = undefined;
  #failed = false;
  /** @type {(() => void)[]} */
  #waiting = [];

  /**
   * @param {() => StreamSession} openSession  the open session, or throws
   * @param {string} channel @param {unknown[]} args
   * @param {{window?: number, signal?: AbortSignal}} options
   */
  constructor(openSession, channel, args, { window = DEFAULT_WINDOW, signal } = {}) {
    if (!Number.isInteger(window) || window < 1) {
      throw new RangeError(`window must be a positive integer, not ${window}`);
    }
    this.#session = openSession;
    this.#channel = channel;
    this.#args = args;
    this.#window = window;
    this.#signal = signal;
  }

  /** The channel this stream reads. */
  get channel() {
    return this.#channel;
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** @returns {Promise<IteratorResult<unknown, undefined>>} */
  async next() {
    if (!this.#started) {
      if (this.#finished) return { done: true, value: undefined };
      this.#start();
    }
    for (;;) {
      if (this.#items.length > 0) {
        const value = this.#items.shift();
        this.#tookOne();
        return { done: false, value };
      }
      if (this.#failed) {
        this.#finished = true;
        throw this.#error;
      }
      if (this.#reply !== null) {
        this.#finished = true;
        if (this.#reply.ok) return { done: true, value: undefined };
        throw errorFromReply(this.#channel, this.#reply.value);
      }
      if (this.#finished) return { done: true, value: undefined };
      await new Promise((resolve) => this.#waiting.push(() => resolve(undefined)));
    }
  }

  /** Stop early: main is told and closes its generator. Called by `break`. */
  async return() {
    this.#stop();
    return { done: /** @type {const} */ (true), value: undefined };
  }

  #start() {
    this.#started = true;
    const signal = this.#signal;
    if (signal?.aborted) {
      this.#finished = true;
      throw signal.reason;
    }
    const session = this.#session();
    const sink = {
      item: (/** @type {unknown} */ value) => {
        this.#items.push(value);
        this.#wake();
      },
      settle: (/** @type {boolean} */ ok, /** @type {unknown} */ value) => {
        this.#reply = { ok, value };
        this.#cleanup();
        this.#wake();
      },
      fail: (/** @type {Error} */ error) => this.#fail(error),
    };
    try {
      this.#id = session.startStream(this.#channel, this.#args, this.#window, sink);
    } catch (error) {
      this.#finished = true;
      throw error;
    }
    this.#session = () => session;
    signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  #onAbort = () => {
    if (this.#finished || this.#reply !== null || this.#failed) return;
    this.#session().abandon(this.#id);
    this.#fail(/** @type {AbortSignal} */ (this.#signal).reason);
  };

  #tookOne() {
    this.#taken++;
    if (this.#reply === null && !this.#failed && this.#taken >= Math.max(1, this.#window >> 1)) {
      this.#session().grant(this.#id, this.#taken);
      this.#taken = 0;
    }
  }

  /** @param {unknown} error */
  #fail(error) {
    this.#error = error;
    this.#failed = true;
    this.#cleanup();
    this.#wake();
  }

  #stop() {
    if (this.#finished) return;
    this.#finished = true;
    this.#items = [];
    if (this.#started && this.#reply === null && !this.#failed) this.#session().abandon(this.#id);
    this.#cleanup();
    this.#wake();
  }

  #cleanup() {
    this.#signal?.removeEventListener("abort", this.#onAbort);
  }

  #wake() {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const wake of waiting) wake();
  }
}
