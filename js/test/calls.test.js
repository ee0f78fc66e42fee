import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ConnectionClosedError,
  FrameTooLargeError,
  IpcTimeoutError,
  NoHandlerError,
  RemoteError,
  ValidationError,
} from "../src/errors.js";
import { IpcRenderer } from "../src/renderer.js";
import { FakeMain, connected, deferred, hex, toHex } from "./helpers.js";

test("send puts one Message frame on the wire", async () => {
  const { ipc, main } = await connected();
  assert.equal(ipc.send("asynchronous-message", "ping", 2), undefined);
  assert.deepEqual(await main.next(), [3, "asynchronous-message", ["ping", 2]]);
  ipc.send("nothing");
  assert.deepEqual(await main.next(), [3, "nothing", []]);
});

test("sendSync is a Promise of the listeners' return value (Request kind SYNC)", async () => {
  const { ipc, main } = await connected();
  const answer = ipc.sendSync("synchronous-message", "ping");
  assert.deepEqual(await main.next(), [4, 1, 2, "synchronous-message", ["ping"]]);
  main.push([5, 1, true, "pong"]);
  assert.equal(await answer, "pong");
});

test("invoke: the exact bytes of docs/protocol.md's worked example", async () => {
  const { ipc, main } = await connected();
  const result = ipc.invoke("add", 1, 2);
  await main.next();
  assert.equal(toHex(main.raw.at(-1)), "95040101a3616464920102");
  main.push(hex("940501c303"));
  assert.equal(await result, 3);
});

test("a failed invoke rejects with Electron's text and keeps the remote type", async () => {
  const { ipc, main } = await connected();
  const result = ipc.invoke("add", 1);
  await main.next();
  // Reply(1, false, ErrorInfo(REMOTE, "ValueError", "boom", traceback)), as msgspec encodes it
  main.push(
    hex(
      "940501c29401aa56616c75654572726f72a4626f6f6dd92654726163656261636b20286d6f737420726563656e742063616c6c206c617374293a0a2e2e2e",
    ),
  );
  await assert.rejects(result, (error) => {
    assert.ok(error instanceof RemoteError);
    assert.ok(error instanceof Error);
    assert.equal(error.message, "Error invoking remote method 'add': ValueError: boom");
    assert.equal(error.name, "RemoteError");
    assert.equal(error.channel, "add");
    assert.equal(error.remoteType, "ValueError");
    assert.equal(error.remoteMessage, "boom");
    assert.equal(error.remoteTraceback, "Traceback (most recent call last):\n...");
    return true;
  });
});

test("channel names are quoted as Python's repr quotes them", async () => {
  const { ipc, main } = await connected();
  const result = ipc.invoke("it's");
  await main.next();
  main.push([5, 1, false, [1, "KeyError", "'x'", null]]);
  await assert.rejects(result, { message: `Error invoking remote method "it's": KeyError: 'x'`, remoteTraceback: null });
});

test("no handler and invalid arguments reject with main's message", async () => {
  const { ipc, main } = await connected();
  const missing = ipc.invoke("x");
  const invalid = ipc.invoke("typed", "a");
  await main.next();
  await main.next();
  main.push([5, 1, false, [2, "NoHandlerError", "No handler registered for 'x'", null]]);
  main.push([5, 2, false, [3, "ValidationError", "Invalid arguments for 'typed': Expected `int`, got `str`", null]]);
  await assert.rejects(missing, (error) => {
    assert.ok(error instanceof NoHandlerError);
    assert.equal(error.message, "No handler registered for 'x'");
    assert.equal(error.name, "NoHandlerError");
    assert.equal(error.remoteType, "NoHandlerError");
    assert.equal(error.channel, "x");
    return true;
  });
  await assert.rejects(invalid, { name: "ValidationError", message: "Invalid arguments for 'typed': Expected `int`, got `str`" });
  await assert.rejects(Promise.reject(new ValidationError("m", "c", "t", "m", null)), ValidationError);
});

test("an ErrorInfo that cannot be read becomes a RemoteError of type ProtocolError", async () => {
  const { ipc, main } = await connected();
  const result = ipc.invoke("odd");
  await main.next();
  main.push([5, 1, false, "not an ErrorInfo"]);
  await assert.rejects(result, { remoteType: "ProtocolError", message: "Error invoking remote method 'odd': ProtocolError: the error reply could not be decoded" });
  assert.equal(ipc.connected, true);
});

test("replies are matched by id, in any order", async () => {
  const { ipc, main } = await connected();
  const a = ipc.invoke("a");
  const b = ipc.invoke("b");
  assert.deepEqual((await main.next()).slice(0, 2), [4, 1]);
  assert.deepEqual((await main.next()).slice(0, 2), [4, 2]);
  main.push([5, 2, true, "B"]);
  main.push([5, 1, true, "A"]);
  assert.deepEqual(await Promise.all([a, b]), ["A", "B"]);
});

test("invokeWith timeout: rejects with IpcTimeoutError and sends Cancel; the late Reply is dropped", async () => {
  const { ipc, main } = await connected();
  const result = ipc.invokeWith({ timeout: 5 }, "slow", 1);
  assert.deepEqual(await main.next(), [4, 1, 1, "slow", [1]]);
  await assert.rejects(result, (error) => {
    assert.ok(error instanceof IpcTimeoutError);
    assert.equal(error.message, "invoke 'slow': no reply within 5 ms");
    return true;
  });
  assert.deepEqual(await main.next(), [6, 1]);
  main.push([5, 1, false, [4, "CancelledError", "cancelled by the caller", null]]);
  assert.equal(ipc.connected, true); // the acknowledgement is not a protocol error
  const next = ipc.invoke("fast");
  assert.deepEqual((await main.next()).slice(0, 2), [4, 2]);
  main.push([5, 2, true, "ok"]);
  assert.equal(await next, "ok");
});

