"""``ipcbus.run``: ``anyio.run`` with the event loop chosen for you."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import anyio

__all__ = ("run",)

T = TypeVar("T")

_LOOPS = ("auto", "asyncio", "uvloop", "trio")


def run(
    func: Callable[..., Awaitable[T]],
    *args: Any,
    loop: Literal["auto", "asyncio", "uvloop", "trio"] = "auto",
) -> T:
    """Run ``func(*args)`` on a fresh event loop and return its result.

    Args:
        loop: ``"uvloop"`` requires uvloop (``pip install 'ipcbus[uvloop]'``);
            ``"auto"`` uses uvloop when it is installed, else asyncio's default
            loop; ``"asyncio"`` and ``"trio"`` are what they say.

    Raises:
        ValueError: ``loop`` is not one of the four above.
        RuntimeError: ``loop="uvloop"`` but uvloop is not installed.
    """
    if loop not in _LOOPS:
        valid = ", ".join(repr(name) for name in _LOOPS)
        hint = f" (did you mean {loop.lower()!r}?)" if str(loop).lower() in _LOOPS else ""
        raise ValueError(f"unknown loop {loop!r}{hint}: use one of {valid}")
    if loop == "trio":
        return anyio.run(func, *args, backend="trio")
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    if loop == "uvloop" and not has_uvloop:
        raise RuntimeError("loop='uvloop' needs uvloop: pip install 'ipcbus[uvloop]'")
    use_uvloop = loop == "uvloop" or (loop == "auto" and has_uvloop)
    return anyio.run(func, *args, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
