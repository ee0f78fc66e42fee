// ipcbus.js: ipcbus's browser client, a web page as an ipcbus renderer (SPEC section 10).
// Built by js/build.mjs from js/src (licence: MIT, as ipcbus); do not edit.
// Types: ipcbus.d.ts beside this file.
//
// Bundled npm packages and their licences:
//
// @msgpack/msgpack 3.1.3 (ISC)
//   Copyright 2019 The MessagePack Community.
//
//   Permission to use, copy, modify, and/or distribute this software for any purpose with or without fee is hereby granted, provided that the above copyright notice and this permission notice appear in all copies.
//
//   THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.

var __defProp = Object.defineProperty;
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};

// src/errors.js
var IpcError = class extends Error {
  /** @param {string} message @param {ErrorOptions} [options] */
  constructor(message, options) {
    super(message, options);
  }
};
var RemoteReplyError = class extends IpcError {
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
};
var NoHandlerError = class extends RemoteReplyError {
};
var ValidationError = class extends RemoteReplyError {
};
var RemoteError = class extends RemoteReplyError {
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
      remoteTraceback
    );
  }
};
var SerializationError = class extends IpcError {
};
var IpcTimeoutError = class extends IpcError {
};
var ConnectionClosedError = class extends IpcError {
};
var ProtocolError = class extends IpcError {
};
var FrameTooLargeError = class extends ProtocolError {
};
var AuthenticationError = class extends IpcError {
};
for (
  const [cls, name] of
  /** @type {const} */
  [
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
    [AuthenticationError, "AuthenticationError"]
  ]
) {
  Object.defineProperty(cls.prototype, "name", { value: name, writable: true, configurable: true });
}
var NO_HANDLER = 2;
var VALIDATION = 3;
function errorFromReply(channel, info) {
  if (!Array.isArray(info) || info.length < 3 || !Number.isInteger(info[0]) || typeof info[1] !== "string" || typeof info[2] !== "string" || info[3] != null && typeof info[3] !== "string") {
    return new RemoteError(channel, "ProtocolError", "the error reply could not be decoded");
  }
  const [kind, type, message] = info;
  const traceback = info[3] ?? null;
  if (kind === NO_HANDLER) return new NoHandlerError(message, channel, type, message, traceback);
  if (kind === VALIDATION) return new ValidationError(message, channel, type, message, traceback);
  return new RemoteError(channel, type, message, traceback);
}
function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    if (char === "\\" || char === quote) out += `\\${char}`;
    else if (char === "\n") out += "\\n";
    else if (char === "\r") out += "\\r";
    else if (char === "	") out += "\\t";
    else if (code < 32 || code >= 127 && code < 160) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += char;
  }
  return out + quote;
}

