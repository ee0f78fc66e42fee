// The committed bundle (src/ipcbus/web/static/ipcbus.js) exports what src/ does
// and works: one connection with real frames through it.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as bundle from "../../src/ipcbus/web/static/ipcbus.js";
import * as source from "../src/index.js";
import { FakeMain } from "./helpers.js";

test("the bundle exports exactly the source's names", () => {
  assert.deepEqual(Object.keys(bundle).sort(), Object.keys(source).sort());
  assert.equal(new bundle.RemoteError("c", "T", "m").name, "RemoteError");
  assert.equal(new bundle.NoHandlerError("m", "c", "T", "m", null).name, "NoHandlerError");
});

test("the bundle connects, invokes and keeps 64-bit ints and Dates", async () => {
  const ipc = new bundle.IpcRenderer();
  const main = new FakeMain();
  const done = ipc.connect({ url: "ws://h/ipcbus", token: "t", WebSocket: main.WebSocket });
  await main.next();
  main.push([2, 1, 4, 0]);
  await done;
  assert.equal(ipc.id, 4);
  const when = new Date(Date.UTC(2030, 5, 1));
  const result = ipc.invoke("echo", 2n ** 60n, 2 ** 40, when);
  const request = await main.next();
  assert.deepEqual(request, [4, 1, 1, "echo", [2n ** 60n, 2n ** 40n, when]]);
  main.push([5, 1, true, [2n ** 60n, 2n ** 40n, when]]);
  assert.deepEqual(await result, [2n ** 60n, 2 ** 40, when]);
  ipc.close();
});
