"""docs/protocol.md's byte examples are what the code sends, byte for byte.

The worked example's frames are produced here by two real ``Connection``
objects (the renderer's Hello, main's Welcome, an invoke, its Reply, an error
Reply, the renderer's Goodbye) and compared with every hex dump, byte count
and length the document shows, so the document cannot drift from the code
(as its plain-hex ``hello`` and ``welcome`` once did, from before
``max_frame_size``). A failure prints the text the document should have.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ipcbus._calls import error_info
from ipcbus._protocol import Connection, Role
from ipcbus._receiving import CANCEL_ACK
from ipcbus._wire import DEFAULT_MAX_FRAME_SIZE, PROTOCOL_VERSION, CloseCode, ErrorKind, RequestKind

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = ROOT / "docs" / "protocol.md"
SECTION = "## Worked example"

#: What leaving ``async with ipc_renderer.connect():`` says (src/ipcbus/renderer.py).
RENDERER_GOODBYE = "the renderer disconnected"


def _round_trip() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """``(annotated, plain)``: the frames of the annotated dumps and of the plain-hex list."""
    renderer = Connection(Role.RENDERER, token="s3cret", process_id=4242)
    main = Connection(Role.MAIN, token="s3cret", renderer_id=1)
    frames: dict[str, bytes] = {}

    def move(name: str, sender: Connection, receiver: Connection) -> None:
        frames[name] = bytes(sender.data_to_send())
        receiver.receive_data(frames[name])

    move("hello", renderer, main)
    move("welcome", main, renderer)
    assert renderer.start_request(RequestKind.INVOKE, "add", [1, 2]) == 1
    move("request", renderer, main)
    assert main.send_reply(1, True, 3)
    move("reply", main, renderer)
    assert renderer.start_request(RequestKind.INVOKE, "divide", [1, 0]) == 2
    move("second request", renderer, main)
    # As the document puts it (not Python's wording of 1 / 0, which may change).
    info = error_info(ErrorKind.REMOTE, ZeroDivisionError("division by zero"), with_traceback=False)
    assert main.send_reply(2, False, info)
    move("error reply", main, renderer)
    renderer.close(CloseCode.NORMAL, RENDERER_GOODBYE)
    move("goodbye", renderer, main)
    annotated = {name: frames[name] for name in ("hello", "welcome", "request", "reply")}
    annotated["error reply"] = frames["error reply"]
    plain = {name: frames[name] for name in ("hello", "welcome", "request", "reply", "goodbye")}
    return annotated, plain


def _section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```\n(.*?)```", text, flags=re.DOTALL)


def _dumped_bytes(block: str) -> bytes:
    """The bytes of an annotated dump: each line's leading hex pairs, before its comment."""
    out = bytearray()
    for line in block.splitlines():
        leading = line.strip().split("  ")[0].split(" ")
        if all(re.fullmatch(r"[0-9a-f]{2}", token) for token in leading):
            out += bytes.fromhex("".join(leading))
    return bytes(out)


def plain_hex_block(plain: dict[str, bytes]) -> str:
    """The document's plain-hex list, as it should read."""
    width = max(len(name) for name in plain) + 2
    return "".join(f"{name:<{width}}{frame.hex()}\n" for name, frame in plain.items())


def test_annotated_dumps_are_the_bytes_the_code_sends() -> None:
    annotated, _ = _round_trip()
    blocks = _code_blocks(_section())
    assert len(blocks) == len(annotated) + 1, "expected the annotated dumps, then the plain hex"
    for (name, frame), block in zip(annotated.items(), blocks, strict=False):
        assert _dumped_bytes(block) == frame, (
            f"docs/protocol.md, the {name} dump; the code sends:\n{frame.hex(' ')}"
        )
        length = re.search(r"length (\d+)", block)
        assert length is not None and int(length[1]) == len(frame) - 4, name


def test_plain_hex_list_is_the_bytes_the_code_sends() -> None:
    _, plain = _round_trip()
    block = _code_blocks(_section())[-1]
    want = plain_hex_block(plain)
    assert block == want, f"docs/protocol.md's plain-hex list should read:\n{want}"


def test_byte_counts_and_the_goodbye_in_words() -> None:
    annotated, plain = _round_trip()
    section = _section()
    sizes = [int(n) for n in re.findall(r"\((\d+) bytes", section)]
    assert sizes == [len(frame) for frame in annotated.values()] + [len(plain["goodbye"])]
    goodbye = plain["goodbye"]
    header, head, str_head = goodbye[:4], goodbye[4:7], goodbye[7:8]
    said = (
        f"`{header.hex(' ')}`, `{head.hex(' ')}`, then `{str_head.hex()}` and the "
        f"{len(goodbye) - 8} bytes of the reason"
    )
    assert said in " ".join(section.split()), f"docs/protocol.md should say: {said}"
    assert f'`Goodbye(NORMAL, "{RENDERER_GOODBYE}")`' in section
    assert f'"{RENDERER_GOODBYE}"' in (ROOT / "src" / "ipcbus" / "renderer.py").read_text()


@pytest.mark.parametrize(
    "call",
    [
        f'`Hello({PROTOCOL_VERSION}, "s3cret", 4242, {DEFAULT_MAX_FRAME_SIZE})`',
        f"`Welcome({PROTOCOL_VERSION}, 1, {DEFAULT_MAX_FRAME_SIZE})`",
        '`Request(1, INVOKE, "add", [1, 2])`',
        "`Reply(1, true, 3)`",
    ],
)
def test_frames_named_in_the_example_have_the_codes_values(call: str) -> None:
    assert call in _section()


def test_the_cancel_acknowledgement_in_the_checklist() -> None:
    ack = CANCEL_ACK
    said = f'[{int(ack.kind)}, "{ack.type_name}", "{ack.message}", nil]'
    assert said in DOC.read_text(encoding="utf-8")
