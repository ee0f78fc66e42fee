// Compiled by `tsc --noEmit` (npm test): the declarations describe real use.
import {
  type DisconnectEvent,
  type IpcRendererEvent,
  ConnectionClosedError,
  RemoteError,
  connect,
  ipcRenderer,
} from "../../ipcbus.js";

ipcRenderer.on("asynchronous-reply", (event: IpcRendererEvent, arg: string) => console.log(arg, event.senderId));
ipcRenderer.once("x", () => {}).off("x", () => {});
ipcRenderer.addEventListener("disconnect", (event: DisconnectEvent) => console.log(event.code, event.reason));

async function main(): Promise<void> {
  await connect();
  await connect({ url: "ws://127.0.0.1:8000/ipcbus", token: "t", timeout: 5000 });
  const pong: string = await ipcRenderer.sendSync("synchronous-message", "ping");
  ipcRenderer.send("asynchronous-message", pong);
  const sum: number = await ipcRenderer.invoke("add", 1, 2);
  const controller = new AbortController();
  await ipcRenderer.invokeWith({ timeout: 1000, signal: controller.signal }, "add", sum, 2n ** 60n);
  ipcRenderer.handle("title", async (event) => {
    event.signal.throwIfAborted();
    return document.title;
  });
  ipcRenderer.handle("ticks", async function* (_event, n: number) {
    for (let i = 0; i < n; i++) yield i;
  });
  for await (const value of ipcRenderer.stream("numbers", 10)) {
    if (value > 5) break;
  }
  ipcRenderer.postMessage("note", { when: new Date(), bytes: new Uint8Array(2) });
  ipcRenderer.on("port", (event) => {
    const port = event.ports[0];
    port.onmessage = (message) => port.postMessage(message.data);
  });
  try {
    await ipcRenderer.invoke("fail");
  } catch (error) {
    if (error instanceof RemoteError) console.log(error.remoteType, error.remoteTraceback);
    if (error instanceof ConnectionClosedError) console.log(error.name);
  }
  const id: number = ipcRenderer.id;
  ipcRenderer.close();
  void id;
}
void main;
