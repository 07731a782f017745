"""The bare baseline: a process with a QMainWindow and a QWebEngineView loading a local page.

Prints ``shown`` when the window is first exposed (on screen) and ``loaded`` at the page's
``loadFinished`` (the start-up benchmark times these lines from the process's spawn), then,
after ``--hold-ms``, its memory as a ``BENCH-RESULT`` line. Nothing of the app is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>baseline</title>
<style>body{margin:0;background:#20242a;color:#eee;font:16px sans-serif}</style></head>
<body><canvas id="c" width="640" height="360"></canvas><p>A local page.</p>
<script>const g=document.getElementById("c").getContext("2d");
g.fillStyle="#4a7";g.fillRect(40,40,200,120);</script></body></html>
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold-ms", type=int, default=0, help="wait, then report memory")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer, QUrl
    from PySide6.QtWebEngineWidgets import QWebEngineView
    from PySide6.QtWidgets import QApplication, QMainWindow

    page = Path(tempfile.mkdtemp(prefix="avaturn-bench-page-")) / "index.html"
    page.write_text(PAGE, encoding="utf-8")
    app = QApplication(sys.argv[:1])
    window = QMainWindow()
    view = QWebEngineView()
    window.setCentralWidget(view)
    window.resize(1440, 900)

    exposed = say_shown_at_first_expose(window)  # noqa: F841 (kept alive while it watches)

    def loaded(ok: bool) -> None:
        sys.stdout.write(f"loaded {ok}\n")
        sys.stdout.flush()
        QTimer.singleShot(args.hold_ms, finish)

    def finish() -> None:
        if args.hold_ms:
            from bench.common import emit_result, peak_rss_mb, tree_rss_mb

            emit_result({**tree_rss_mb(), "main_peak_mb": peak_rss_mb()})
        view.close()
        window.close()
        view.deleteLater()
        app.quit()

    view.loadFinished.connect(loaded)
    view.load(QUrl.fromLocalFile(str(page)))
    window.show()
    return app.exec()


def say_shown_at_first_expose(window: Any, then: Callable[[], None] | None = None) -> Any:
    """Print ``shown`` at ``window``'s first expose (it is on screen), then call ``then``;
    returns the watching object, to be kept alive until then."""
    from PySide6.QtCore import QEvent, QObject

    class FirstExpose(QObject):
        seen = False

        def eventFilter(self, watched: QObject, event: QEvent) -> bool:
            if not self.seen and event.type() == QEvent.Type.Expose and window.isVisible():
                self.seen = True
                sys.stdout.write("shown\n")
                sys.stdout.flush()
                if then is not None:
                    then()
            return False

    exposed = FirstExpose()
    window.winId()  # the QWindow exists from here on
    handle = window.windowHandle()
    assert handle is not None
    handle.installEventFilter(exposed)
    return exposed


if __name__ == "__main__":
    sys.exit(main())
