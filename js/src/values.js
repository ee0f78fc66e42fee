// Values on the wire: msgpack with ipcbus's mapping (docs/protocol.md, "Values").
//
// JS -> msgpack: null/undefined -> nil, boolean, number (an integer as int, else
// float64), bigint -> int (-2^63 .. 2^64-1), string, Uint8Array/ArrayBuffer -> bin,
// Date -> timestamp (extension -1), Array -> array, plain object and Map -> map.
// msgpack -> JS: the same back; an int that fits Number.MAX_SAFE_INTEGER is a
// number, a larger one a bigint; bin is a Uint8Array; a timestamp a Date.
//
// Everything else (functions, symbols, class instances, Map, Set, ArrayBuffer and
// the other typed arrays, circular structures) is refused by checkArgs() before anything is encoded,
// with an error naming the channel, the argument and the path inside it.

import { Decoder, Encoder } from "@msgpack/msgpack";
import { SerializationError, pyRepr } from "./errors.js";

/** Deepest nesting of one argument that checkArgs() accepts. */
export const MAX_DEPTH = 256;

const INT64_MIN = -(2n ** 63n);
const UINT64_MAX = 2n ** 64n - 1n;
const TWO_32 = 2 ** 32;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);

// @msgpack/msgpack's `useBigInt64` writes a bigint as int64/uint64 and reads
// every int64/uint64 as a bigint, but it also writes an integer *number*
// beyond 32 bits as a float64. ipcbus wants ints to stay ints both ways and
// only the unsafe ones to be bigints, so these two subclasses adjust exactly
// those three hooks (the library is pinned in package-lock.json and
// test/values.test.js checks each boundary).
// (typed `any`: the hooks are private in the library's TypeScript declarations)
const BaseEncoder = /** @type {any} */ (Encoder);
const BaseDecoder = /** @type {any} */ (Decoder);

class IpcEncoder extends BaseEncoder {
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
}

class IpcDecoder extends BaseDecoder {
  readU64AsBigInt() {
    const value = super.readU64AsBigInt();
    return value <= MAX_SAFE ? Number(value) : value;
  }

  readI64AsBigInt() {
    const value = super.readI64AsBigInt();
    return value >= MIN_SAFE && value <= MAX_SAFE ? Number(value) : value;
  }
}

/** @type {Encoder} */
const encoder = new /** @type {any} */ (IpcEncoder)({ useBigInt64: true, maxDepth: MAX_DEPTH + 8 });
/** @type {Decoder} */
const decoder = new /** @type {any} */ (IpcDecoder)({ useBigInt64: true });

/**
 * Encode one frame body (an array, tag first) to msgpack bytes.
 * @param {unknown[]} body
 * @returns {Uint8Array}
 */
export function encodeBody(body) {
  return encoder.encode(body);
}

/**
 * Decode one frame body; throws on bytes that are not exactly one msgpack value.
 * @param {ArrayBuffer | Uint8Array} data
 * @returns {unknown}
 */
export function decodeBody(data) {
  return decoder.decode(data);
}

const SUPPORTED =
  "null, undefined, boolean, number, bigint (-2^63 .. 2^64-1), string, Uint8Array, " +
  "Date, Array and plain objects";

/**
 * Check that every argument can be sent; throw a SerializationError naming the
 * channel, the argument and where inside it the bad value sits.
 * @param {string} what  the action, e.g. "invoke"
 * @param {string} channel
 * @param {unknown[]} args
 */
export function checkArgs(what, channel, args) {
  for (let index = 0; index < args.length; index++) {
    checkValue(what, channel, args[index], `argument ${index}`);
  }
}

/**
 * Check one value, named `name` in the error ("argument 1", "the result").
 * @param {string} what @param {string} channel @param {unknown} value @param {string} name
 */
export function checkValue(what, channel, value, name) {
  const problem = check(value, "", 0, []);
  if (problem !== null) {
    const where = problem.path ? ` (at ${problem.path})` : "";
    throw new SerializationError(
      `Cannot ${what} on channel ${pyRepr(channel)}: ${name}${where} ${problem.why}. ` +
        `Supported types are ${SUPPORTED}.`,
    );
  }
}

/**
 * @param {unknown} value
 * @param {string} path
 * @param {number} depth
 * @param {object[]} parents  the containers above `value` (to find cycles)
 * @returns {{path: string, why: string} | null}
 */
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
  const object = /** @type {object} */ (value);
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
      why: `is a ${object.constructor.name}; send its bytes as a Uint8Array instead`,
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

/** @param {unknown} value */
function typeOf(value) {
  if (value === null) return "null";
  if (typeof value !== "object") return typeof value;
  const name = /** @type {any} */ (value).constructor?.name;
  return name ? `an instance of ${name}` : "an object with a foreign prototype";
}
