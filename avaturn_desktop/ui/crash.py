"""The safety net: every unhandled exception is logged and shown, never silently lost."""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from avaturn_desktop.services.secrets import redact

log = logging.getLogger("avaturn.crash")

#: The reports on screen: Python owns a parentless box, so it must keep a reference to it
#: until it is closed, or the box is destroyed the moment the hook returns.
_open_reports: set[QMessageBox] = set()


def install(*secrets: str | None) -> None:
    """Replace ``sys.excepthook``; ``secrets`` are scrubbed from what is shown and logged."""

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            QApplication.quit()
            return
        text = redact("".join(traceback.format_exception(kind, exc, tb)), *secrets)
        log.critical("Unhandled error:\n%s", text)
        if QApplication.instance() is None:
            return
        box = QMessageBox(
            QMessageBox.Icon.Critical,
            "Avaturn Desktop: unexpected error",
            "Something went wrong that the app did not expect. It keeps running; the details "
            "are in the log.",
        )
        box.setDetailedText(text)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.NonModal)
        _open_reports.add(box)
        box.finished.connect(lambda _result: _open_reports.discard(box))
        box.show()

    sys.excepthook = hook
