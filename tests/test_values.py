"""Values on the wire (SPEC section 5): every listed type, untyped and typed, both ways."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import anyio
import pytest

from ipcbus import IpcMainEvent, IpcRendererEvent, ValidationError

from .helpers import running_main, spawn_renderer, wait_for
from .renderers.samples import SAMPLES, Point, Sample, normalize, typed_handler

IDS = [sample.name for sample in SAMPLES]


def _check_untyped(sample: Sample, received: Any) -> None:
    got = normalize(sample, received)
    assert got == sample.untyped, sample.name
    assert type(got) is type(sample.untyped), (sample.name, type(got))
    if isinstance(sample.untyped, dt.datetime):
        assert got.tzinfo is not None  # tz-aware datetimes stay datetimes


def _expected_typed(sample: Sample) -> list[Any]:
    return [type(sample.typed).__name__, True]


# ---- untyped: the msgpack forms ------------------------------------------------------


async def test_untyped_arguments_arrive_in_msgpack_form_in_main() -> None:
    captured: list[list[Any]] = []

    def capture(event: Any, *args: Any) -> int:
        captured.append(list(args))
        return len(args)

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("capture", capture)
            ipc_main.on("capture", capture)
            values = [sample.value for sample in SAMPLES]
            assert await renderer.invoke("capture", *values) == len(SAMPLES)
            await renderer.send("capture", *values)
            assert await renderer.send_sync("capture", *values) is None
            assert len(captured) == 3
            for args in captured:
                for sample, received in zip(SAMPLES, args, strict=True):
                    _check_untyped(sample, received)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
async def test_untyped_results_arrive_in_msgpack_form(sample: Sample) -> None:
    def give(event: IpcMainEvent | Any) -> Any:
        if isinstance(event, IpcMainEvent):
            event.return_value = sample.value
        return sample.value

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("give", give)
            ipc_main.on("give", give)
            _check_untyped(sample, await renderer.invoke("give"))
            _check_untyped(sample, await renderer.send_sync("give"))
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            renderer.handle("give", give)
            _check_untyped(sample, await contents.invoke("give"))


async def test_untyped_round_trip_through_a_child_both_directions() -> None:
    captured: list[list[Any]] = []

    def capture(event: Any, *args: Any) -> str:
        captured.append(list(args))
        return "captured"

    values = [sample.value for sample in SAMPLES]
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("capture", capture)
            contents = await spawn_renderer(ipc_main, "worker")
            # main -> child (untyped "echo") -> main: the result is the msgpack form.
            echoed = await contents.invoke("echo", *values)
            for sample, received in zip(SAMPLES, echoed, strict=True):
                _check_untyped(sample, received)
            # child -> main: main's untyped handler gets the msgpack forms.
            result = await contents.invoke("call-main", "invoke", "capture", *values)
            assert result == {"ok": "captured"}
            for sample, received in zip(SAMPLES, captured[0], strict=True):
                _check_untyped(sample, received)


async def test_naive_datetime_arrives_as_iso_string_untyped() -> None:
    """Documented choice: msgpack has no naive timestamp, so it travels as ISO text."""
    naive = dt.datetime(2030, 5, 6, 7, 8, 9, 123456)
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("untyped", lambda event, value: value)

            @ipc_main.handle("typed")
            def typed(event: Any, value: dt.datetime) -> list[Any]:
                return [value == naive, value.tzinfo is None]

            assert await renderer.invoke("untyped", naive) == "2030-05-06T07:08:09.123456"
            assert await renderer.invoke("typed", naive) == [True, True]
            aware = naive.replace(tzinfo=dt.UTC)
            assert await renderer.invoke("untyped", aware) == aware


# ---- typed: annotated parameters get the annotated type -------------------------------


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
async def test_typed_handler_in_main_gets_the_annotated_type(sample: Sample) -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("typed", typed_handler(sample))
            assert await renderer.invoke("typed", sample.value) == _expected_typed(sample)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
async def test_typed_listener_in_main_gets_the_annotated_type(sample: Sample) -> None:
    received: list[Any] = []
    done = anyio.Event()

    def listener(event: IpcMainEvent, value: Any) -> None:
        received.append(value)
        done.set()
        event.return_value = "ok"

    listener.__annotations__ = {"event": IpcMainEvent, "value": sample.annotation}
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("typed", listener)
            await renderer.send("typed", sample.value)
            await wait_for(done)
            assert await renderer.send_sync("typed", sample.value) == "ok"
            for value in received:
                assert type(value) is type(sample.typed)
                assert value == sample.typed


async def test_typed_handlers_in_a_child_get_the_annotated_type() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            for sample in SAMPLES:
                result = await contents.invoke(f"typed:{sample.name}", sample.value)
                assert result == _expected_typed(sample), sample.name


async def test_typed_handlers_in_main_called_from_a_child() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            for sample in SAMPLES:
                ipc_main.handle(f"typed:{sample.name}", typed_handler(sample))
            contents = await spawn_renderer(ipc_main, "worker")
            for sample in SAMPLES:
                result = await contents.invoke(
                    "call-main", "invoke", f"typed:{sample.name}", sample.value
                )
                assert result == {"ok": _expected_typed(sample)}, sample.name


async def test_typed_renderer_listener_gets_struct() -> None:
    received: list[Any] = []
    done = anyio.Event()

    def listener(event: IpcRendererEvent, point: Point, ident: uuid.UUID, *rest: int) -> None:
        received.append((point, ident, rest))
        done.set()

    ident = uuid.uuid4()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            renderer.on("ch", listener)
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            await contents.send("ch", Point(3, 4), ident, 5, 6)
            await wait_for(done)
            assert received == [(Point(3, 4), ident, (5, 6))]
            assert type(received[0][2][0]) is int


async def test_typed_mismatch_is_validation_error_for_each_annotation() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:

            @ipc_main.handle("point")
            def point(event: Any, p: Point) -> int:
                return p.x

            @ipc_main.handle("when")
            def when(event: Any, d: dt.date) -> str:
                return d.isoformat()

            with pytest.raises(ValidationError, match="'point'"):
                await renderer.invoke("point", {"x": "not an int", "y": 1})
            with pytest.raises(ValidationError, match="'when'"):
                await renderer.invoke("when", "not a date")
            assert await renderer.invoke("point", {"x": 9, "y": 1}) == 9
            assert await renderer.invoke("when", dt.date(2020, 2, 29)) == "2020-02-29"
