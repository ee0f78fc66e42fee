from __future__ import annotations

from pathlib import Path

import anyio

from .helpers import running_main, spawn_renderer, spawn_script


async def test_invoke_through_connect_local() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("add", lambda event, a, b: a + b)
            async with ipc_main.connect_local() as renderer:
                assert await renderer.invoke("add", 1, 2) == 3


async def test_spawned_renderer_serves_main_invoke() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "echo")
            assert await contents.invoke("echo", 1, "a", None) == [1, "a", None]
            assert await contents.invoke("pid") == contents.process_id


async def test_spawned_script_invokes_main(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("add", lambda event, a, b: a + b)
            contents = await spawn_script(
                ipc_main,
                tmp_path,
                """
                import anyio, ipcbus
                async def main():
                    async with ipcbus.connect() as r:
                        assert await r.invoke("add", 2, 3) == 5
                anyio.run(main)
                """,
            )
            await contents.wait_closed()
            assert contents.disconnect_details is not None
            assert contents.disconnect_details.exit_code == 0
            assert contents.disconnect_details.reason == "clean-exit"