test("invokeWith signal: aborting sends Cancel and rejects with the signal's reason", async () => {
  const { ipc, main } = await connected();
  const controller = new AbortController();
  const result = ipc.invokeWith({ signal: controller.signal }, "slow");
  await main.next();
  controller.abort();
  await assert.rejects(result, { name: "AbortError" });
  assert.deepEqual(await main.next(), [6, 1]);
  const reason = new Error("changed my mind");
  const other = new AbortController();
  const second = ipc.invokeWith({ signal: other.signal, timeout: 60_000 }, "slow");
  await main.next();
  other.abort(reason);
  await assert.rejects(second, (error) => error === reason);
  assert.deepEqual(await main.next(), [6, 2]);
});

test("invokeWith with an aborted signal sends nothing", async () => {
  const { ipc, main } = await connected();
  await assert.rejects(ipc.invokeWith({ signal: AbortSignal.abort() }, "x"), { name: "AbortError" });
  await assert.rejects(ipc.invokeWith({ timeout: -1 }, "x"), RangeError);
  ipc.send("marker");
  assert.deepEqual(await main.next(), [3, "marker", []]);
});

test("a lost connection rejects every pending call, fires 'disconnect', and later calls reject at once", async () => {
  const { ipc, main } = await connected();
  const events = [];
  ipc.addEventListener("disconnect", (event) => events.push(event));
  const pending = [ipc.invoke("a"), ipc.sendSync("b"), ipc.invokeWith({ timeout: 60_000 }, "c")];
  for (let i = 0; i < 3; i++) await main.next();
  main.drop();
  for (const call of pending) {
    await assert.rejects(call, (error) => {
      assert.ok(error instanceof ConnectionClosedError);
      assert.match(error.message, /^connection to main closed before '[abc]' replied \(connection lost/);
      return true;
    });
  }
  assert.equal(events.length, 1);
  assert.equal(events[0].type, "disconnect");
  assert.equal(events[0].code, null);
  assert.match(events[0].reason, /connection lost \(WebSocket closed with code 1006\)/);
  assert.equal(ipc.connected, false);
  assert.equal(ipc.id, 0);
  await assert.rejects(ipc.invoke("a"), { name: "ConnectionClosedError", message: /the connection to main is closed/ });
  assert.throws(() => ipc.send("a"), ConnectionClosedError);
});

test("main's Goodbye fires 'disconnect' with its code and reason", async () => {
  const { ipc, main } = await connected();
  const gone = deferred();
  ipc.addEventListener("disconnect", gone.resolve);
  const pending = ipc.invoke("a");
  await main.next();
  main.push([7, 5, "main is shutting down"]);
  const event = await gone.promise;
  assert.equal(event.code, 5);
  assert.equal(event.reason, "main is shutting down");
  await assert.rejects(pending, /replied \(main is shutting down\)/);
  assert.equal(main.closedByClient, true);
});

test("close() sends Goodbye(NORMAL) and fires 'disconnect'", async () => {
  const { ipc, main } = await connected();
  const gone = deferred();
  ipc.addEventListener("disconnect", gone.resolve);
  ipc.close();
  assert.deepEqual(await main.next(), [7, 0, "the renderer disconnected"]);
  assert.equal((await gone.promise).code, 0);
});

test("calls before connect() reject at once", async () => {
  const ipc = new IpcRenderer();
  await assert.rejects(ipc.invoke("add", 1), { name: "ConnectionClosedError", message: "Cannot invoke on 'add': not connected; await connect() first" });
  assert.throws(() => ipc.send("x"), ConnectionClosedError);
  assert.throws(() => ipc.send(""), TypeError);
  assert.throws(() => ipc.send(42), TypeError);
});

test("a frame over main's announced limit is refused before anything is sent", async () => {
  const { ipc, main } = await connected({ maxFrameSize: 100 });
  await assert.rejects(ipc.invoke("big", new Uint8Array(200)), (error) => {
    assert.ok(error instanceof FrameTooLargeError);
    assert.match(error.message, /^Cannot invoke on channel 'big': frame of \d+ bytes exceeds the limit of 100 bytes; nothing was sent/);
    return true;
  });
  assert.throws(() => ipc.send("big", "x".repeat(200)), FrameTooLargeError);
  const ok = ipc.invoke("small", 1);
  assert.deepEqual(await main.next(), [4, 1, 1, "small", [1]]); // id 1: the refused call used none
  main.push([5, 1, true, null]);
  assert.equal(await ok, null);
});

test("a frame over our own limit ends the connection with Goodbye(FRAME_TOO_LARGE)", async () => {
  const ipc = new IpcRenderer();
  const main = new FakeMain();
  const done = ipc.connect({ url: "ws://h/ipcbus", token: "t", WebSocket: main.WebSocket, maxFrameSize: 64 });
  assert.equal((await main.next())[4], 64);
  main.push([2, 1, 1, 0]);
  await done;
  const gone = deferred();
  ipc.addEventListener("disconnect", gone.resolve);
  main.push([3, "x", ["y".repeat(100)]]);
  const goodbye = await main.next();
  assert.deepEqual(goodbye.slice(0, 2), [7, 4]);
  assert.equal(goodbye[2], "frame of 107 bytes exceeds the limit of 64 bytes");
  assert.equal((await gone.promise).code, 4);
});
