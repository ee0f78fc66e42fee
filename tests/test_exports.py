"""The public surface: ``__all__`` of each public module, and the exception tree.

Like websockets' ``test_exports.py`` and anyio's ``test_all_attributes.py``
(STYLE section 3.9).
"""

from __future__ import annotations

import builtins
import importlib
import pickle
import re
import subprocess
import sys
import traceback
from types import ModuleType

import pytest

import ipcbus
from ipcbus import _errors

PUBLIC_MODULES = (
    "ipcbus",
    "ipcbus.main",
    "ipcbus.renderer",
    "ipcbus.cli",
    "ipcbus.sync",
    "ipcbus.web",
)


def _sort_key(name: str) -> tuple[int, str]:
    """isort's order for ``__all__``: CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_a_sorted_tuple_of_existing_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert isinstance(exported, tuple), f"{name}.__all__ is a {type(exported).__name__}"
    assert exported, f"{name}.__all__ is empty"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    missing = [attr for attr in exported if not hasattr(module, attr)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
    assert list(exported) == sorted(exported, key=_sort_key), f"{name}.__all__ is not sorted"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from ipcbus import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(ipcbus.__all__)


@pytest.mark.parametrize("name", ["ipcbus.main", "ipcbus.renderer"])
def test_public_classes_are_re_exported_from_the_package(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    for attr in module.__all__:
        assert attr in ipcbus.__all__, f"{name}.{attr} is not in ipcbus.__all__"
        assert getattr(ipcbus, attr) is getattr(module, attr)


@pytest.mark.parametrize("name", ["ipcbus.main", "ipcbus.renderer"])
def test_public_classes_are_named_by_their_public_module(name: str) -> None:
    """``ipcbus.main.WebContents`` in reprs, pickles and help(), though it is
    defined in a private module (main's rooms: docs/architecture.md)."""
    module: ModuleType = importlib.import_module(name)
    for attr in module.__all__:
        obj = getattr(module, attr)
        if isinstance(obj, type):
            assert obj.__module__ == name, f"{name}.{attr} says it is from {obj.__module__}"
    details = ipcbus.DisconnectDetails("killed", -9, "gone")
    assert pickle.loads(pickle.dumps(details)) == details


def test_errors_module_and_package_agree() -> None:
    for attr in _errors.__all__:
        assert attr in ipcbus.__all__, f"{attr} is not re-exported"
        assert getattr(ipcbus, attr) is getattr(_errors, attr)


def test_version_is_a_string() -> None:
    assert isinstance(ipcbus.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", ipcbus.__version__)


# ---- the exception tree ---------------------------------------------------------


def _exported_exceptions() -> list[type[BaseException]]:
    return [
        obj
        for obj in (getattr(ipcbus, attr) for attr in ipcbus.__all__)
        if isinstance(obj, type) and issubclass(obj, BaseException)
    ]


def test_every_exception_derives_from_ipc_error() -> None:
    exceptions = _exported_exceptions()
    assert len(exceptions) >= 10
    for exc in exceptions:
        assert issubclass(exc, ipcbus.IpcError), exc


def _drawn_tree() -> dict[str, tuple[str, str]]:
    """``{class: (drawn parent, note)}`` from the drawing in ``_errors``' docstring."""
    doc = _errors.__doc__ or ""
    tree: dict[str, tuple[str, str]] = {}
    stack: list[str] = []  # stack[d] is the latest class drawn at depth d
    for line in doc.splitlines():
        if (match := re.fullmatch(r"\s{4}(IpcError)\s*", line)) is not None:
            stack = [match[1]]
            continue
        match = re.fullmatch(r"\s{4}((?:[│ ]\s{3})*)[├└]── (\w+)\s*(.*)", line)
        if match is None or not stack:
            continue
        depth = len(match[1]) // 4 + 1
        del stack[depth:]
        tree[match[2]] = (stack[depth - 1], match[3])
        stack.append(match[2])
    return tree


def test_the_docstring_draws_every_exception() -> None:
    drawn = _drawn_tree()
    assert set(drawn) | {"IpcError"} == set(_errors.__all__)


def test_exception_tree_is_as_drawn() -> None:
    for name, (parent, note) in _drawn_tree().items():
        cls = getattr(_errors, name)
        ipc_bases = [base for base in cls.__bases__ if issubclass(base, ipcbus.IpcError)]
        assert [base.__name__ for base in ipc_bases] == [parent], name
        if (also := re.match(r"\(also (\w+)\)", note)) is not None:
            assert issubclass(cls, getattr(builtins, also[1])), name


def test_exception_tree_spot_checks() -> None:
    assert issubclass(ipcbus.SerializationError, TypeError)
    assert issubclass(ipcbus.IpcTimeoutError, TimeoutError)
    assert issubclass(ipcbus.FrameTooLargeError, ipcbus.ProtocolError)
    assert not issubclass(ipcbus.ProtocolError, ipcbus.ConnectionClosedError)
    # `except TimeoutError` and `except TypeError` catch ours, as users expect.
    with pytest.raises(TimeoutError):
        raise ipcbus.IpcTimeoutError("no reply within 1 s")
    with pytest.raises(TypeError):
        raise ipcbus.SerializationError("cannot encode object")


@pytest.mark.parametrize("cls", _exported_exceptions(), ids=lambda c: c.__name__)
def test_every_exception_has_a_raised_when_docstring(cls: type[BaseException]) -> None:
    doc = cls.__doc__ or ""
    assert doc.startswith("Raised ") or cls is ipcbus.IpcError, f"{cls.__name__}: {doc!r}"


def _instance(cls: type[BaseException]) -> BaseException:
    if cls is ipcbus.RemoteError:
        return ipcbus.RemoteError("ch", "ValueError", "boom", "Traceback ...")
    return cls("something went wrong on 'ch'")


@pytest.mark.parametrize("cls", _exported_exceptions(), ids=lambda c: c.__name__)
def test_exceptions_are_named_by_their_public_path(cls: type[BaseException]) -> None:
    """``ipcbus.NoHandlerError: ...`` in a traceback, not ``ipcbus._errors.NoHandlerError``;
    pickling (e.g. across a process pool) still round-trips."""
    assert cls.__module__ == "ipcbus"
    assert getattr(ipcbus, cls.__qualname__) is cls
    exc = _instance(cls)
    assert traceback.format_exception_only(exc)[-1].startswith(f"ipcbus.{cls.__name__}: ")
    assert repr(exc).startswith(f"{cls.__name__}(")
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is cls
    assert str(copy) == str(exc)
    if isinstance(exc, ipcbus.RemoteError):
        assert isinstance(copy, ipcbus.RemoteError)
        assert (copy.channel, copy.type_name, copy.remote_message, copy.remote_traceback) == (
            exc.channel,
            exc.type_name,
            exc.remote_message,
            exc.remote_traceback,
        )


def test_an_uncaught_ipcbus_error_prints_as_ipcbus_dot_name() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import ipcbus; raise ipcbus.NoHandlerError('nobody')"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "ipcbus.NoHandlerError: nobody"
