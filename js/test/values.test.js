import assert from "node:assert/strict";
import { test } from "node:test";
import { SerializationError } from "../src/errors.js";
import { decodeBody, encodeBody } from "../src/values.js";
import { connected, hex, toHex } from "./helpers.js";

// Message("values", [...]) as msgspec (ipcbus's encoder) writes it, from
//   [b"\x00\x01\xff", datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=utc), 2**53 + 1,
//    2**64 - 1, -(2**63), 2**40, 1.5, {"a": [1, None, True]}, "é"]
const PYTHON_MESSAGE =
  "9403a676616c75657399c4030001ffd7ffa1a5d60065937d25cf0020000000000001cfffffffffffffffff" +
  "d38000000000000000cf0000010000000000cb3ff800000000000081a1619301c0c3a2c3a990";

const VALUES = () => [
  new Uint8Array([0, 1, 255]),
  new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)),
  2n ** 53n + 1n,
  2n ** 64n - 1n,
  -(2n ** 63n),
  2 ** 40,
  1.5,
  { a: [1, null, true] },
  "é",
];

test("values main sends decode to Uint8Array, Date, BigInt beyond 2^53, numbers otherwise", async () => {
  const { ipc, main } = await connected();
  let got;
  ipc.on("values", (event, ...args) => (got = args));
  main.push(hex(PYTHON_MESSAGE));
  assert.deepEqual(got, VALUES());
  assert.ok(got[0] instanceof Uint8Array);
  assert.equal(typeof got[5], "number");
});

test("the same values sent from the page are byte for byte what Python writes", async () => {
  const { ipc, main } = await connected();
  ipc.send("values", ...VALUES());
  await main.next();
  // Python always writes the optional `ports` field (an empty array, 0x90); the page leaves it out
  assert.equal(toHex(main.raw.at(-1)), `93${PYTHON_MESSAGE.slice(2, -2)}`);
});

test("integers: safe ones are numbers both ways, unsafe ones bigints, 64-bit ints stay ints", () => {
  const cases = [
    [0, 0],
    [-1, -1],
    [2 ** 31, 2 ** 31],
    [-(2 ** 31) - 1, -(2 ** 31) - 1],
    [2 ** 32, 2 ** 32],
    [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
    [Number.MIN_SAFE_INTEGER, Number.MIN_SAFE_INTEGER],
    [2n ** 53n, 2n ** 53n],
    [-(2n ** 53n), -(2n ** 53n)],
    [5n, 5],
    [2 ** 60, 2n ** 60n], // an integral double beyond 2^53 goes as the exact int it is
    [2 ** 70, 2 ** 70], // beyond 64 bits: a float64
    [0.5, 0.5],
  ];
  for (const [sent, back] of cases) {
    assert.deepEqual(decodeBody(encodeBody([sent])), [back], `${sent}`);
  }
  assert.equal(toHex(encodeBody([2 ** 32])), "91cf0000000100000000");
  assert.equal(toHex(encodeBody([-(2 ** 40)])), "91d3ffffff0000000000");
});

test("nested structures and Dates round trip", () => {
  const value = {
    list: [1, "two", [3, { four: new Uint8Array([4]) }]],
    when: new Date(0),
    before: new Date(-1500),
    nothing: null,
    big: { n: 2n ** 63n },
  };
  assert.deepEqual(decodeBody(encodeBody([value])), [value]);
  assert.deepEqual(decodeBody(encodeBody([undefined])), [null]);
});

class Point {
  constructor() {
    this.x = 1;
  }
}

test("an unencodable value is refused before anything is sent, naming channel, argument and path", async () => {
  const { ipc, main } = await connected();
  const circular = { a: [] };
  circular.a.push(circular);
  const cases = [
    [[1, () => 1], /argument 1 is a function/],
    [[{ f: function named() {} }], /argument 0 \(at \.f\) is a function \(named\)/],
    [[Symbol("s")], /argument 0 is a symbol \(Symbol\(s\)\)/],
    [["ok", [0, new Point()]], /argument 1 \(at \[1\]\) is an instance of Point, not a plain object/],
    [[circular], /argument 0 \(at \.a\[0\]\) refers back to a container it is in/],
    [[new Map([["a", 1]])], /argument 0 is a Map; send Object\.fromEntries\(map\) instead/],
    [[new Set([1])], /argument 0 is a Set; send \[\.\.\.set\] instead/],
    [[new Float32Array(2)], /argument 0 is a Float32Array; send its bytes as a Uint8Array instead/],
    [[new ArrayBuffer(2)], /argument 0 is an ArrayBuffer; wrap it as new Uint8Array\(buffer\)/],
    [[2n ** 64n], /argument 0 is the bigint 18446744073709551616, outside -2\^63 \.\. 2\^64-1/],
    [[new Date(NaN)], /argument 0 is an invalid Date/],
  ];
  for (const [args, pattern] of cases) {
    assert.throws(() => ipc.send("ch", ...args), (error) => {
      assert.ok(error instanceof SerializationError, String(error));
      assert.ok(error instanceof TypeError === false);
      assert.match(error.message, /^Cannot send on channel 'ch': /);
      assert.match(error.message, pattern);
      return true;
    });
    await assert.rejects(ipc.invoke("inv", ...args), (error) => {
      assert.equal(error.name, "SerializationError");
      assert.match(error.message, /^Cannot invoke on channel 'inv': /);
      return true;
    });
  }
  assert.throws(() => ipc.postMessage("pm", () => 1), /^SerializationError: Cannot post a message on channel 'pm': the message is a function/);
  let deep = [];
  for (let i = 0; i < 300; i++) deep = [deep];
  assert.throws(() => ipc.send("deep", deep), /nested more than 256 levels deep/);
  // nothing went out, and the request ids were not used up
  const next = ipc.invoke("fine");
  assert.deepEqual(await main.next(), [4, 1, 1, "fine", []]);
  assert.equal(main.pending, 0);
  main.push([5, 1, true, null]);
  await next;
});

test("objects without a prototype and undefined inside objects are fine", async () => {
  const { ipc, main } = await connected();
  const bare = Object.create(null);
  bare.k = "v";
  ipc.send("ok", bare, { u: undefined });
  assert.deepEqual(await main.next(), [3, "ok", [{ k: "v" }, { u: null }]]);
});
