import assert from "node:assert/strict";
import { test } from "node:test";
import { connected, deferred } from "./helpers.js";

test("handle answers main's Request (contents.invoke) with the handler's value", async () => {
  const { ipc, main } = await connected();
  const seen = [];
  ipc.handle("title", async (event, prefix) => {
    seen.push([event.sender === ipc, event.senderId, event.channel, event.ports]);
    return `${prefix}: page`;
  });
  main.push([4, 1, 1, "title", ["T"]]);
  assert.deepEqual(await main.next(), [5, 1, true, "T: page"]);
  assert.deepEqual(seen, [[true, 0, "title", []]]);
});

test("a handler that throws is answered with ErrorInfo(REMOTE, name, message, stack)", async () => {
  const { ipc, main } = await connected();
  ipc.handle("bad", () => {
    throw new RangeError("too far");
  });
  ipc.handle("reject", () => Promise.reject("plain"));
  main.push([4, 1, 1, "bad", []]);
  const [tag, id, ok, info] = await main.next();
  assert.deepEqual([tag, id, ok, info[0], info[1], info[2]], [5, 1, false, 1, "RangeError", "too far"]);
  assert.match(info[3], /^RangeError: too far\n/);
  main.push([4, 2, 1, "reject", []]);
  assert.deepEqual(await main.next(), [5, 2, false, [1, "Error", "plain", null]]);
});

test("no handler: ErrorInfo(NO_HANDLER) with the Python renderer's text", async () => {
  const { ipc, main } = await connected();
  main.push([4, 1, 1, "x", []]);
  assert.deepEqual(await main.next(), [5, 1, false, [2, "NoHandlerError", "No handler registered for 'x'", null]]);
  ipc.handleOnce("once", () => "first");
  main.push([4, 2, 1, "once", []]);
  assert.deepEqual(await main.next(), [5, 2, true, "first"]);
  main.push([4, 3, 1, "once", []]);
  assert.equal((await main.next())[3][0], 2);
  ipc.handle("gone", () => 1);
  ipc.removeHandler("gone");
  main.push([4, 4, 1, "gone", []]);
  assert.equal((await main.next())[3][0], 2);
  assert.throws(() => {
    ipc.handle("dup", () => 1);
    ipc.handle("dup", () => 2);
  }, /Attempted to register a second handler for 'dup'/);
});

test("a result that cannot be sent is answered with a SerializationError", async () => {
  const { ipc, main } = await connected();
  ipc.handle("fn", () => () => 1);
  main.push([4, 1, 1, "fn", []]);
  const reply = await main.next();
  assert.deepEqual(reply.slice(0, 3), [5, 1, false]);
  assert.equal(reply[3][1], "SerializationError");
  assert.match(reply[3][2], /^Cannot reply on channel 'fn': the result is a function/);
});

test("main's Cancel is acknowledged at once and aborts the handler's event.signal", async () => {
  const { ipc, main } = await connected();
  const started = deferred();
  const aborted = deferred();
  let finish;
  ipc.handle("slow", (event) => {
    event.signal.addEventListener("abort", () => aborted.resolve(event.signal.reason));
    started.resolve();
    return new Promise((resolve) => (finish = resolve));
  });
  main.push([4, 1, 1, "slow", []]);
  await started.promise;
  main.push([6, 1]);
  assert.deepEqual(await main.next(), [5, 1, false, [4, "CancelledError", "cancelled by the caller", null]]);
  await aborted.promise;
  finish("late");
  main.push([6, 1]); // a second Cancel for an answered id: ignored
  main.push([8, 99]);
  assert.deepEqual(await main.next(), [9, 99]); // and the late result was never sent
  assert.equal(main.pending, 0);
});

test("Ping is answered with Pong of the same nonce", async () => {
  const { main } = await connected();
  main.push([8, 7]);
  assert.deepEqual(await main.next(), [9, 7]);
});

test("protocol violations end the connection with Goodbye(PROTOCOL_ERROR) and fire 'disconnect'", async () => {
  const cases = [
    [[5, 9, true, null], "protocol error: a Reply to request id 9, which is not awaited"],
    [[99], "protocol error: an unexpected frame (tag 99) while open"],
    [new Uint8Array([0xc1]), /^protocol error: a malformed frame/],
    [[4, 0, 1, "x", []], "protocol error: request id 0 reused or out of order (last was 0)"],
    [[6, 5], "protocol error: a Cancel for request id 5, which was never sent"],
    [[12, 1, "x"], "protocol error: a StreamItem for request id 1, which is not a stream of ours"],
    [[2, 1, 1, 0], "protocol error: an unexpected frame (tag 2) while open"],
    [[5, 1, 1, null], "protocol error: a malformed Reply"],
  ];
  for (const [frame, reason] of cases) {
    const { ipc, main } = await connected();
    const gone = deferred();
    ipc.addEventListener("disconnect", gone.resolve);
    main.push(frame);
    const goodbye = await main.next();
    assert.equal(goodbye[0], 7);
    assert.equal(goodbye[1], 1);
    if (typeof reason === "string") assert.equal(goodbye[2], reason);
    else assert.match(goodbye[2], reason);
    assert.equal((await gone.promise).code, 1);
    assert.equal(main.closedByClient, true);
  }
});

test("listener errors are reported and do not stop the other listeners", async () => {
  const { ipc, main } = await connected();
  const reported = [];
  const saved = globalThis.reportError;
  globalThis.reportError = (error) => reported.push(error.message);
  try {
    const seen = [];
    const a = () => {
      throw new Error("listener a");
    };
    ipc.on("ch", a);
    ipc.on("ch", (event, v) => seen.push(v));
    ipc.once("ch", (event, v) => seen.push(`once ${v}`));
    assert.equal(ipc.listenerCount("ch"), 3);
    main.push([3, "ch", [1]]);
    main.push([3, "ch", [2]]);
    assert.deepEqual(seen, [1, "once 1", 2]);
    assert.deepEqual(reported, ["listener a", "listener a"]);
    ipc.off("ch", a);
    assert.equal(ipc.listenerCount("ch"), 1);
    ipc.removeAllListeners("ch");
    assert.equal(ipc.listenerCount("ch"), 0);
  } finally {
    globalThis.reportError = saved;
  }
});
