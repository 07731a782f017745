"""The GUI thread is raised to the web engine's display priority where the system allows it."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from avaturn_desktop.ui import gui_priority
from avaturn_desktop.ui.gui_priority import DISPLAY_NICE, raise_gui_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux threads")


def _in_a_thread(body: Callable[[], Any]) -> Any:
    """Run ``body`` in a thread of its own (the test runner's thread keeps its priority)."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(body()))
    worker.start()
    worker.join()
    return out[0]


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_raised_when_allowed_and_only_that_thread() -> None:
    if not _in_a_thread(lambda: _try_set(DISPLAY_NICE)):
        pytest.skip("this account may not raise a thread's priority")
    before = _nice()
    raised, nice = _in_a_thread(lambda: (raise_gui_thread(), _nice()))
    assert raised is True
    assert nice == DISPLAY_NICE
    assert _nice() == before  # per thread: the caller's own thread is untouched


def test_never_lowers_a_thread_that_runs_higher() -> None:
    if not _in_a_thread(lambda: _try_set(DISPLAY_NICE - 2)):
        pytest.skip("this account may not raise a thread's priority")

    def body() -> tuple[bool, int]:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DISPLAY_NICE - 2)
        return raise_gui_thread(), _nice()

    assert _in_a_thread(body) == (True, DISPLAY_NICE - 2)


@pytest.mark.parametrize("error", [PermissionError(1, "Operation not permitted"), OSError(13, "x")])
def test_without_the_right_it_keeps_its_priority_and_says_so_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: OSError
) -> None:
    def refuse(*_args: Any) -> None:
        raise error

    monkeypatch.setattr(gui_priority.os, "setpriority", refuse)
    with caplog.at_level("DEBUG", logger="avaturn.app"):
        raised, nice = _in_a_thread(lambda: (raise_gui_thread(), _nice()))
    assert raised is False
    assert nice == _nice()  # unchanged: the new thread has its creator's priority
    assert any("keeps its priority" in r.getMessage() for r in caplog.records)
    assert all(r.levelname == "DEBUG" for r in caplog.records)


def _try_set(nice: int) -> bool:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError:
        return False
    return True
