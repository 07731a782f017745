"""Fixtures for the avatar page: a loaded AvatarView, qasync's loop, a test-double SDK server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6.QtWebEngineWidgets")

from PySide6.QtCore import QCoreApplication, QEvent

from avaturn_desktop.ui.web.scheme import register_schemes

# The scheme must exist before the QApplication; conftest import time is before any test.
register_schemes()

from avaturn_desktop.ui.web.view import AvatarView  # noqa: E402

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE) and item.path.name != "test_events.py":
            item.add_marker(pytest.mark.web)


def _delete_view(view: AvatarView) -> None:
    view.shutdown()
    view.close()
    view.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture
def make_view(qtbot: Any) -> Iterator[Callable[[], AvatarView]]:
    """Makes AvatarViews (not loaded); each is shut down and deleted at teardown."""
    views: list[AvatarView] = []

    def make() -> AvatarView:
        view = AvatarView()
        view.resize(640, 360)
        views.append(view)
        return view

    yield make
    for view in views:
        _delete_view(view)


@pytest.fixture
def view(make_view: Callable[[], AvatarView], qtbot: Any) -> AvatarView:
    """An AvatarView with the stage page loaded and the bridge ready."""
    view = make_view()
    with (
        qtbot.waitSignal(view.bridge.ready_changed, timeout=20_000) as ready,
        qtbot.waitSignal(view.loadFinished, timeout=20_000) as loaded,
    ):
        view.load_stage()
    assert loaded.args == [True]
    assert ready.args == [True]
    return view


@pytest.fixture
def run_js(qtbot: Any) -> Callable[..., Any]:
    """``run_js(view, code, world=0)``: run ``code`` in a script world (0 = the page's main
    world) and return its result. Not for use inside coroutines."""

    def run(view: AvatarView, code: str, world: int = 0) -> Any:
        with qtbot.waitCallback(timeout=10_000) as callback:
            view.page().runJavaScript(code, world, callback)
        return callback.args[0]

    return run


# -- a loopback server for the test-double SDK module -------------------------------------------


#: A module that loads but is no SDK (it exports no AvaturnHead).
NOT_AN_SDK = b"export const nothing = 1;\n"


class _SdkHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/fake_sdk.js":
            body = (HERE / "fake_sdk.js").read_bytes()
        elif path == "/not_an_sdk.js":
            body = NOT_AN_SDK
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/javascript; charset=utf-8")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture(scope="session")
def fake_sdk_url() -> Iterator[str]:
    """URL of tests/web/fake_sdk.js on a loopback HTTP server with CORS ``*``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SdkHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-sdk", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fake_sdk.js"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _next_emission(
    signal: Any, predicate: Callable[[Any], bool] = lambda _a: True, wait_s: float = 10.0
) -> Any:
    """Await the next emission of ``signal`` whose argument satisfies ``predicate``."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def slot(arg: Any) -> None:
        if not fut.done() and predicate(arg):
            fut.set_result(arg)

    signal.connect(slot)
    try:
        return await asyncio.wait_for(fut, wait_s)
    finally:
        signal.disconnect(slot)


@pytest.fixture
def next_emission() -> Callable[..., Any]:
    """``await next_emission(signal, predicate, wait_s)``: asyncio-side signal wait."""
    return _next_emission