// src/ports.js
var IpcMessageEvent = class extends Event {
  /** @param {unknown} data @param {IpcMessagePort[]} ports */
  constructor(data, ports) {
    super("message");
    this.data = data;
    this.ports = ports;
  }
};
var IpcMessagePort = class extends EventTarget {
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
    if (this.#onmessage) this.removeEventListener(
      "message",
      /** @type {any} */
      this.#onmessage
    );
    this.#onmessage = fn;
    if (fn) {
      this.addEventListener(
        "message",
        /** @type {any} */
        fn
      );
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
  _deliver(data, ports) {
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
};

// node_modules/@msgpack/msgpack/dist.esm/utils/utf8.mjs
function utf8Count(str) {
  const strLength = str.length;
  let byteLength = 0;
  let pos = 0;
  while (pos < strLength) {
    let value = str.charCodeAt(pos++);
    if ((value & 4294967168) === 0) {
      byteLength++;
      continue;
    } else if ((value & 4294965248) === 0) {
      byteLength += 2;
    } else {
      if (value >= 55296 && value <= 56319) {
        if (pos < strLength) {
          const extra = str.charCodeAt(pos);
          if ((extra & 64512) === 56320) {
            ++pos;
            value = ((value & 1023) << 10) + (extra & 1023) + 65536;
          }
        }
      }
      if ((value & 4294901760) === 0) {
        byteLength += 3;
      } else {
        byteLength += 4;
      }
    }
  }
  return byteLength;
}
function utf8EncodeJs(str, output, outputOffset) {
  const strLength = str.length;
  let offset = outputOffset;
  let pos = 0;
  while (pos < strLength) {
    let value = str.charCodeAt(pos++);
    if ((value & 4294967168) === 0) {
      output[offset++] = value;
      continue;
    } else if ((value & 4294965248) === 0) {
      output[offset++] = value >> 6 & 31 | 192;
    } else {
      if (value >= 55296 && value <= 56319) {
        if (pos < strLength) {
          const extra = str.charCodeAt(pos);
          if ((extra & 64512) === 56320) {
            ++pos;
            value = ((value & 1023) << 10) + (extra & 1023) + 65536;
          }
        }
      }
      if ((value & 4294901760) === 0) {
        output[offset++] = value >> 12 & 15 | 224;
        output[offset++] = value >> 6 & 63 | 128;
      } else {
        output[offset++] = value >> 18 & 7 | 240;
        output[offset++] = value >> 12 & 63 | 128;
        output[offset++] = value >> 6 & 63 | 128;
      }
    }
    output[offset++] = value & 63 | 128;
  }
}
var sharedTextEncoder = new TextEncoder();
var TEXT_ENCODER_THRESHOLD = 50;
function utf8EncodeTE(str, output, outputOffset) {
  sharedTextEncoder.encodeInto(str, output.subarray(outputOffset));
}
function utf8Encode(str, output, outputOffset) {
  if (str.length > TEXT_ENCODER_THRESHOLD) {
    utf8EncodeTE(str, output, outputOffset);
  } else {
    utf8EncodeJs(str, output, outputOffset);
  }
}
var CHUNK_SIZE = 4096;
function utf8DecodeJs(bytes, inputOffset, byteLength) {
  let offset = inputOffset;
  const end = offset + byteLength;
  const units = [];
  let result = "";
  while (offset < end) {
    const byte1 = bytes[offset++];
    if ((byte1 & 128) === 0) {
      units.push(byte1);
    } else if ((byte1 & 224) === 192) {
      const byte2 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 6 | byte2);
    } else if ((byte1 & 240) === 224) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 12 | byte2 << 6 | byte3);
    } else if ((byte1 & 248) === 240) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      const byte4 = bytes[offset++] & 63;
      let unit = (byte1 & 7) << 18 | byte2 << 12 | byte3 << 6 | byte4;
      if (unit > 65535) {
        unit -= 65536;
        units.push(unit >>> 10 & 1023 | 55296);
        unit = 56320 | unit & 1023;
      }
      units.push(unit);
    } else {
      units.push(byte1);
    }
    if (units.length >= CHUNK_SIZE) {
      result += String.fromCharCode(...units);
      units.length = 0;
    }
  }
  if (units.length > 0) {
    result += String.fromCharCode(...units);
  }
  return result;
}
var sharedTextDecoder = new TextDecoder();
var TEXT_DECODER_THRESHOLD = 200;
function utf8DecodeTD(bytes, inputOffset, byteLength) {
  const stringBytes = bytes.subarray(inputOffset, inputOffset + byteLength);
  return sharedTextDecoder.decode(stringBytes);
}
function utf8Decode(bytes, inputOffset, byteLength) {
  if (byteLength > TEXT_DECODER_THRESHOLD) {
    return utf8DecodeTD(bytes, inputOffset, byteLength);
  } else {
    return utf8DecodeJs(bytes, inputOffset, byteLength);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/ExtData.mjs
var ExtData = class {
  type;
  data;
  constructor(type, data) {
    this.type = type;
    this.data = data;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/DecodeError.mjs
var DecodeError = class _DecodeError extends Error {
  constructor(message) {
    super(message);
    const proto = Object.create(_DecodeError.prototype);
    Object.setPrototypeOf(this, proto);
    Object.defineProperty(this, "name", {
      configurable: true,
      enumerable: false,
      value: _DecodeError.name
    });
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/int.mjs
var UINT32_MAX = 4294967295;
function setUint64(view, offset, value) {
  const high = value / 4294967296;
  const low = value;
  view.setUint32(offset, high);
  view.setUint32(offset + 4, low);
}
function setInt64(view, offset, value) {
  const high = Math.floor(value / 4294967296);
  const low = value;
  view.setUint32(offset, high);
  view.setUint32(offset + 4, low);
}
function getInt64(view, offset) {
  const high = view.getInt32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}
function getUint64(view, offset) {
  const high = view.getUint32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}

// node_modules/@msgpack/msgpack/dist.esm/timestamp.mjs
var EXT_TIMESTAMP = -1;
var TIMESTAMP32_MAX_SEC = 4294967296 - 1;
var TIMESTAMP64_MAX_SEC = 17179869184 - 1;
function encodeTimeSpecToTimestamp({ sec, nsec }) {
  if (sec >= 0 && nsec >= 0 && sec <= TIMESTAMP64_MAX_SEC) {
    if (nsec === 0 && sec <= TIMESTAMP32_MAX_SEC) {
      const rv = new Uint8Array(4);
      const view = new DataView(rv.buffer);
      view.setUint32(0, sec);
      return rv;
    } else {
      const secHigh = sec / 4294967296;
      const secLow = sec & 4294967295;
      const rv = new Uint8Array(8);
      const view = new DataView(rv.buffer);
      view.setUint32(0, nsec << 2 | secHigh & 3);
      view.setUint32(4, secLow);
      return rv;
    }
  } else {
    const rv = new Uint8Array(12);
    const view = new DataView(rv.buffer);
    view.setUint32(0, nsec);
    setInt64(view, 4, sec);
    return rv;
  }
}
function encodeDateToTimeSpec(date) {
  const msec = date.getTime();
  const sec = Math.floor(msec / 1e3);
  const nsec = (msec - sec * 1e3) * 1e6;
  const nsecInSec = Math.floor(nsec / 1e9);
  return {
    sec: sec + nsecInSec,
    nsec: nsec - nsecInSec * 1e9
  };
}
function encodeTimestampExtension(object) {
  if (object instanceof Date) {
    const timeSpec = encodeDateToTimeSpec(object);
    return encodeTimeSpecToTimestamp(timeSpec);
  } else {
    return null;
  }
}
function decodeTimestampToTimeSpec(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  switch (data.byteLength) {
    case 4: {
      const sec = view.getUint32(0);
      const nsec = 0;
      return { sec, nsec };
    }
    case 8: {
      const nsec30AndSecHigh2 = view.getUint32(0);
      const secLow32 = view.getUint32(4);
      const sec = (nsec30AndSecHigh2 & 3) * 4294967296 + secLow32;
      const nsec = nsec30AndSecHigh2 >>> 2;
      return { sec, nsec };
    }
    case 12: {
      const sec = getInt64(view, 4);
      const nsec = view.getUint32(0);
      return { sec, nsec };
    }
    default:
      throw new DecodeError(`Unrecognized data size for timestamp (expected 4, 8, or 12): ${data.length}`);
  }
}
function decodeTimestampExtension(data) {
  const timeSpec = decodeTimestampToTimeSpec(data);
  return new Date(timeSpec.sec * 1e3 + timeSpec.nsec / 1e6);
}
var timestampExtension = {
  type: EXT_TIMESTAMP,
  encode: encodeTimestampExtension,
  decode: decodeTimestampExtension
};

// node_modules/@msgpack/msgpack/dist.esm/ExtensionCodec.mjs
var ExtensionCodec = class _ExtensionCodec {
  static defaultCodec = new _ExtensionCodec();
  // ensures ExtensionCodecType<X> matches ExtensionCodec<X>
  // this will make type errors a lot more clear
  // eslint-disable-next-line @typescript-eslint/naming-convention
  __brand;
  // built-in extensions
  builtInEncoders = [];
  builtInDecoders = [];
  // custom extensions
  encoders = [];
  decoders = [];
  constructor() {
    this.register(timestampExtension);
  }
  register({ type, encode, decode }) {
    if (type >= 0) {
      this.encoders[type] = encode;
      this.decoders[type] = decode;
    } else {
      const index = -1 - type;
      this.builtInEncoders[index] = encode;
      this.builtInDecoders[index] = decode;
    }
  }
  tryToEncode(object, context) {
    for (let i = 0; i < this.builtInEncoders.length; i++) {
      const encodeExt = this.builtInEncoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = -1 - i;
          return new ExtData(type, data);
        }
      }
    }
    for (let i = 0; i < this.encoders.length; i++) {
      const encodeExt = this.encoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = i;
          return new ExtData(type, data);
        }
      }
    }
    if (object instanceof ExtData) {
      return object;
    }
    return null;
  }
  decode(data, type, context) {
    const decodeExt = type < 0 ? this.builtInDecoders[-1 - type] : this.decoders[type];
    if (decodeExt) {
      return decodeExt(data, type, context);
    } else {
      return new ExtData(type, data);
    }
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/typedArrays.mjs
function isArrayBufferLike(buffer) {
  return buffer instanceof ArrayBuffer || typeof SharedArrayBuffer !== "undefined" && buffer instanceof SharedArrayBuffer;
}
function ensureUint8Array(buffer) {
  if (buffer instanceof Uint8Array) {
    return buffer;
  } else if (ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } else if (isArrayBufferLike(buffer)) {
    return new Uint8Array(buffer);
  } else {
    return Uint8Array.from(buffer);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/Encoder.mjs
var DEFAULT_MAX_DEPTH = 100;
var DEFAULT_INITIAL_BUFFER_SIZE = 2048;
var Encoder = class _Encoder {
  extensionCodec;
  context;
  useBigInt64;
  maxDepth;
  initialBufferSize;
  sortKeys;
  forceFloat32;
  ignoreUndefined;
  forceIntegerToFloat;
  pos;
  view;
  bytes;
  entered = false;
  constructor(options) {
    this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
    this.context = options?.context;
    this.useBigInt64 = options?.useBigInt64 ?? false;
    this.maxDepth = options?.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.initialBufferSize = options?.initialBufferSize ?? DEFAULT_INITIAL_BUFFER_SIZE;
    this.sortKeys = options?.sortKeys ?? false;
    this.forceFloat32 = options?.forceFloat32 ?? false;
    this.ignoreUndefined = options?.ignoreUndefined ?? false;
    this.forceIntegerToFloat = options?.forceIntegerToFloat ?? false;
    this.pos = 0;
    this.view = new DataView(new ArrayBuffer(this.initialBufferSize));
    this.bytes = new Uint8Array(this.view.buffer);
  }
  clone() {
    return new _Encoder({
      extensionCodec: this.extensionCodec,
      context: this.context,
      useBigInt64: this.useBigInt64,
      maxDepth: this.maxDepth,
      initialBufferSize: this.initialBufferSize,
      sortKeys: this.sortKeys,
      forceFloat32: this.forceFloat32,
      ignoreUndefined: this.ignoreUndefined,
      forceIntegerToFloat: this.forceIntegerToFloat
    });
  }
  reinitializeState() {
    this.pos = 0;
  }
  /**
   * This is almost equivalent to {@link Encoder#encode}, but it returns an reference of the encoder's internal buffer and thus much faster than {@link Encoder#encode}.
   *
   * @returns Encodes the object and returns a shared reference the encoder's internal buffer.
   */
  encodeSharedRef(object) {
    if (this.entered) {
      const instance = this.clone();
      return instance.encodeSharedRef(object);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.doEncode(object, 1);
      return this.bytes.subarray(0, this.pos);
    } finally {
      this.entered = false;
    }
  }
  /**
   * @returns Encodes the object and returns a copy of the encoder's internal buffer.
   */
  encode(object) {
    if (this.entered) {
      const instance = this.clone();
      return instance.encode(object);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.doEncode(object, 1);
      return this.bytes.slice(0, this.pos);
    } finally {
      this.entered = false;
    }
  }
  doEncode(object, depth) {
    if (depth > this.maxDepth) {
      throw new Error(`Too deep objects in depth ${depth}`);
    }
    if (object == null) {
      this.encodeNil();
    } else if (typeof object === "boolean") {
      this.encodeBoolean(object);
    } else if (typeof object === "number") {
      if (!this.forceIntegerToFloat) {
        this.encodeNumber(object);
      } else {
        this.encodeNumberAsFloat(object);
      }
    } else if (typeof object === "string") {
      this.encodeString(object);
    } else if (this.useBigInt64 && typeof object === "bigint") {
      this.encodeBigInt64(object);
    } else {
      this.encodeObject(object, depth);
    }
  }
  ensureBufferSizeToWrite(sizeToWrite) {
    const requiredSize = this.pos + sizeToWrite;
    if (this.view.byteLength < requiredSize) {
      this.resizeBuffer(requiredSize * 2);
    }
  }
  resizeBuffer(newSize) {
    const newBuffer = new ArrayBuffer(newSize);
    const newBytes = new Uint8Array(newBuffer);
    const newView = new DataView(newBuffer);
    newBytes.set(this.bytes);
    this.view = newView;
    this.bytes = newBytes;
  }
  encodeNil() {
    this.writeU8(192);
  }
  encodeBoolean(object) {
    if (object === false) {
      this.writeU8(194);
    } else {
      this.writeU8(195);
    }
  }
  encodeNumber(object) {
    if (!this.forceIntegerToFloat && Number.isSafeInteger(object)) {
      if (object >= 0) {
        if (object < 128) {
          this.writeU8(object);
        } else if (object < 256) {
          this.writeU8(204);
          this.writeU8(object);
        } else if (object < 65536) {
          this.writeU8(205);
          this.writeU16(object);
        } else if (object < 4294967296) {
          this.writeU8(206);
          this.writeU32(object);
        } else if (!this.useBigInt64) {
          this.writeU8(207);
          this.writeU64(object);
        } else {
          this.encodeNumberAsFloat(object);
        }
      } else {
        if (object >= -32) {
          this.writeU8(224 | object + 32);
        } else if (object >= -128) {
          this.writeU8(208);
          this.writeI8(object);
        } else if (object >= -32768) {
          this.writeU8(209);
          this.writeI16(object);
        } else if (object >= -2147483648) {
          this.writeU8(210);
          this.writeI32(object);
        } else if (!this.useBigInt64) {
          this.writeU8(211);
          this.writeI64(object);
        } else {
          this.encodeNumberAsFloat(object);
        }
      }
    } else {
      this.encodeNumberAsFloat(object);
    }
  }
  encodeNumberAsFloat(object) {
    if (this.forceFloat32) {
      this.writeU8(202);
      this.writeF32(object);
    } else {
      this.writeU8(203);
      this.writeF64(object);
    }
  }
  encodeBigInt64(object) {
    if (object >= BigInt(0)) {
      this.writeU8(207);
      this.writeBigUint64(object);
    } else {
      this.writeU8(211);
      this.writeBigInt64(object);
    }
  }
  writeStringHeader(byteLength) {
    if (byteLength < 32) {
      this.writeU8(160 + byteLength);
    } else if (byteLength < 256) {
      this.writeU8(217);
      this.writeU8(byteLength);
    } else if (byteLength < 65536) {
      this.writeU8(218);
      this.writeU16(byteLength);
    } else if (byteLength < 4294967296) {
      this.writeU8(219);
      this.writeU32(byteLength);
    } else {
      throw new Error(`Too long string: ${byteLength} bytes in UTF-8`);
    }
  }
  encodeString(object) {
    const maxHeaderSize = 1 + 4;
    const byteLength = utf8Count(object);
    this.ensureBufferSizeToWrite(maxHeaderSize + byteLength);
    this.writeStringHeader(byteLength);
    utf8Encode(object, this.bytes, this.pos);
    this.pos += byteLength;
  }
  encodeObject(object, depth) {
    const ext = this.extensionCodec.tryToEncode(object, this.context);
    if (ext != null) {
      this.encodeExtension(ext);
    } else if (Array.isArray(object)) {
      this.encodeArray(object, depth);
    } else if (ArrayBuffer.isView(object)) {
      this.encodeBinary(object);
    } else if (typeof object === "object") {
      this.encodeMap(object, depth);
    } else {
      throw new Error(`Unrecognized object: ${Object.prototype.toString.apply(object)}`);
    }
  }
  encodeBinary(object) {
    const size = object.byteLength;
    if (size < 256) {
      this.writeU8(196);
      this.writeU8(size);
    } else if (size < 65536) {
      this.writeU8(197);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(198);
      this.writeU32(size);
    } else {
      throw new Error(`Too large binary: ${size}`);
    }
    const bytes = ensureUint8Array(object);
    this.writeU8a(bytes);
  }
  encodeArray(object, depth) {
    const size = object.length;
    if (size < 16) {
      this.writeU8(144 + size);
    } else if (size < 65536) {
      this.writeU8(220);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(221);
      this.writeU32(size);
    } else {
      throw new Error(`Too large array: ${size}`);
    }
    for (const item of object) {
      this.doEncode(item, depth + 1);
    }
  }
  countWithoutUndefined(object, keys) {
    let count = 0;
    for (const key of keys) {
      if (object[key] !== void 0) {
        count++;
      }
    }
    return count;
  }
  encodeMap(object, depth) {
    const keys = Object.keys(object);
    if (this.sortKeys) {
      keys.sort();
    }
    const size = this.ignoreUndefined ? this.countWithoutUndefined(object, keys) : keys.length;
    if (size < 16) {
      this.writeU8(128 + size);
    } else if (size < 65536) {
      this.writeU8(222);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(223);
      this.writeU32(size);
    } else {
      throw new Error(`Too large map object: ${size}`);
    }
    for (const key of keys) {
      const value = object[key];
      if (!(this.ignoreUndefined && value === void 0)) {
        this.encodeString(key);
        this.doEncode(value, depth + 1);
      }
    }
  }
  encodeExtension(ext) {
    if (typeof ext.data === "function") {
      const data = ext.data(this.pos + 6);
      const size2 = data.length;
      if (size2 >= 4294967296) {
        throw new Error(`Too large extension object: ${size2}`);
      }
      this.writeU8(201);
      this.writeU32(size2);
      this.writeI8(ext.type);
      this.writeU8a(data);
      return;
    }
    const size = ext.data.length;
    if (size === 1) {
      this.writeU8(212);
    } else if (size === 2) {
      this.writeU8(213);
    } else if (size === 4) {
      this.writeU8(214);
    } else if (size === 8) {
      this.writeU8(215);
    } else if (size === 16) {
      this.writeU8(216);
    } else if (size < 256) {
      this.writeU8(199);
      this.writeU8(size);
    } else if (size < 65536) {
      this.writeU8(200);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(201);
      this.writeU32(size);
    } else {
      throw new Error(`Too large extension object: ${size}`);
    }
    this.writeI8(ext.type);
    this.writeU8a(ext.data);
  }
  writeU8(value) {
    this.ensureBufferSizeToWrite(1);
    this.view.setUint8(this.pos, value);
    this.pos++;
  }
  writeU8a(values) {
    const size = values.length;
    this.ensureBufferSizeToWrite(size);
    this.bytes.set(values, this.pos);
    this.pos += size;
  }
  writeI8(value) {
    this.ensureBufferSizeToWrite(1);
    this.view.setInt8(this.pos, value);
    this.pos++;
  }
  writeU16(value) {
    this.ensureBufferSizeToWrite(2);
    this.view.setUint16(this.pos, value);
    this.pos += 2;
  }
  writeI16(value) {
    this.ensureBufferSizeToWrite(2);
    this.view.setInt16(this.pos, value);
    this.pos += 2;
  }
  writeU32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setUint32(this.pos, value);
    this.pos += 4;
  }
  writeI32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setInt32(this.pos, value);
    this.pos += 4;
  }
  writeF32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setFloat32(this.pos, value);
    this.pos += 4;
  }
  writeF64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setFloat64(this.pos, value);
    this.pos += 8;
  }
  writeU64(value) {
    this.ensureBufferSizeToWrite(8);
    setUint64(this.view, this.pos, value);
    this.pos += 8;
  }
  writeI64(value) {
    this.ensureBufferSizeToWrite(8);
    setInt64(this.view, this.pos, value);
    this.pos += 8;
  }
  writeBigUint64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setBigUint64(this.pos, value);
    this.pos += 8;
  }
  writeBigInt64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setBigInt64(this.pos, value);
    this.pos += 8;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/prettyByte.mjs
function prettyByte(byte) {
  return `${byte < 0 ? "-" : ""}0x${Math.abs(byte).toString(16).padStart(2, "0")}`;
}

// node_modules/@msgpack/msgpack/dist.esm/CachedKeyDecoder.mjs
var DEFAULT_MAX_KEY_LENGTH = 16;
var DEFAULT_MAX_LENGTH_PER_KEY = 16;
var CachedKeyDecoder = class {
  hit = 0;
  miss = 0;
  caches;
  maxKeyLength;
  maxLengthPerKey;
  constructor(maxKeyLength = DEFAULT_MAX_KEY_LENGTH, maxLengthPerKey = DEFAULT_MAX_LENGTH_PER_KEY) {
    this.maxKeyLength = maxKeyLength;
    this.maxLengthPerKey = maxLengthPerKey;
    this.caches = [];
    for (let i = 0; i < this.maxKeyLength; i++) {
      this.caches.push([]);
    }
  }
  canBeCached(byteLength) {
    return byteLength > 0 && byteLength <= this.maxKeyLength;
  }
  find(bytes, inputOffset, byteLength) {
    const records = this.caches[byteLength - 1];
    FIND_CHUNK: for (const record of records) {
      const recordBytes = record.bytes;
      for (let j = 0; j < byteLength; j++) {
        if (recordBytes[j] !== bytes[inputOffset + j]) {
          continue FIND_CHUNK;
        }
      }
      return record.str;
    }
    return null;
  }
  store(bytes, value) {
    const records = this.caches[bytes.length - 1];
    const record = { bytes, str: value };
    if (records.length >= this.maxLengthPerKey) {
      records[Math.random() * records.length | 0] = record;
    } else {
      records.push(record);
    }
  }
  decode(bytes, inputOffset, byteLength) {
    const cachedValue = this.find(bytes, inputOffset, byteLength);
    if (cachedValue != null) {
      this.hit++;
      return cachedValue;
    }
    this.miss++;
    const str = utf8DecodeJs(bytes, inputOffset, byteLength);
    const slicedCopyOfBytes = Uint8Array.prototype.slice.call(bytes, inputOffset, inputOffset + byteLength);
    this.store(slicedCopyOfBytes, str);
    return str;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/Decoder.mjs
var STATE_ARRAY = "array";
var STATE_MAP_KEY = "map_key";
var STATE_MAP_VALUE = "map_value";
var mapKeyConverter = (key) => {
  if (typeof key === "string" || typeof key === "number") {
    return key;
  }
  throw new DecodeError("The type of key must be string or number but " + typeof key);
};
var StackPool = class {
  stack = [];
  stackHeadPosition = -1;
  get length() {
    return this.stackHeadPosition + 1;
  }
  top() {
    return this.stack[this.stackHeadPosition];
  }
  pushArrayState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_ARRAY;
    state.position = 0;
    state.size = size;
    state.array = new Array(size);
  }
  pushMapState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_MAP_KEY;
    state.readCount = 0;
    state.size = size;
    state.map = {};
  }
  getUninitializedStateFromPool() {
    this.stackHeadPosition++;
    if (this.stackHeadPosition === this.stack.length) {
      const partialState = {
        type: void 0,
        size: 0,
        array: void 0,
        position: 0,
        readCount: 0,
        map: void 0,
        key: null
      };
      this.stack.push(partialState);
    }
    return this.stack[this.stackHeadPosition];
  }
  release(state) {
    const topStackState = this.stack[this.stackHeadPosition];
    if (topStackState !== state) {
      throw new Error("Invalid stack state. Released state is not on top of the stack.");
    }
    if (state.type === STATE_ARRAY) {
      const partialState = state;
      partialState.size = 0;
      partialState.array = void 0;
      partialState.position = 0;
      partialState.type = void 0;
    }
    if (state.type === STATE_MAP_KEY || state.type === STATE_MAP_VALUE) {
      const partialState = state;
      partialState.size = 0;
      partialState.map = void 0;
      partialState.readCount = 0;
      partialState.type = void 0;
    }
    this.stackHeadPosition--;
  }
  reset() {
    this.stack.length = 0;
    this.stackHeadPosition = -1;
  }
};
var HEAD_BYTE_REQUIRED = -1;
var EMPTY_VIEW = new DataView(new ArrayBuffer(0));
var EMPTY_BYTES = new Uint8Array(EMPTY_VIEW.buffer);
try {
  EMPTY_VIEW.getInt8(0);
} catch (e) {
  if (!(e instanceof RangeError)) {
    throw new Error("This module is not supported in the current JavaScript engine because DataView does not throw RangeError on out-of-bounds access");
  }
}
var MORE_DATA = new RangeError("Insufficient data");
var sharedCachedKeyDecoder = new CachedKeyDecoder();
var Decoder = class _Decoder {
  extensionCodec;
  context;
  useBigInt64;
  rawStrings;
  maxStrLength;
  maxBinLength;
  maxArrayLength;
  maxMapLength;
  maxExtLength;
  keyDecoder;
  mapKeyConverter;
  totalPos = 0;
  pos = 0;
  view = EMPTY_VIEW;
  bytes = EMPTY_BYTES;
  headByte = HEAD_BYTE_REQUIRED;
  stack = new StackPool();
  entered = false;
  constructor(options) {
    this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
    this.context = options?.context;
    this.useBigInt64 = options?.useBigInt64 ?? false;
    this.rawStrings = options?.rawStrings ?? false;
    this.maxStrLength = options?.maxStrLength ?? UINT32_MAX;
    this.maxBinLength = options?.maxBinLength ?? UINT32_MAX;
    this.maxArrayLength = options?.maxArrayLength ?? UINT32_MAX;
    this.maxMapLength = options?.maxMapLength ?? UINT32_MAX;
    this.maxExtLength = options?.maxExtLength ?? UINT32_MAX;
    this.keyDecoder = options?.keyDecoder !== void 0 ? options.keyDecoder : sharedCachedKeyDecoder;
    this.mapKeyConverter = options?.mapKeyConverter ?? mapKeyConverter;
  }
  clone() {
    return new _Decoder({
      extensionCodec: this.extensionCodec,
      context: this.context,
      useBigInt64: this.useBigInt64,
      rawStrings: this.rawStrings,
      maxStrLength: this.maxStrLength,
      maxBinLength: this.maxBinLength,
      maxArrayLength: this.maxArrayLength,
      maxMapLength: this.maxMapLength,
      maxExtLength: this.maxExtLength,
      keyDecoder: this.keyDecoder
    });
  }
  reinitializeState() {
    this.totalPos = 0;
    this.headByte = HEAD_BYTE_REQUIRED;
    this.stack.reset();
  }
  setBuffer(buffer) {
    const bytes = ensureUint8Array(buffer);
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  appendBuffer(buffer) {
    if (this.headByte === HEAD_BYTE_REQUIRED && !this.hasRemaining(1)) {
      this.setBuffer(buffer);
    } else {
      const remainingData = this.bytes.subarray(this.pos);
      const newData = ensureUint8Array(buffer);
      const newBuffer = new Uint8Array(remainingData.length + newData.length);
      newBuffer.set(remainingData);
      newBuffer.set(newData, remainingData.length);
      this.setBuffer(newBuffer);
    }
  }
  hasRemaining(size) {
    return this.view.byteLength - this.pos >= size;
  }
  createExtraByteError(posToShow) {
    const { view, pos } = this;
    return new RangeError(`Extra ${view.byteLength - pos} of ${view.byteLength} byte(s) found at buffer[${posToShow}]`);
  }
  /**
   * @throws {@link DecodeError}
   * @throws {@link RangeError}
   */
  decode(buffer) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decode(buffer);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      const object = this.doDecodeSync();
      if (this.hasRemaining(1)) {
        throw this.createExtraByteError(this.pos);
      }
      return object;
    } finally {
      this.entered = false;
    }
  }
  *decodeMulti(buffer) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMulti(buffer);
      return;
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      while (this.hasRemaining(1)) {
        yield this.doDecodeSync();
      }
    } finally {
      this.entered = false;
    }
  }
  async decodeAsync(stream) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decodeAsync(stream);
    }
    try {
      this.entered = true;
      let decoded = false;
      let object;
      for await (const buffer of stream) {
        if (decoded) {
          this.entered = false;
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        try {
          object = this.doDecodeSync();
          decoded = true;
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
      if (decoded) {
        if (this.hasRemaining(1)) {
          throw this.createExtraByteError(this.totalPos);
        }
        return object;
      }
      const { headByte, pos, totalPos } = this;
      throw new RangeError(`Insufficient data in parsing ${prettyByte(headByte)} at ${totalPos} (${pos} in the current buffer)`);
    } finally {
      this.entered = false;
    }
  }
  decodeArrayStream(stream) {
    return this.decodeMultiAsync(stream, true);
  }
  decodeStream(stream) {
    return this.decodeMultiAsync(stream, false);
  }
  async *decodeMultiAsync(stream, isArray) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMultiAsync(stream, isArray);
      return;
    }
    try {
      this.entered = true;
      let isArrayHeaderRequired = isArray;
      let arrayItemsLeft = -1;
      for await (const buffer of stream) {
        if (isArray && arrayItemsLeft === 0) {
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        if (isArrayHeaderRequired) {
          arrayItemsLeft = this.readArraySize();
          isArrayHeaderRequired = false;
          this.complete();
        }
        try {
          while (true) {
            yield this.doDecodeSync();
            if (--arrayItemsLeft === 0) {
              break;
            }
          }
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
    } finally {
      this.entered = false;
    }
  }
  doDecodeSync() {
    DECODE: while (true) {
      const headByte = this.readHeadByte();
      let object;
      if (headByte >= 224) {
        object = headByte - 256;
      } else if (headByte < 192) {
        if (headByte < 128) {
          object = headByte;
        } else if (headByte < 144) {
          const size = headByte - 128;
          if (size !== 0) {
            this.pushMapState(size);
            this.complete();
            continue DECODE;
          } else {
            object = {};
          }
        } else if (headByte < 160) {
          const size = headByte - 144;
          if (size !== 0) {
            this.pushArrayState(size);
            this.complete();
            continue DECODE;
          } else {
            object = [];
          }
        } else {
          const byteLength = headByte - 160;
          object = this.decodeString(byteLength, 0);
        }
      } else if (headByte === 192) {
        object = null;
      } else if (headByte === 194) {
        object = false;
      } else if (headByte === 195) {
        object = true;
      } else if (headByte === 202) {
        object = this.readF32();
      } else if (headByte === 203) {
        object = this.readF64();
      } else if (headByte === 204) {
        object = this.readU8();
      } else if (headByte === 205) {
        object = this.readU16();
      } else if (headByte === 206) {
        object = this.readU32();
      } else if (headByte === 207) {
        if (this.useBigInt64) {
          object = this.readU64AsBigInt();
        } else {
          object = this.readU64();
        }
      } else if (headByte === 208) {
        object = this.readI8();
      } else if (headByte === 209) {
        object = this.readI16();
      } else if (headByte === 210) {
        object = this.readI32();
      } else if (headByte === 211) {
        if (this.useBigInt64) {
          object = this.readI64AsBigInt();
        } else {
          object = this.readI64();
        }
      } else if (headByte === 217) {
        const byteLength = this.lookU8();
        object = this.decodeString(byteLength, 1);
      } else if (headByte === 218) {
        const byteLength = this.lookU16();
        object = this.decodeString(byteLength, 2);
      } else if (headByte === 219) {
        const byteLength = this.lookU32();
        object = this.decodeString(byteLength, 4);
      } else if (headByte === 220) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 221) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 222) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 223) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 196) {
        const size = this.lookU8();
        object = this.decodeBinary(size, 1);
      } else if (headByte === 197) {
        const size = this.lookU16();
        object = this.decodeBinary(size, 2);
      } else if (headByte === 198) {
        const size = this.lookU32();
        object = this.decodeBinary(size, 4);
      } else if (headByte === 212) {
        object = this.decodeExtension(1, 0);
      } else if (headByte === 213) {
        object = this.decodeExtension(2, 0);
      } else if (headByte === 214) {
        object = this.decodeExtension(4, 0);
      } else if (headByte === 215) {
        object = this.decodeExtension(8, 0);
      } else if (headByte === 216) {
        object = this.decodeExtension(16, 0);
      } else if (headByte === 199) {
        const size = this.lookU8();
        object = this.decodeExtension(size, 1);
      } else if (headByte === 200) {
        const size = this.lookU16();
        object = this.decodeExtension(size, 2);
      } else if (headByte === 201) {
        const size = this.lookU32();
        object = this.decodeExtension(size, 4);
      } else {
        throw new DecodeError(`Unrecognized type byte: ${prettyByte(headByte)}`);
      }
      this.complete();
      const stack = this.stack;
      while (stack.length > 0) {
        const state = stack.top();
        if (state.type === STATE_ARRAY) {
          state.array[state.position] = object;
          state.position++;
          if (state.position === state.size) {
            object = state.array;
            stack.release(state);
          } else {
            continue DECODE;
          }
        } else if (state.type === STATE_MAP_KEY) {
          if (object === "__proto__") {
            throw new DecodeError("The key __proto__ is not allowed");
          }
          state.key = this.mapKeyConverter(object);
          state.type = STATE_MAP_VALUE;
          continue DECODE;
        } else {
          state.map[state.key] = object;
          state.readCount++;
          if (state.readCount === state.size) {
            object = state.map;
            stack.release(state);
          } else {
            state.key = null;
            state.type = STATE_MAP_KEY;
            continue DECODE;
          }
        }
      }
      return object;
    }
  }
  readHeadByte() {
    if (this.headByte === HEAD_BYTE_REQUIRED) {
      this.headByte = this.readU8();
    }
    return this.headByte;
  }
  complete() {
    this.headByte = HEAD_BYTE_REQUIRED;
  }
  readArraySize() {
    const headByte = this.readHeadByte();
    switch (headByte) {
      case 220:
        return this.readU16();
      case 221:
        return this.readU32();
      default: {
        if (headByte < 160) {
          return headByte - 144;
        } else {
          throw new DecodeError(`Unrecognized array type byte: ${prettyByte(headByte)}`);
        }
      }
    }
  }
  pushMapState(size) {
    if (size > this.maxMapLength) {
      throw new DecodeError(`Max length exceeded: map length (${size}) > maxMapLengthLength (${this.maxMapLength})`);
    }
    this.stack.pushMapState(size);
  }
  pushArrayState(size) {
    if (size > this.maxArrayLength) {
      throw new DecodeError(`Max length exceeded: array length (${size}) > maxArrayLength (${this.maxArrayLength})`);
    }
    this.stack.pushArrayState(size);
  }
  decodeString(byteLength, headerOffset) {
    if (!this.rawStrings || this.stateIsMapKey()) {
      return this.decodeUtf8String(byteLength, headerOffset);
    }
    return this.decodeBinary(byteLength, headerOffset);
  }
  /**
   * @throws {@link RangeError}
   */
  decodeUtf8String(byteLength, headerOffset) {
    if (byteLength > this.maxStrLength) {
      throw new DecodeError(`Max length exceeded: UTF-8 byte length (${byteLength}) > maxStrLength (${this.maxStrLength})`);
    }
    if (this.bytes.byteLength < this.pos + headerOffset + byteLength) {
      throw MORE_DATA;
    }
    const offset = this.pos + headerOffset;
    let object;
    if (this.stateIsMapKey() && this.keyDecoder?.canBeCached(byteLength)) {
      object = this.keyDecoder.decode(this.bytes, offset, byteLength);
    } else {
      object = utf8Decode(this.bytes, offset, byteLength);
    }
    this.pos += headerOffset + byteLength;
    return object;
  }
  stateIsMapKey() {
    if (this.stack.length > 0) {
      const state = this.stack.top();
      return state.type === STATE_MAP_KEY;
    }
    return false;
  }
  /**
   * @throws {@link RangeError}
   */
  decodeBinary(byteLength, headOffset) {
    if (byteLength > this.maxBinLength) {
      throw new DecodeError(`Max length exceeded: bin length (${byteLength}) > maxBinLength (${this.maxBinLength})`);
    }
    if (!this.hasRemaining(byteLength + headOffset)) {
      throw MORE_DATA;
    }
    const offset = this.pos + headOffset;
    const object = this.bytes.subarray(offset, offset + byteLength);
    this.pos += headOffset + byteLength;
    return object;
  }
  decodeExtension(size, headOffset) {
    if (size > this.maxExtLength) {
      throw new DecodeError(`Max length exceeded: ext length (${size}) > maxExtLength (${this.maxExtLength})`);
    }
    const extType = this.view.getInt8(this.pos + headOffset);
    const data = this.decodeBinary(
      size,
      headOffset + 1
      /* extType */
    );
    return this.extensionCodec.decode(data, extType, this.context);
  }
  lookU8() {
    return this.view.getUint8(this.pos);
  }
  lookU16() {
    return this.view.getUint16(this.pos);
  }
  lookU32() {
    return this.view.getUint32(this.pos);
  }
  readU8() {
    const value = this.view.getUint8(this.pos);
    this.pos++;
    return value;
  }
  readI8() {
    const value = this.view.getInt8(this.pos);
    this.pos++;
    return value;
  }
  readU16() {
    const value = this.view.getUint16(this.pos);
    this.pos += 2;
    return value;
  }
  readI16() {
    const value = this.view.getInt16(this.pos);
    this.pos += 2;
    return value;
  }
  readU32() {
    const value = this.view.getUint32(this.pos);
    this.pos += 4;
    return value;
  }
  readI32() {
    const value = this.view.getInt32(this.pos);
    this.pos += 4;
    return value;
  }
  readU64() {
    const value = getUint64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readI64() {
    const value = getInt64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readU64AsBigInt() {
    const value = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return value;
  }
  readI64AsBigInt() {
    const value = this.view.getBigInt64(this.pos);
    this.pos += 8;
    return value;
  }
  readF32() {
    const value = this.view.getFloat32(this.pos);
    this.pos += 4;
    return value;
  }
  readF64() {
    const value = this.view.getFloat64(this.pos);
    this.pos += 8;
    return value;
  }
};

// src/values.js
var MAX_DEPTH = 256;
var INT64_MIN = -(2n ** 63n);
var UINT64_MAX = 2n ** 64n - 1n;
var TWO_32 = 2 ** 32;
var MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
var MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
var BaseEncoder = (
  /** @type {any} */
  Encoder
);
var BaseDecoder = (
  /** @type {any} */
  Decoder
);
var IpcEncoder = class extends BaseEncoder {
  /** @param {number} object */
  encodeNumber(object) {
    if (Number.isInteger(object) && (object >= TWO_32 || object < -(2 ** 31))) {
      const big = BigInt(object);
      if (big >= INT64_MIN && big <= UINT64_MAX) {
        this.encodeBigInt64(big);
        return;
      }
    }
    super.encodeNumber(object);
  }
};
var IpcDecoder = class extends BaseDecoder {
  readU64AsBigInt() {
    const value = super.readU64AsBigInt();
    return value <= MAX_SAFE ? Number(value) : value;
  }
  readI64AsBigInt() {
    const value = super.readI64AsBigInt();
    return value >= MIN_SAFE && value <= MAX_SAFE ? Number(value) : value;
  }
};
var encoder = new /** @type {any} */
IpcEncoder({ useBigInt64: true, maxDepth: MAX_DEPTH + 8 });
var decoder = new /** @type {any} */
IpcDecoder({ useBigInt64: true });
function encodeBody(body) {
  return encoder.encode(body);
}
function decodeBody(data) {
  return decoder.decode(data);
}
var SUPPORTED = "null, undefined, boolean, number, bigint (-2^63 .. 2^64-1), string, Uint8Array, Date, Array and plain objects";
function checkArgs(what, channel, args) {
  for (let index = 0; index < args.length; index++) {
    checkValue(what, channel, args[index], `argument ${index}`);
  }
}
function checkValue(what, channel, value, name) {
  const problem = check(value, "", 0, []);
  if (problem !== null) {
    const where = problem.path ? ` (at ${problem.path})` : "";
    throw new SerializationError(
      `Cannot ${what} on channel ${pyRepr(channel)}: ${name}${where} ${problem.why}. Supported types are ${SUPPORTED}.`
    );
  }
}
function check(value, path, depth, parents) {
  switch (typeof value) {
    case "undefined":
    case "boolean":
    case "number":
    case "string":
      return null;
    case "bigint":
      if (value < INT64_MIN || value > UINT64_MAX) {
        return { path, why: `is the bigint ${value}, outside -2^63 .. 2^64-1` };
      }
      return null;
    case "function":
      return { path, why: `is a function${value.name ? ` (${value.name})` : ""}` };
    case "symbol":
      return { path, why: `is a symbol (${String(value)})` };
  }
  if (value === null) {
    return null;
  }
  const object = (
    /** @type {object} */
    value
  );
  if (object instanceof Uint8Array) {
    return null;
  }
  if (object instanceof ArrayBuffer) {
    return { path, why: "is an ArrayBuffer; wrap it as new Uint8Array(buffer)" };
  }
  if (object instanceof Date) {
    return Number.isNaN(object.getTime()) ? { path, why: "is an invalid Date" } : null;
  }
  if (ArrayBuffer.isView(object)) {
    return {
      path,
      why: `is a ${object.constructor.name}; send its bytes as a Uint8Array instead`
    };
  }
  if (parents.includes(object)) {
    return { path, why: "refers back to a container it is in (a circular structure)" };
  }
  if (depth >= MAX_DEPTH) {
    return { path, why: `is nested more than ${MAX_DEPTH} levels deep` };
  }
  parents.push(object);
  try {
    if (Array.isArray(object)) {
      for (let i = 0; i < object.length; i++) {
        const problem = check(object[i], `${path}[${i}]`, depth + 1, parents);
        if (problem !== null) return problem;
      }
      return null;
    }
    if (object instanceof Map || object instanceof Set) {
      const kind = object instanceof Map ? "Map; send Object.fromEntries(map)" : "Set; send [...set]";
      return { path, why: `is a ${kind} instead` };
    }
    const proto = Object.getPrototypeOf(object);
    if (proto !== Object.prototype && proto !== null) {
      return { path, why: `is ${typeOf(object)}, not a plain object` };
    }
    for (const [key, item] of Object.entries(object)) {
      const problem = check(item, `${path}.${key}`, depth + 1, parents);
      if (problem !== null) return problem;
    }
    return null;
  } finally {
    parents.pop();
  }
}
function typeOf(value) {
  if (value === null) return "null";
  if (typeof value !== "object") return typeof value;
  const name = (
    /** @type {any} */
    value.constructor?.name
  );
  return name ? `an instance of ${name}` : "an object with a foreign prototype";
}

// src/wire.js
var wire_exports = {};
__export(wire_exports, {
  CANCEL: () => CANCEL,
  CANCELLED: () => CANCELLED,
  CANCEL_ACK: () => CANCEL_ACK,
  CloseCode: () => CloseCode,
  DEFAULT_MAX_FRAME_SIZE: () => DEFAULT_MAX_FRAME_SIZE,
  GOODBYE: () => GOODBYE,
  HELLO: () => HELLO,
  INVOKE: () => INVOKE,
  MESSAGE: () => MESSAGE,
  NO_HANDLER: () => NO_HANDLER2,
  PING: () => PING,
  PONG: () => PONG,
  PORT_CLOSE: () => PORT_CLOSE,
  PORT_MESSAGE: () => PORT_MESSAGE,
  PROTOCOL_VERSION: () => PROTOCOL_VERSION,
  REMOTE: () => REMOTE,
  REPLY: () => REPLY,
  REQUEST: () => REQUEST,
  STREAM: () => STREAM,
  STREAM_CREDIT: () => STREAM_CREDIT,
  STREAM_ITEM: () => STREAM_ITEM,
  SYNC: () => SYNC,
  WELCOME: () => WELCOME
});
var PROTOCOL_VERSION = 1;
var DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024;
var HELLO = 1;
var WELCOME = 2;
var MESSAGE = 3;
var REQUEST = 4;
var REPLY = 5;
var CANCEL = 6;
var GOODBYE = 7;
var PING = 8;
var PONG = 9;
var PORT_MESSAGE = 10;
var PORT_CLOSE = 11;
var STREAM_ITEM = 12;
var STREAM_CREDIT = 13;
var INVOKE = 1;
var SYNC = 2;
var STREAM = 3;
var REMOTE = 1;
var NO_HANDLER2 = 2;
var CANCELLED = 4;
var CloseCode = Object.freeze({
  NORMAL: 0,
  PROTOCOL_ERROR: 1,
  AUTHENTICATION_FAILED: 2,
  VERSION_MISMATCH: 3,
  FRAME_TOO_LARGE: 4,
  SHUTDOWN: 5,
  TOO_MANY_CONNECTIONS: 6
});
var CANCEL_ACK = Object.freeze([CANCELLED, "CancelledError", "cancelled by the caller", null]);

// src/session.js
var { CloseCode: CloseCode2 } = wire_exports;
var Violation = class extends Error {
};
function need(ok, what) {
  if (!ok) throw new Violation(what);
}
var isInt = Number.isInteger;
var Session = class {
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
  #peerMaxFrameSize = DEFAULT_MAX_FRAME_SIZE;
  #nextRequestId = 1;
  #lastPeerRequestId = 0;
  /** @type {Map<number, Call>} */
  #calls = /* @__PURE__ */ new Map();
  /** @type {Set<number>} ids we sent Cancel for; their one Reply is dropped */
  #cancelled = /* @__PURE__ */ new Set();
  /** @type {Map<number, Served>} */
  #serving = /* @__PURE__ */ new Map();
  /** Ports main sent us, held weakly: one the page lets go of closes (#collected). @type {Map<number, WeakRef<IpcMessagePort>>} */
  #ports = /* @__PURE__ */ new Map();
  /** Started, open ports: they could still receive, so they are kept. @type {Set<IpcMessagePort>} */
  #kept = /* @__PURE__ */ new Set();
  #gone = new FinalizationRegistry((id) => this.#collected(id));
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #handshakeTimer;
  /** @type {(value: void) => void} */
  #resolveReady = () => {
  };
  /** @type {(error: Error) => void} */
  #rejectReady = () => {
  };
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
      post: (id, data) => {
        checkValue("post a message", `port ${id}`, data, "the message");
        if (this.state === "open") this.#send(this.#encode([PORT_MESSAGE, id, data], "post a message", `port ${id}`));
      },
      close: (id) => {
        if (this.#ports.delete(id) && this.state === "open") this.#write([PORT_CLOSE, id]);
      },
      keep: (port, kept) => {
        if (kept) this.#kept.add(port);
        else this.#kept.delete(port);
      }
    };
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      if (this.state === "handshake") this.#write([HELLO, PROTOCOL_VERSION, token, 0, maxFrameSize]);
    };
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onerror = () => {
    };
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
    this.#send(this.#encode([MESSAGE, channel, args], what, channel));
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
      const bytes = this.#encode([REQUEST, id, kind, channel, args], what, channel);
      this.#nextRequestId++;
      let timer;
      const onAbort = () => giveUp(signal?.reason);
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
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
        }
      });
      this.#send(bytes);
      if (timeout !== void 0) {
        timer = setTimeout(
          () => giveUp(new IpcTimeoutError(`${what} ${pyRepr(channel)}: no reply within ${timeout} ms`)),
          timeout
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
    const bytes = this.#encode([REQUEST, id, STREAM, channel, args], "stream", channel);
    this.#nextRequestId++;
    this.#calls.set(id, { channel, credit: window, ...sink });
    this.#send(bytes);
    this.#write([STREAM_CREDIT, id, window]);
    return id;
  }
  /** Let main send `n` more items of stream `id`. @param {number} id @param {number} n */
  grant(id, n) {
    const call = this.#calls.get(id);
    if (call === void 0 || this.state !== "open") return;
    call.credit = (call.credit ?? 0) + n;
    this.#write([STREAM_CREDIT, id, n]);
  }
  /** Give up on request `id` (a stream left early). @param {number} id */
  abandon(id) {
    if (this.#calls.delete(id)) this.#cancel(id);
  }
  /** Leave: Goodbye(NORMAL), then close. */
  close() {
    this.#terminate(CloseCode2.NORMAL, "the renderer disconnected", true);
  }
  // ---- frames in ------------------------------------------------------------
  /** @param {unknown} data */
  #receive(data) {
    if (this.state === "closed") return;
    try {
      need(data instanceof ArrayBuffer, "a text message (ipcbus frames are binary messages)");
      const size = (
        /** @type {ArrayBuffer} */
        data.byteLength
      );
      if (size > this.#maxFrameSize) {
        const reason = `frame of ${size} bytes exceeds the limit of ${this.#maxFrameSize} bytes`;
        this.#terminate(CloseCode2.FRAME_TOO_LARGE, reason, true, new FrameTooLargeError(reason));
        return;
      }
      need(size > 0, "an empty frame");
      let body;
      try {
        body = decodeBody(
          /** @type {ArrayBuffer} */
          data
        );
      } catch (error) {
        throw new Violation(`a malformed frame (${/** @type {Error} */
        error.message})`);
      }
      need(Array.isArray(body) && isInt(body[0]), "a frame that is not an array with a tag first");
      if (this.state === "handshake") this.#handshake(
        /** @type {unknown[]} */
        body
      );
      else this.#dispatch(
        /** @type {unknown[]} */
        body
      );
    } catch (error) {
      if (!(error instanceof Violation)) throw error;
      const reason = `protocol error: ${error.message}`;
      this.#terminate(CloseCode2.PROTOCOL_ERROR, reason, true, new ProtocolError(reason));
    }
  }
  /** @param {unknown[]} body */
  #handshake(body) {
    const [tag, a, b, c] = body;
    if (tag === GOODBYE) {
      need(isInt(a) && typeof b === "string", "a malformed Goodbye");
      this.#terminate(
        /** @type {number} */
        a,
        /** @type {string} */
        b,
        false
      );
      return;
    }
    need(tag === WELCOME, `frame ${tag} before Welcome`);
    need(isInt(a) && isInt(b) && (c === void 0 || isInt(c)), "a malformed Welcome");
    if (a !== PROTOCOL_VERSION) {
      const reason = `main speaks protocol version ${a}, this client ${PROTOCOL_VERSION}`;
      this.#terminate(CloseCode2.VERSION_MISMATCH, reason, true, new ProtocolError(reason));
      return;
    }
    clearTimeout(this.#handshakeTimer);
    this.state = "open";
    this.id = /** @type {number} */
    b;
    if (
      /** @type {number} */
      c > 0
    ) this.#peerMaxFrameSize = /** @type {number} */
    c;
    this.#resolveReady();
  }
  /** @param {unknown[]} body */
  #dispatch(body) {
    const [tag, a, b, c, d] = body;
    switch (tag) {
      case MESSAGE: {
        need(typeof a === "string", "a Message whose channel is not a string");
        const channel = (
          /** @type {string} */
          a
        );
        const ports = this.#land(c);
        if (!Array.isArray(b)) {
          console.warn(`ipcbus: a message on ${pyRepr(channel)} whose arguments are not an array was dropped`);
          for (const port of ports) port.close();
        } else if (!this.#host.deliver(channel, b, ports)) {
          for (const port of ports) port.close();
        }
        return;
      }
      case REQUEST: {
        need(isInt(a) && isInt(b) && typeof c === "string", "a malformed Request");
        const id = (
          /** @type {number} */
          a
        );
        need(id > this.#lastPeerRequestId, `request id ${id} reused or out of order (last was ${this.#lastPeerRequestId})`);
        need(b === INVOKE || b === SYNC || b === STREAM, `a Request of unknown kind ${b}`);
        this.#lastPeerRequestId = id;
        this.#serve(
          id,
          /** @type {number} */
          b,
          /** @type {string} */
          c,
          d
        );
        return;
      }
      case REPLY: {
        need(isInt(a) && typeof b === "boolean", "a malformed Reply");
        const id = (
          /** @type {number} */
          a
        );
        const call = this.#calls.get(id);
        if (call !== void 0) {
          this.#calls.delete(id);
          call.settle(
            /** @type {boolean} */
            b,
            c
          );
        } else {
          need(this.#cancelled.delete(id), `a Reply to request id ${id}, which is not awaited`);
        }
        return;
      }
      case CANCEL: {
        need(isInt(a), "a malformed Cancel");
        const id = (
          /** @type {number} */
          a
        );
        const served = this.#serving.get(id);
        if (served !== void 0) {
          this.#serving.delete(id);
          this.#write([REPLY, id, false, CANCEL_ACK]);
          this.#stop(served, "main cancelled the request");
        } else {
          need(id <= this.#lastPeerRequestId && id > 0, `a Cancel for request id ${id}, which was never sent`);
        }
        return;
      }
      case GOODBYE:
        need(isInt(a) && typeof b === "string", "a malformed Goodbye");
        this.#terminate(
          /** @type {number} */
          a,
          /** @type {string} */
          b,
          false
        );
        return;
      case PING:
        need(isInt(a) || typeof a === "bigint", "a malformed Ping");
        this.#write([PONG, a]);
        return;
      case PONG:
        return;
      case PORT_MESSAGE: {
        need(isInt(a) && /** @type {number} */
        a > 0, "a PortMessage with a bad port id");
        const id = (
          /** @type {number} */
          a
        );
        const ref = this.#ports.get(id);
        if (ref === void 0) {
          this.#write([PORT_MESSAGE, id, b, Array.isArray(c) ? c : [], true]);
          return;
        }
        const port = ref.deref();
        if (port === void 0) {
          for (const carried of this.#land(c)) carried.close();
          this.#collected(id);
          return;
        }
        port._deliver(b, this.#land(c));
        return;
      }
      case PORT_CLOSE: {
        need(isInt(a) && /** @type {number} */
        a > 0, "a PortClose with a bad port id");
        const id = (
          /** @type {number} */
          a
        );
        const ref = this.#ports.get(id);
        if (ref === void 0) {
          this.#write([PORT_CLOSE, id, true]);
          return;
        }
        this.#ports.delete(id);
        this.#write([PORT_CLOSE, id]);
        ref.deref()?._closed();
        return;
      }
      case STREAM_ITEM: {
        need(isInt(a), "a malformed StreamItem");
        const id = (
          /** @type {number} */
          a
        );
        const call = this.#calls.get(id);
        if (call?.item !== void 0) {
          need(
            /** @type {number} */
            call.credit > 0,
            `a StreamItem for request id ${id} beyond the credit granted`
          );
          call.credit = /** @type {number} */
          call.credit - 1;
          call.item(b);
        } else {
          need(this.#cancelled.has(id), `a StreamItem for request id ${id}, which is not a stream of ours`);
        }
        return;
      }
      case STREAM_CREDIT: {
        need(isInt(a) && isInt(b) && /** @type {number} */
        b >= 1, "a malformed StreamCredit");
        const id = (
          /** @type {number} */
          a
        );
        const served = this.#serving.get(id);
        if (served !== void 0) {
          need(served.stream !== null, `a StreamCredit for request id ${id}, which is not a stream`);
          const stream = (
            /** @type {NonNullable<Served["stream"]>} */
            served.stream
          );
          stream.credit += /** @type {number} */
          b;
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
    if (refs === void 0 || refs === null) return [];
    need(Array.isArray(refs), "ports that are not an array");
    return (
      /** @type {unknown[]} */
      refs.map((ref) => {
        const id = Array.isArray(ref) ? ref[0] : void 0;
        need(isInt(id) && id > 0, "a port reference with a bad id");
        const port = new IpcMessagePort(id, this.#portLink);
        this.#ports.set(id, new WeakRef(port));
        this.#gone.register(port, id);
        return port;
      })
    );
  }
  /**
   * A port main sent us was garbage-collected while open (a started one is
   * kept, see #kept): nobody can read it or post on it, so its channel closes
   * and the other end hears "close", as with the DOM's MessagePort.
   * @param {number} id
   */
  #collected(id) {
    const ref = this.#ports.get(id);
    if (ref !== void 0 && ref.deref() === void 0) {
      this.#ports.delete(id);
      if (this.state === "open") this.#write([PORT_CLOSE, id]);
    }
  }
  // ---- serving main's requests ------------------------------------------------
  /** @param {number} id @param {number} kind @param {string} channel @param {unknown} args */
  #serve(id, kind, channel, args) {
    if (kind === SYNC) {
      if (Array.isArray(args)) this.#host.deliver(channel, args, []);
      this.#write([REPLY, id, true, null]);
      return;
    }
    const handler = this.#host.takeHandler(channel);
    if (handler === void 0) {
      const info = [NO_HANDLER2, "NoHandlerError", `No handler registered for ${pyRepr(channel)}`, null];
      this.#write([REPLY, id, false, info]);
      return;
    }
    const served = {
      controller: new AbortController(),
      stream: kind === STREAM ? { credit: 0, wake: null, iterator: null } : null
    };
    this.#serving.set(id, served);
    const event = this.#host.invokeEvent(channel, served.controller.signal);
    const run = async () => handler(event, ...Array.isArray(args) ? args : [args]);
    const result = run();
    if (kind === INVOKE) {
      result.then(
        (value) => this.#answer(id, served, channel, value),
        (error) => this.#answerError(id, served, error)
      );
    } else {
      this.#pump(id, served, channel, result).catch((error) => this.#answerError(id, served, error));
    }
  }
  /** @param {number} id @param {Served} served @param {string} channel @param {unknown} value */
  #answer(id, served, channel, value) {
    if (this.#serving.get(id) !== served || this.state !== "open") return;
    let bytes;
    try {
      checkValue("reply", channel, value, "the result");
      bytes = this.#encode([REPLY, id, true, value], "reply", channel);
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
    let bytes = encodeBody([REPLY, id, false, [REMOTE, type, message, stack]]);
    if (bytes.byteLength > this.#peerMaxFrameSize) {
      bytes = encodeBody([REPLY, id, false, [REMOTE, type, message.slice(0, 1e3), null]]);
    }
    this.#send(bytes);
  }
  /**
   * Serve a STREAM request: send what the handler's (async) iterable yields, as credit allows.
   * @param {number} id @param {Served} served @param {string} channel @param {Promise<unknown>} result
   */
  async #pump(id, served, channel, result) {
    const stream = (
      /** @type {NonNullable<Served["stream"]>} */
      served.stream
    );
    const iterable = (
      /** @type {any} */
      await result
    );
    const iterator = iterable?.[Symbol.asyncIterator]?.() ?? iterable?.[Symbol.iterator]?.() ?? (() => {
      throw new TypeError(`the handler for ${pyRepr(channel)} did not return an iterable`);
    })();
    stream.iterator = iterator;
    if (this.#serving.get(id) !== served) {
      iterator.return?.();
      return;
    }
    for (; ; ) {
      while (stream.credit <= 0) {
        await new Promise((resolve) => {
          stream.wake = () => resolve(void 0);
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
      this.#send(this.#encode([STREAM_ITEM, id, value], "stream", channel));
      stream.credit--;
    }
  }
  /** Stop serving: abort the handler's signal, close a stream's iterator. @param {Served} served @param {string} why */
  #stop(served, why) {
    served.controller.abort(new ConnectionClosedError(why));
    if (served.stream !== null) {
      served.stream.wake?.();
      Promise.resolve().then(() => served.stream?.iterator?.return?.()).catch(() => {
      });
    }
  }
  // ---- frames out -------------------------------------------------------------
  /** Encode a frame the page asked for; refuse it over main's limit. @param {unknown[]} body @param {string} what @param {string} channel */
  #encode(body, what, channel) {
    const bytes = encodeBody(body);
    if (bytes.byteLength > this.#peerMaxFrameSize) {
      throw new FrameTooLargeError(
        `Cannot ${what} on channel ${pyRepr(channel)}: frame of ${bytes.byteLength} bytes exceeds the limit of ${this.#peerMaxFrameSize} bytes; nothing was sent and the connection is fine. Raise max_frame_size on main (IpcMain(max_frame_size=...)) to allow it`
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
    this.#write([CANCEL, id]);
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
        this.#write([GOODBYE, code, reason]);
      } catch {
      }
    }
    try {
      this.#socket.close(1e3);
    } catch {
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
};
function refusal(url, code, reason) {
  const text = `main at ${url} refused the connection: ${reason}`;
  if (code === CloseCode2.AUTHENTICATION_FAILED) {
    return new AuthenticationError(`${text}. Open the page with the URL main printed (it carries #token=...)`);
  }
  if (code === CloseCode2.PROTOCOL_ERROR || code === CloseCode2.VERSION_MISMATCH || code === CloseCode2.FRAME_TOO_LARGE) {
    return new ProtocolError(text);
  }
  if (code === null) return new ConnectionClosedError(`could not connect to main at ${url}: ${reason}`);
  return new ConnectionClosedError(text);
}

// src/stream.js
var DEFAULT_WINDOW = 32;
var IpcStream = class {
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
  #error = void 0;
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
      if (this.#finished) return { done: true, value: void 0 };
      this.#start();
    }
    for (; ; ) {
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
        if (this.#reply.ok) return { done: true, value: void 0 };
        throw errorFromReply(this.#channel, this.#reply.value);
      }
      if (this.#finished) return { done: true, value: void 0 };
      await new Promise((resolve) => this.#waiting.push(() => resolve(void 0)));
    }
  }
  /** Stop early: main is told and closes its generator. Called by `break`. */
  async return() {
    this.#stop();
    return { done: (
      /** @type {const} */
      true
    ), value: void 0 };
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
      item: (value) => {
        this.#items.push(value);
        this.#wake();
      },
      settle: (ok, value) => {
        this.#reply = { ok, value };
        this.#cleanup();
        this.#wake();
      },
      fail: (error) => this.#fail(error)
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
    this.#fail(
      /** @type {AbortSignal} */
      this.#signal.reason
    );
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
};

// src/renderer.js
var DisconnectEvent = class extends Event {
  /**
   * @param {number | null} code  main's Goodbye code, or null when the link was lost
   * @param {string} reason
   */
  constructor(code, reason) {
    super("disconnect");
    this.code = code;
    this.reason = reason;
  }
};
function checkChannel(channel) {
  if (typeof channel !== "string") {
    throw new TypeError(`channel must be a string, not ${channel === null ? "null" : typeof channel}`);
  }
  if (channel === "") throw new TypeError("channel must be a non-empty string");
}
function checkFunction(fn, what) {
  if (typeof fn !== "function") throw new TypeError(`${what} must be a function, not ${typeof fn}`);
}
var report = (error) => {
  const reportError = (
    /** @type {any} */
    globalThis.reportError
  );
  if (typeof reportError === "function") reportError(error);
  else console.error("ipcbus: a listener threw", error);
};
var IpcRenderer = class extends EventTarget {
  /** @type {Map<string, {fn: Listener, once: boolean}[]>} */
  #listeners = /* @__PURE__ */ new Map();
  /** @type {Map<string, {fn: Handler, once: boolean}>} */
  #handlers = /* @__PURE__ */ new Map();
  /** @type {Session | null} */
  #session = null;
  /** @type {Promise<void> | null} */
  #connecting = null;
  /** What a Session calls back. */
  #host = {
    deliver: (channel, args, ports) => this.#deliver(channel, args, ports),
    takeHandler: (channel) => {
      const entry = this.#handlers.get(channel);
      if (entry?.once) this.#handlers.delete(channel);
      return entry?.fn;
    },
    invokeEvent: (channel, signal) => ({
      sender: this,
      senderId: 0,
      ports: [],
      channel,
      signal
    }),
    closed: (session, code, reason) => {
      if (session === this.#session) this.#connecting = null;
      this.dispatchEvent(new DisconnectEvent(code, reason));
    }
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
    if (entries !== void 0) {
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
    if (channel === void 0) this.#listeners.clear();
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
    if (entries === void 0) this.#listeners.set(channel, [{ fn: listener, once }]);
    else entries.push({ fn: listener, once });
    return this;
  }
  /** @param {string} channel @param {unknown[]} args @param {any[]} ports @returns {boolean} */
  #deliver(channel, args, ports) {
    const entries = this.#listeners.get(channel);
    if (entries === void 0) return false;
    const event = { sender: this, senderId: 0, ports, channel };
    for (const entry of [...entries]) {
      if (entry.once) this.off(channel, entry.fn);
      try {
        const result = (
          /** @type {any} */
          entry.fn(event, ...args)
        );
        if (typeof result?.then === "function") result.then(void 0, report);
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
    if (timeout !== void 0 && !(typeof timeout === "number" && timeout >= 0 && Number.isFinite(timeout))) {
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
      timeout: options.timeout ?? 1e4
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
      `Cannot ${what} on ${pyRepr(channel)}: the connection to main is closed (${session.closeReason})`
    );
  }
};
function defaultUrl() {
  const location = globalThis.location;
  if (location === void 0) throw new TypeError("no location here: pass connect({ url })");
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
var ipcRenderer = new IpcRenderer();
function connect(options) {
  return ipcRenderer.connect(options);
}
export {
  AuthenticationError,
  CloseCode,
  ConnectionClosedError,
  DEFAULT_MAX_FRAME_SIZE,
  DisconnectEvent,
  FrameTooLargeError,
  IpcError,
  IpcMessageEvent,
  IpcMessagePort,
  IpcRenderer,
  IpcStream,
  IpcTimeoutError,
  NoHandlerError,
  PROTOCOL_VERSION,
  ProtocolError,
  RemoteError,
  SerializationError,
  ValidationError,
  connect,
  ipcRenderer
};
