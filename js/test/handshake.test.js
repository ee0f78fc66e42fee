import assert from "node:assert/strict";
import { test } from "node:test";
import { AuthenticationError, ConnectionClosedError, IpcTimeoutError, ProtocolError } from "../src/errors.js";
import { IpcRenderer } from "../src/renderer.js";
import { FakeMain, connected, deferred, toHex } from "./helpers.js";

const url = "ws://127.0.0.1:1/ipcbus";

test("Hello carries version 1, the token, process id 0 and our limit; Welcome gives the id", async () => {
  const ipc = new IpcRenderer();
  const main = new FakeMain();
  const done = ipc.connect({ url, token: "s3cret", WebSocket: main.WebSocket });
  assert.equal(ipc.connected, false);
  // [1, 1, "s3cret", 0, 67108864]: the worked example of docs/protocol.md with pid 0
  assert.deepEqual(await main.next(), [1, 1, "s3cret", 0, 67108864]);
  assert.equal(toHex(main.raw[0]), "950101a673336372657400ce04000000");
  assert.equal(main.socket.url, url);
  assert.equal(main.socket.binaryType, "arraybuffer");
  main.push([2, 1, 7, 67108864]);
  await done;
  assert.equal(ipc.id, 7);
  assert.equal(ipc.connected, true);
});

test("a wrong token rejects connect() with AuthenticationError and nothing is retried", async () => {
  const ipc = new IpcRenderer();
  const main = new FakeMain();
  const disconnected = [];
  ipc.addEventListener("disconnect", (event) => disconnected.push(event));
  const done = ipc.connect({ url, token: "wrong", WebSocket: main.WebSocket });
  await main.next();
  main.push([7, 2, "authentication failed: wrong token"]);
  await assert.rejects(done, (error) => {
    assert.ok(error instanceof AuthenticationError);
    assert.equal(error.name, "AuthenticationError");
    assert.match(error.message, /refused the connection: authentication failed: wrong token/);
    assert.match(error.message, /#token=/);
    return true;
  });
  assert.equal(main.closedByClient, true);
  assert.equal(main.pending, 0); // no Goodbye back, no second Hello
  assert.equal(disconnected.length, 0); // never connected, so no "disconnect"
  assert.equal(ipc.connected, false);
  await assert.rejects(ipc.invoke("add", 1), ConnectionClosedError);
});

test("messages main sends in the same burst as Welcome reach early listeners before connect() resolves", async () => {
  const ipc = new IpcRenderer();
  const main = new FakeMain();
  const seen = [];
  ipc.on("hello", (event, value) => seen.push(value));
  const done = ipc.connect({ url, token: "t", WebSocket: main.WebSocket });
  await main.next();
  main.push([2, 1, 1, 0]);
  main.push([3, "hello", ["first"]]);
  main.push([3, "hello", ["second"]]);
  assert.deepEqual(seen, ["first", "second"]);
  await done;
  assert.deepEqual(seen, ["first", "second"]);
});

test("connect() takes the URL and the token from location", async () => {
  const saved = globalThis.location;
  globalThis.location = { protocol: "https:", host: "example.test:8443", hash: "#token=abc%2Fdef" };
  try {
    const ipc = new IpcRenderer();
    const main = new FakeMain();
    const done = ipc.connect({ WebSocket: main.WebSocket });
    const hello = await main.next();
    assert.equal(main.socket.url, "wss://example.test:8443/ipcbus");
    assert.equal(hello[2], "abc/def");
    main.push([2, 1, 3, 0]);
    await done;
    globalThis.location = { protocol: "http:", host: "127.0.0.1:9", hash: "" };
    await assert.rejects(new IpcRenderer().connect({ WebSocket: main.WebSocket }), /no token/);
  } finally {
    globalThis.location = saved;
  }
});

test("connect() while connecting returns the same promise", async () => {
  const ipc = new IpcRenderer();
  const main = new FakeMain();
  const first = ipc.connect({ url, token: "t", WebSocket: main.WebSocket });
  assert.equal(ipc.connect({ url, token: "t", WebSocket: main.WebSocket }), first);
  await main.next();
  main.push([2, 1, 1, 0]);
  await first;
});

test("a Welcome of another version is answered with Goodbye(VERSION_MISMATCH)", async () => {
  const ipc = new IpcRenderer();
  const main = new FakeMain();
  const done = ipc.connect({ url, token: "t", WebSocket: main.WebSocket });
  await main.next();
  main.push([2, 2, 1, 0]);
  await assert.rejects(done, ProtocolError);
  const goodbye = await main.next();
  assert.equal(goodbye[0], 7);
  assert.equal(goodbye[1], 3);
});

test("the link closing during the handshake rejects with ConnectionClosedError", async () => {
  const ipc = new IpcRenderer();
  const main = new FakeMain();
  const done = ipc.connect({ url, token: "t", WebSocket: main.WebSocket });
  await main.next();
  main.drop();
  await assert.rejects(done, (error) => error instanceof ConnectionClosedError && /could not connect/.test(error.message));
});

test("no answer to Hello within the timeout rejects with IpcTimeoutError", async () => {
  const ipc = new IpcRenderer();
  const main = new FakeMain();
  const done = ipc.connect({ url, token: "t", WebSocket: main.WebSocket, timeout: 1 });
  await assert.rejects(done, IpcTimeoutError);
  assert.equal(main.closedByClient, true);
});

test("after a disconnect, connect() opens a new connection and listeners stay", async () => {
  const { ipc, main } = await connected();
  const seen = [];
  ipc.on("x", (event, value) => seen.push(value));
  const gone = deferred();
  ipc.addEventListener("disconnect", gone.resolve, { once: true });
  main.drop();
  await gone.promise;
  const main2 = new FakeMain();
  const done = ipc.connect({ url, token: "t", WebSocket: main2.WebSocket });
  await main2.next();
  main2.push([2, 1, 2, 0]);
  await done;
  assert.equal(ipc.id, 2);
  main2.push([3, "x", [42]]);
  assert.deepEqual(seen, [42]);
});
