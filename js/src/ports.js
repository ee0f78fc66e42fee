// Message ports main sends to a page (event.ports): one end each, shaped like
// the DOM's MessagePort (postMessage, start, close, onmessage, "message" and
// "close" events). Main routes the other end (docs/ports-and-streams.md).
// As the DOM's, a port that is started and open is kept alive by its
// connection; any other port lives as long as the page refers to it, and one
// that is garbage-collected closes its channel (session.js, #collected).

/** The event a port's "message" listeners get: `data` and `ports`. */
export class IpcMessageEvent extends Event {
  /** @param {unknown} data @param {IpcMessagePort[]} ports */
  constructor(data, ports) {
    super("message");
    this.data = data;
    this.ports = ports;
  }
}

/**
 * @typedef {object} PortLink  what a port needs from its connection
 * @property {(id: number, data: unknown) => void} post
 * @property {(id: number) => void} close
 * @property {(port: IpcMessagePort, kept: boolean) => void} keep  started and open: keep it alive
 */

export class IpcMessagePort extends EventTarget {
  #id;
  #link;
  #started = false;
  #closed = false;
  /** @type {Event[]} */
  #queue = [];
  /** @type {((event: IpcMessageEvent) => void) | null} */
  #onmessage = null;
  /** @type {((event: Event) => void) | null} */
  #onclose = null;

  /** @param {number} id @param {PortLink} link */
  constructor(id, link) {
    super();
    this.#id = id;
    this.#link = link;
  }

  /**
   * Send `message` to the other end. A no-op once closed. Transferring ports
   * from a page is not supported: `transfer` must be empty.
   * @param {unknown} message
   * @param {unknown[]} [transfer]
   */
  postMessage(message, transfer = []) {
    if (transfer.length > 0) {
      throw new TypeError("ipcbus: a page cannot transfer message ports (transfer must be empty)");
    }
    if (!this.#closed) this.#link.post(this.#id, message);
  }

  /** Deliver messages (those that came before are kept). Setting `onmessage` starts too. */
  start() {
    if (this.#started) return;
    this.#started = true;
    if (!this.#closed) this.#link.keep(this, true);
    const queue = this.#queue;
    this.#queue = [];
    for (const event of queue) this.dispatchEvent(event);
  }

  /** Close the channel: this end emits "close" now, the other end after what was posted before. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#link.keep(this, false);
    this.#link.close(this.#id);
    this.dispatchEvent(new Event("close"));
  }

  get onmessage() {
    return this.#onmessage;
  }

  set onmessage(fn) {
    if (this.#onmessage) this.removeEventListener("message", /** @type {any} */ (this.#onmessage));
    this.#onmessage = fn;
    if (fn) {
      this.addEventListener("message", /** @type {any} */ (fn));
      this.start();
    }
  }

  get onclose() {
    return this.#onclose;
  }

  set onclose(fn) {
    if (this.#onclose) this.removeEventListener("close", this.#onclose);
    this.#onclose = fn;
    if (fn) this.addEventListener("close", fn);
  }

  /** @internal a message from the other end */
  _deliver(/** @type {unknown} */ data, /** @type {IpcMessagePort[]} */ ports) {
    if (!this.#closed) this.#emit(new IpcMessageEvent(data, ports));
  }

  /** @internal the other end closed, or the connection ended */
  _closed() {
    if (this.#closed) return;
    this.#closed = true;
    this.#link.keep(this, false);
    this.#emit(new Event("close"));
  }

  /** @param {Event} event */
  #emit(event) {
    if (this.#started) this.dispatchEvent(event);
    else this.#queue.push(event);
  }
}
