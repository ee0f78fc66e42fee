import assert from "node:assert/strict";
import { test } from "node:test";
import { IpcMessagePort } from "../src/ports.js";
import { connected, deferred } from "./helpers.js";

test("ports main sends arrive in event.ports and talk both ways", async () => {
  const { ipc, main } = await connected();
  const arrived = deferred();
  ipc.on("port", (event, message) => arrived.resolve([event, message]));
  main.push([3, "port", [{ hello: 1 }], [[5]]]);
  const [event, message] = await arrived.promise;
  assert.deepEqual(message, { hello: 1 });
  assert.equal(event.ports.length, 1);
  const port = event.ports[0];
  assert.ok(port instanceof IpcMessagePort);
  main.push([10, 5, "early", []]); // kept until the port starts
  const got = [];
  port.onmessage = (e) => got.push([e.data, e.ports.length]);
  main.push([10, 5, "late", [[6]]]);
  assert.deepEqual(got, [["early", 0], ["late", 1]]);
  port.postMessage(["echo", 1]);
  assert.deepEqual(await main.next(), [10, 5, ["echo", 1]]);
  assert.throws(() => port.postMessage(() => 1), /the message is a function/);
  assert.throws(() => port.postMessage(1, [port]), TypeError);
});

test("main closing a port is acknowledged and emits 'close'; closing ours tells main", async () => {
  const { ipc, main } = await connected();
  let ports;
  ipc.on("port", (event) => (ports = event.ports));
  main.push([3, "port", [null], [[1], [2]]]);
  const closed = deferred();
  ports[0].addEventListener("close", closed.resolve);
  ports[0].start();
  main.push([11, 1]);
  assert.deepEqual(await main.next(), [11, 1]);
  await closed.promise;
  ports[1].close();
  assert.deepEqual(await main.next(), [11, 2]);
  ports[1].postMessage("ignored"); // a no-op once closed
  main.push([10, 2, "crossed", []]); // crossed our close: given back
  assert.deepEqual(await main.next(), [10, 2, "crossed", [], true]);
});

test("ports on a channel nobody listens to are closed, and a lost connection closes the rest", async () => {
  const { ipc, main } = await connected();
  main.push([3, "nobody", [1], [[3]]]);
  assert.deepEqual(await main.next(), [11, 3]);
  let port;
  ipc.on("p", (event) => (port = event.ports[0]));
  main.push([3, "p", [1], [[4]]]);
  const closed = deferred();
  port.onclose = closed.resolve;
  port.start();
  main.drop();
  await closed.promise;
});

test("postMessage sends a Message with the message as its one argument", async () => {
  const { ipc, main } = await connected();
  ipc.postMessage("pm", { a: 1 });
  assert.deepEqual(await main.next(), [3, "pm", [{ a: 1 }]]);
  assert.throws(() => ipc.postMessage("pm", 1, [{}]), /cannot transfer message ports/);
});

// As the DOM's MessagePort: a port the page lets go of closes its channel, and
// one that is started stays (it could still receive). Run with --expose-gc.
test("a port the page lets go of is collected and closes; a started one is kept", async () => {
  const { ipc, main } = await connected();
  const got = deferred();
  ipc.on("ports", (event) => {
    event.ports[1].onmessage = (e) => got.resolve(e.data); // started: kept
  }); // event.ports[0] is let go of
  main.push([3, "ports", [null], [[7], [8]]]);
  await collectUntil(() => main.pending > 0);
  assert.deepEqual(await main.next(), [11, 7]);
  main.push([10, 8, "still here", []]);
  assert.equal(await got.promise, "still here");
  assert.equal(main.pending, 0);
});

/** Collect garbage, letting finalizers run, until `done()` (at most 100 rounds). */
async function collectUntil(/** @type {() => boolean} */ done) {
  for (let i = 0; i < 100 && !done(); i++) {
    /** @type {any} */ (globalThis).gc();
    await new Promise((resolve) => setImmediate(resolve)); // finalizers run between tasks
  }
  assert.ok(done(), "the port was not collected");
}
