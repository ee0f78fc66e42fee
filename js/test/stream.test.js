import assert from "node:assert/strict";
import { test } from "node:test";
import { ConnectionClosedError, RemoteError } from "../src/errors.js";
import { connected, deferred } from "./helpers.js";

test("for await over a stream: items as credit allows, then the end", async () => {
  const { ipc, main } = await connected();
  const got = [];
  const loop = (async () => {
    for await (const value of ipc.streamWith({ window: 4 }, "numbers", 6)) got.push(value);
  })();
  assert.deepEqual(await main.next(), [4, 1, 3, "numbers", [6]]);
  assert.deepEqual(await main.next(), [13, 1, 4]); // the first window
  for (let i = 0; i < 4; i++) main.push([12, 1, i]);
  assert.deepEqual(await main.next(), [13, 1, 2]); // half a window taken: granted again
  assert.deepEqual(await main.next(), [13, 1, 2]);
  main.push([12, 1, 4]);
  main.push([12, 1, 5]);
  main.push([5, 1, true, null]);
  await loop;
  assert.deepEqual(got, [0, 1, 2, 3, 4, 5]);
});

test("items beyond the granted credit are a protocol error", async () => {
  const { ipc, main } = await connected();
  const stream = ipc.streamWith({ window: 1 }, "n");
  const first = stream.next();
  assert.deepEqual(await main.next(), [4, 1, 3, "n", []]);
  assert.deepEqual(await main.next(), [13, 1, 1]);
  main.push([12, 1, "a"]);
  main.push([12, 1, "b"]); // before the loop took "a": no credit left
  const goodbye = await main.next();
  assert.deepEqual(goodbye, [7, 1, "protocol error: a StreamItem for request id 1 beyond the credit granted"]);
  assert.deepEqual(await first, { done: false, value: "a" });
  await assert.rejects(stream.next(), ConnectionClosedError);
});

test("break sends Cancel; the items and Reply still on their way are dropped", async () => {
  const { ipc, main } = await connected();
  const got = [];
  const loop = (async () => {
    for await (const value of ipc.stream("forever")) {
      got.push(value);
      if (value === 2) break;
    }
  })();
  assert.deepEqual(await main.next(), [4, 1, 3, "forever", []]);
  assert.deepEqual(await main.next(), [13, 1, 32]);
  for (let i = 0; i < 5; i++) main.push([12, 1, i]);
  await loop;
  assert.deepEqual(got, [0, 1, 2]);
  assert.deepEqual(await main.next(), [6, 1]);
  main.push([12, 1, 5]); // crossed the Cancel
  main.push([5, 1, false, [4, "CancelledError", "cancelled by the caller", null]]);
  main.push([8, 1]);
  assert.deepEqual(await main.next(), [9, 1]); // still open, nothing else sent
  assert.equal(ipc.connected, true);
});

test("an error in main's generator ends the loop with a RemoteError after the items before it", async () => {
  const { ipc, main } = await connected();
  const got = [];
  const loop = (async () => {
    for await (const value of ipc.stream("boom")) got.push(value);
  })();
  await main.next();
  await main.next();
  main.push([12, 1, "x"]);
  main.push([5, 1, false, [1, "ValueError", "boom", null]]);
  await assert.rejects(loop, (error) => error instanceof RemoteError && error.message === "Error invoking remote method 'boom': ValueError: boom");
  assert.deepEqual(got, ["x"]);
});

test("aborting a stream's signal sends Cancel and rejects the waiting loop", async () => {
  const { ipc, main } = await connected();
  const controller = new AbortController();
  const loop = (async () => {
    for await (const value of ipc.streamWith({ signal: controller.signal }, "s")) void value;
  })();
  await main.next();
  await main.next();
  controller.abort();
  await assert.rejects(loop, { name: "AbortError" });
  assert.deepEqual(await main.next(), [6, 1]);
});

test("a lost connection ends a stream with ConnectionClosedError; a stream opened later rejects", async () => {
  const { ipc, main } = await connected();
  const loop = (async () => {
    for await (const value of ipc.stream("s")) void value;
  })();
  await main.next();
  await main.next();
  main.drop();
  await assert.rejects(loop, ConnectionClosedError);
  await assert.rejects(ipc.stream("s").next(), ConnectionClosedError);
});

test("a page handler can serve main's stream request with an async generator, within credit", async () => {
  const { ipc, main } = await connected();
  const closed = deferred();
  ipc.handle("ticks", async function* (event, n) {
    try {
      for (let i = 0; i < n; i++) yield i;
    } finally {
      closed.resolve();
    }
  });
  main.push([4, 1, 3, "ticks", [5]]);
  main.push([13, 1, 2]);
  assert.deepEqual(await main.next(), [12, 1, 0]);
  assert.deepEqual(await main.next(), [12, 1, 1]);
  main.push([13, 1, 10]);
  assert.deepEqual(await main.next(), [12, 1, 2]);
  assert.deepEqual(await main.next(), [12, 1, 3]);
  assert.deepEqual(await main.next(), [12, 1, 4]);
  assert.deepEqual(await main.next(), [5, 1, true, null]);
  await closed.promise;
});

test("main's Cancel stops a page generator (its finally runs)", async () => {
  const { ipc, main } = await connected();
  const closed = deferred();
  ipc.handle("endless", async function* () {
    try {
      for (let i = 0; ; i++) yield i;
    } finally {
      closed.resolve();
    }
  });
  main.push([4, 1, 3, "endless", []]);
  main.push([13, 1, 1]);
  assert.deepEqual(await main.next(), [12, 1, 0]);
  main.push([6, 1]);
  assert.deepEqual(await main.next(), [5, 1, false, [4, "CancelledError", "cancelled by the caller", null]]);
  await closed.promise;
});
