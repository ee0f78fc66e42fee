// The page side of web_bench.py, evaluated in the page by Playwright (one
// function expression). It connects, then installs `window.bench`, whose
// phases the orchestrator calls one by one. The timing loops are the same
// code for both contestants; only the three operations differ:
//   call(i)  -> a promise of i + 1    (ipcbus: ipcRenderer.invoke("inc", i))
//   send(v)  -> nothing, one way      (ipcbus: ipcRenderer.send("sink", v))
//   totals() -> a promise of [count, sum] of what the server received
//
// The floor speaks to web_floor.py with the browser's own WebSocket: msgpack
// [id, value] per binary message, written and read by the ten-line codec
// below (ipcbus.js does not export its @msgpack/msgpack encoder, and a
// hand-made codec for two small integers is the cheapest correct one, so
// the floor is the lowest the browser allows). Replies are matched to
// requests by id, as any request/reply protocol must.
async ({ contestant, url }) => {
  let ops;
  if (contestant === "ipcbus") {
    const { ipcRenderer, connect } = await import("/ipcbus.js");
    await connect();
    ops = {
      call: (i) => ipcRenderer.invoke("inc", i),
      send: (v) => ipcRenderer.send("sink", v),
      totals: () => ipcRenderer.invoke("totals"),
    };
  } else {
    const putUint = (out, pos, n) => {
      if (n < 0x80) { out[pos] = n; return pos + 1; }
      if (n < 0x100) { out[pos] = 0xcc; out[pos + 1] = n; return pos + 2; }
      if (n < 0x10000) { out[pos] = 0xcd; out[pos + 1] = n >>> 8; out[pos + 2] = n & 0xff; return pos + 3; }
      out[pos] = 0xce; new DataView(out.buffer).setUint32(pos + 1, n); return pos + 5;
    };
    const encode = (id, value) => {  // [id, value]: id >= 0, value >= -1, both < 2^32
      const out = new Uint8Array(11);
      out[0] = 0x92;
      let pos = putUint(out, 1, id);
      if (value === -1) out[pos++] = 0xff;
      else pos = putUint(out, pos, value);
      return out.subarray(0, pos);
    };
    const decode = (buffer) => {  // a fixarray of unsigned integers
      const b = new Uint8Array(buffer);
      const view = new DataView(buffer);
      if ((b[0] & 0xf0) !== 0x90) throw new Error(`not a fixarray: ${b[0]}`);
      const out = [];
      let pos = 1;
      for (let k = b[0] & 0x0f; k > 0; k--) {
        const t = b[pos];
        if (t < 0x80) { out.push(t); pos += 1; }
        else if (t === 0xcc) { out.push(b[pos + 1]); pos += 2; }
        else if (t === 0xcd) { out.push(view.getUint16(pos + 1)); pos += 3; }
        else if (t === 0xce) { out.push(view.getUint32(pos + 1)); pos += 5; }
        else if (t === 0xcf) { out.push(Number(view.getBigUint64(pos + 1))); pos += 9; }
        else throw new Error(`not an unsigned integer: ${t}`);
      }
      if (pos !== b.length) throw new Error("trailing bytes");
      return out;
    };
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error(`could not open ${url}`));
    });
    const waiting = new Map();
    let nextId = 1;
    socket.onmessage = (event) => {
      const reply = decode(event.data);
      const resolve = waiting.get(reply[0]);
      if (resolve === undefined) throw new Error(`a reply to ${reply[0]}, not awaited`);
      waiting.delete(reply[0]);
      resolve(reply);
    };
    const request = (value) =>
      new Promise((resolve) => {
        const id = nextId++;
        waiting.set(id, resolve);
        socket.send(encode(id, value));
      });
    ops = {
      call: (i) => request(i).then((reply) => reply[1]),
      send: (v) => socket.send(encode(0, v)),
      totals: () => request(-1).then((reply) => reply.slice(1)),
    };
  }

  const { call, send, totals } = ops;
  const check = (got, want, what) => {
    if (got !== want) throw new Error(`${what}: expected ${want}, got ${got}`);
  };
  window.bench = {
    isolated: crossOriginIsolated,  // performance.now() to 5 us when isolated, else 100 us
    // n sequential round trips, each checked; the time of each in ms.
    async invoke(n, timed) {
      const times = timed ? new Float64Array(n) : null;
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        const got = await call(i);
        if (timed) times[i] = performance.now() - t0;
        check(got, i + 1, `inc(${i})`);
      }
      return timed ? Array.from(times) : null;
    },
    // n one-way sends of i & 127, then totals; checked; ms from the first
    // send to the totals' reply.
    async send(n) {
      const [count0, sum0] = await totals();
      let sum = 0;
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        send(i & 127);
        sum += i & 127;
      }
      const [count, total] = await totals();
      const elapsed = performance.now() - t0;
      check(count - count0, n, "messages counted by the server");
      check(total - sum0, sum, "sum of the messages received by the server");
      return elapsed;
    },
  };
  return crossOriginIsolated;
};
