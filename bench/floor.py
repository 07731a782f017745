"""The start-up floor of the app's stack: what any app built on it pays before its avatar can
be live, measured the way the bare baseline is (``bench.baseline``).

A process that paints its window first (as the app does, as issue 14 asks), then imports what
the app cannot start a session without (pydantic, with one model built; asyncio and httpx),
then loads the same local page as the baseline in a web view. It prints ``shown`` at the
window's first expose and ``loaded`` at the page's ``loadFinished``. Nothing of the app is
imported: no settings, no key lookup, no simulator, no session, no SDK, no avatar stream.

The app's time to a live avatar is this floor plus its own work (its modules, its settings,
the key, the runtime and the panels), the session's request to the built-in simulator (a
process of its own, starting on the other core meanwhile) and the page's way from a token to
the stream's first frame.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from bench.baseline import PAGE, say_shown_at_first_expose


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QUrl
    from PySide6.QtWebEngineWidgets import QWebEngineView
    from PySide6.QtWidgets import QApplication, QMainWindow

    page = Path(tempfile.mkdtemp(prefix="avaturn-bench-floor-")) / "index.html"
    page.write_text(PAGE, encoding="utf-8")
    app = QApplication(sys.argv[:1])
    window = QMainWindow()
    window.resize(1440, 900)

    # on to the rest once it is on screen, as the app does after its frame
    exposed = say_shown_at_first_expose(window, then=app.exit)
    window.show()
    if not exposed.seen:
        app.exec()

    # what the app cannot start a session without
    import asyncio  # noqa: F401  (the event loop's glue needs it)

    import httpx  # noqa: F401
    from pydantic import BaseModel

    class Settings(BaseModel):
        avatar_id: str = "jane_20240829"

    Settings()

    view = QWebEngineView()
    window.setCentralWidget(view)

    def loaded(ok: bool) -> None:
        sys.stdout.write(f"loaded {ok}\n")
        sys.stdout.flush()
        app.quit()

    view.loadFinished.connect(loaded)
    view.load(QUrl.fromLocalFile(str(page)))
    app.exec()
    view.close()
    view.deleteLater()
    return 0


if __name__ == "__main__":
    sys.exit(main())
