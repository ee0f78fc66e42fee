"""A web page in headless Chromium as an ipcbus renderer, beside a raw WebSocket floor.

    python benchmarks/web_bench.py [--quick] [--loop asyncio|uvloop|both] [--repeat N]

Two things a page does, timed in the page with ``performance.now()``:

* **invoke**: sequential ``await ipcRenderer.invoke("inc", i)``, each result
  checked, after a warm-up: the round trip's median and p99, in microseconds.
* **send**: ``ipcRenderer.send("sink", v)`` N times, then one invoke that
  returns the count and sum main received, checked: messages per second,
  from the first send to that reply.

The floor (``web_floor.py``) is a WebSocket server on the same libraries
(h11 + wsproto over anyio) and loop, with no ipcbus: the page talks to it
with the browser's ``WebSocket`` directly, msgpack ``[id, value]`` messages,
a request whose reply it awaits for invoke and a one-way message the server
counts for send (``web_page.js`` holds both page sides; the timing loops are
the same code). Each run starts a fresh server process and a fresh browser
context; runs alternate floor and ipcbus, loop by loop (``--repeat N``
interleaves N rounds and shows medians: the machine is shared and noisy).

The page is made cross-origin isolated (COOP/COEP headers added to the
document's response by Playwright), so ``performance.now()`` has 5 µs steps
rather than 100 µs. Chromium is the system's (``/usr/bin/chromium``), driven
by Playwright; never ``playwright install``. Also prints each server's CPU
time per call or message (``/proc``), steadier than the times on a busy machine.

Internal: ``--serve floor|ipcbus --loop L`` is a server process; it prints
one JSON line and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import emit, percentile  # noqa: E402

CONTESTANTS = ("floor", "ipcbus")
LOOPS = ("asyncio", "uvloop")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The document comes back through Playwright (to add COOP/COEP), so it has
    # no IP address and Chromium's Local Network Access checks take it for a
    # public page and block its WebSocket to 127.0.0.1. Nothing else changes.
    "--disable-features=LocalNetworkAccessChecks",
]
ISOLATION = {
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
}
PHASE_TIMEOUT = 120.0


@dataclass(frozen=True)
class Params:
    invoke_warmup: int
    invoke_calls: int
    send_warmup: int
    send_count: int

    @classmethod
    def make(cls, quick: bool) -> Params:
        if quick:
            return cls(invoke_warmup=300, invoke_calls=1_000, send_warmup=2_000, send_count=20_000)
        return cls(invoke_warmup=1_000, invoke_calls=5_000, send_warmup=5_000, send_count=100_000)


class RunFailed(Exception):
    """A run that posts no number (a wrong reply, a lost message, a timeout)."""


# ---- the servers (child processes) ------------------------------------------------


def _run(main: Any, loop: str) -> None:
    import anyio

    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": loop == "uvloop"})


async def _until_stdin_closes() -> None:
    import anyio.to_thread

    await anyio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


async def _serve_floor() -> None:
    import anyio
    import web_floor

    listener, port = await web_floor.serve()
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, web_floor.connection)
        emit(
            {
                "page": f"http://127.0.0.1:{port}/",
                "ws": f"ws://127.0.0.1:{port}{web_floor.PATH.decode()}",
                "pid": os.getpid(),
            }
        )
        await _until_stdin_closes()
        tg.cancel_scope.cancel()


async def _serve_ipcbus() -> None:
    from ipcbus import IpcMain

    ipc_main = IpcMain(shutdown_grace=1.0)
    counts = [0, 0]

    def inc(event: Any, x: int) -> int:
        return x + 1

    def sink(event: Any, x: int) -> None:
        counts[0] += 1
        counts[1] += x

    def totals(event: Any) -> list[int]:
        return counts

    ipc_main.handle("inc", inc)
    ipc_main.on("sink", sink)
    ipc_main.handle("totals", totals)
    with tempfile.TemporaryDirectory(prefix="web_bench") as static:
        with open(os.path.join(static, "index.html"), "w") as index:  # noqa: ASYNC230
            index.write("<!doctype html><meta charset=utf-8><title>web_bench ipcbus</title>")
        async with ipc_main:
            web = await ipc_main.serve_web(static)
            emit({"page": web.url, "ws": "", "pid": os.getpid()})
            await _until_stdin_closes()


def serve(contestant: str, loop: str) -> None:
    _run(_serve_floor if contestant == "floor" else _serve_ipcbus, loop)


# ---- the orchestrator ---------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _start_server(contestant: str, loop: str) -> tuple[asyncio.subprocess.Process, dict]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "web_bench.py"),
        "--serve",
        contestant,
        "--loop",
        loop,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        info = json.loads(line)
    except (TimeoutError, json.JSONDecodeError) as exc:
        await _stop_server(process)
        raise RunFailed(f"the {contestant} server did not start: {exc!r}") from None
    return process, info


async def _stop_server(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _isolate(route: Any) -> None:
    """The document, as served, plus COOP/COEP: performance.now() to 5 µs."""
    response = await route.fetch()
    await route.fulfill(response=response, headers={**response.headers, **ISOLATION})


async def run_one(browser: Any, contestant: str, loop: str, p: Params, page_js: str) -> dict:
    process, info = await _start_server(contestant, loop)
    pid = info["pid"]
    context = await browser.new_context()
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        document = urlsplit(info["page"])
        await page.route(lambda url: urlsplit(url)[:3] == document[:3], _isolate)

        async def phase(script: str, arg: Any = None) -> Any:
            try:
                return await asyncio.wait_for(page.evaluate(script, arg), PHASE_TIMEOUT)
            except TimeoutError:
                raise RunFailed(f"no answer within {PHASE_TIMEOUT:.0f} s {errors}") from None
            except Exception as exc:  # the page's error, as Playwright reports it
                first = str(exc).splitlines()[0]
                raise RunFailed(first + (f" {errors}" if errors else "")) from None

        await page.goto(info["page"])
        isolated = await phase(page_js, {"contestant": contestant, "url": info["ws"]})
        if not isolated:
            raise RunFailed("the page is not cross-origin isolated: performance.now() is coarse")
        await phase("n => bench.invoke(n, false)", p.invoke_warmup)
        cpu0 = _cpu_seconds(pid)
        times = await phase("n => bench.invoke(n, true)", p.invoke_calls)
        cpu1 = _cpu_seconds(pid)
        await phase("n => bench.send(n)", p.send_warmup)
        cpu2 = _cpu_seconds(pid)
        elapsed_ms = await phase("n => bench.send(n)", p.send_count)
        cpu3 = _cpu_seconds(pid)
    finally:
        await context.close()
        await _stop_server(process)
    us = sorted(t * 1000 for t in times)
    return {
        "invoke_p50": percentile(us, 0.5),
        "invoke_p99": percentile(us, 0.99),
        "invoke_cpu": (cpu1 - cpu0) * 1e6 / p.invoke_calls,
        "send_rate": p.send_count / (elapsed_ms / 1000),
        # the two totals calls are in this window too: negligible beside the sends
        "send_cpu": (cpu3 - cpu2) * 1e6 / p.send_count,
    }


ROWS = (
    ("invoke_p50", "invoke round trip, median (µs)", "{:,.0f}"),
    ("invoke_p99", "invoke round trip, p99 (µs)", "{:,.0f}"),
    ("invoke_cpu", "  server CPU per invoke (µs)", "{:,.1f}"),
    ("send_rate", "send (msgs/s)", "{:,.0f}"),
    ("send_cpu", "  server CPU per send (µs)", "{:,.1f}"),
)


def table(data: dict[tuple[str, str], dict[str, float]], loops: list[str]) -> list[str]:
    short = {"asyncio": "aio", "uvloop": "uv"}
    head = ["", *(f"{c}/{short[lp]}" for lp in loops for c in CONTESTANTS)]
    head[1:] = [h for lp in loops for h in (f"floor/{short[lp]}", f"ipcbus/{short[lp]}", "ratio")]
    rows = [head]
    for key, label, fmt in ROWS:
        row = [label]
        for lp in loops:
            floor = data.get(("floor", lp), {}).get(key)
            ours = data.get(("ipcbus", lp), {}).get(key)
            row.append(fmt.format(floor) if floor is not None else "ERR")
            row.append(fmt.format(ours) if ours is not None else "ERR")
            row.append(f"{ours / floor:.2f}x" if floor and ours is not None else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def targets(data: dict[tuple[str, str], dict[str, float]], loops: list[str]) -> list[str]:
    out = []
    for lp in loops:
        floor, ours = data.get(("floor", lp)), data.get(("ipcbus", lp))
        if not floor or not ours:
            out.append(f"{lp}: no figures (a run failed)")
            continue
        ratio = ours["invoke_p50"] / floor["invoke_p50"]
        verdict = "MET" if ratio <= 1.3 else "MISSED"
        out.append(f"{lp}: invoke median {ratio:.2f}x the floor's (target <= 1.3x): {verdict}")
        ratio = ours["send_rate"] / floor["send_rate"]
        verdict = "MET" if ratio >= 0.5 else "MISSED"
        out.append(f"{lp}: send rate {ratio:.2f}x the floor's (target >= 0.5x): {verdict}")
    return out


async def orchestrate(args: argparse.Namespace, chromium: str, page_js: str) -> str:
    """Run every run; the report (and ``args.json``, written by the caller)."""
    from playwright.async_api import async_playwright

    p = Params.make(args.quick)
    loops = list(LOOPS) if args.loop == "both" else [args.loop]
    runs = [(c, lp) for _ in range(args.repeat) for lp in loops for c in CONTESTANTS]
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    errors: list[str] = []
    load_before = os.getloadavg()
    started = time.monotonic()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        version = browser.version
        try:
            for n, (contestant, loop) in enumerate(runs, 1):
                tag = f"[{n:2}/{len(runs)}] {contestant}/{loop}"
                t0 = time.monotonic()
                try:
                    result = await run_one(browser, contestant, loop, p, page_js)
                except RunFailed as exc:
                    errors.append(f"{contestant}/{loop}: {exc}")
                    print(f"{tag}: ERROR {exc}", file=sys.stderr, flush=True)
                    continue
                samples.setdefault((contestant, loop), []).append(result)
                shown = ", ".join(f"{k} {v:,.1f}" for k, v in result.items())
                took = time.monotonic() - t0
                print(f"{tag}: {shown} ({took:.1f} s)", file=sys.stderr, flush=True)
        finally:
            await browser.close()
    load_after = os.getloadavg()
    data = {
        key: {k: statistics.median(r[k] for r in results) for k in results[0]}
        for key, results in samples.items()
        if not any(e.startswith(f"{key[0]}/{key[1]}:") for e in errors)
    }
    out = [
        "",
        f"ipcbus web benchmark: {'quick' if args.quick else 'full'} run, "
        f"{time.monotonic() - started:.0f} s, "
        + (f"median of {args.repeat} runs per cell, " if args.repeat > 1 else "")
        + f"python {platform.python_version()}, Chromium {version}, {os.cpu_count()} CPUs",
        f"command: {args.command}",
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}",
        f"sizes: invoke {p.invoke_calls:,} timed after {p.invoke_warmup:,}; "
        f"send {p.send_count:,} after {p.send_warmup:,}; "
        "floor = raw WebSocket on h11 + wsproto + anyio; ratio = ipcbus / floor",
        "",
        *table(data, loops),
        "",
        "targets (issue 11):",
        *("  " + t for t in targets(data, loops)),
    ]
    if errors:
        out += ["", "errors (these post no number):", *("  " + e for e in errors)]
    args.raw = {"params": p.__dict__, "runs": {f"{c}/{lp}": v for (c, lp), v in samples.items()}}
    args.failed = bool(errors)
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--loop", default="both", choices=(*LOOPS, "both"))
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; shows medians")
    parser.add_argument("--json", default="", help="write every run's numbers here")
    parser.add_argument("--serve", choices=CONTESTANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, "asyncio" if args.loop == "both" else args.loop)
        return 0
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    args.command = " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    print(asyncio.run(orchestrate(args, chromium, (HERE / "web_page.js").read_text())))
    if args.json:
        Path(args.json).write_text(json.dumps(args.raw, indent=1))
    return 1 if args.failed else 0


if __name__ == "__main__":
    sys.exit(main())
