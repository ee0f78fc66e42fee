// The page side of the ipcbus web example: Electron's ping/pong, an invoke,
// a push from main, and main invoking the page. Loaded as a file (no inline
// scripts: the server's Content-Security-Policy is script-src 'self').
import { ipcRenderer, connect } from "/ipcbus.js";

const log = (text) => {
  const item = document.createElement("li");
  item.textContent = text;
  document.getElementById("log").append(item);
};
const status = (text) => { document.getElementById("status").textContent = text; };

// Registered before connect(): what main sends in on_connect is not lost.
const pushed = new Promise((resolve) =>
  ipcRenderer.on("main-says", (event, arg) => resolve(arg)));
const ponged = new Promise((resolve) =>
  ipcRenderer.on("asynchronous-reply", (event, arg) => resolve(arg)));
// Answers main's contents.invoke("page-title").
ipcRenderer.handle("page-title", () => document.title);
ipcRenderer.addEventListener("disconnect", (event) => status(`disconnected: ${event.reason}`));

async function main() {
  await connect(); // the token comes from location.hash (#token=...)
  log(`connected as renderer ${ipcRenderer.id}`);
  log(`push from main: ${JSON.stringify(await pushed)}`);
  log(`sendSync returned ${JSON.stringify(await ipcRenderer.sendSync("synchronous-message", "ping"))}`);
  ipcRenderer.send("asynchronous-message", "ping");
  log(`asynchronous-reply: ${JSON.stringify(await ponged)}`);
  log(`invoke add(1, 2) = ${await ipcRenderer.invoke("add", 1, 2)}`);
  try {
    await ipcRenderer.invoke("add", 1, "two");
  } catch (error) {
    log(`invoke add(1, "two") failed: ${error.message}`);
  }
  log(`main asked for my title and got ${JSON.stringify(await ipcRenderer.invoke("whats-my-title"))}`);
  status("all round trips done");
  document.body.dataset.done = "yes";
}

main().catch((error) => {
  status(`failed: ${error.message}`);
  document.body.dataset.done = "error";
});
