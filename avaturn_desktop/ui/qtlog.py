"""Qt's own messages routed into logging under ``avaturn.qt``."""

from __future__ import annotations

import logging

from PySide6.QtCore import QMessageLogContext, QtMsgType, qInstallMessageHandler

log = logging.getLogger("avaturn.qt")

_LEVELS = {
    QtMsgType.QtDebugMsg: logging.DEBUG,
    QtMsgType.QtInfoMsg: logging.INFO,
    QtMsgType.QtWarningMsg: logging.WARNING,
    QtMsgType.QtCriticalMsg: logging.ERROR,
    QtMsgType.QtFatalMsg: logging.CRITICAL,
}
#: Harmless start-up noise on machines without a GPU or a system bus.
_QUIET = (
    "QRhiGles2: Failed to create",
    "Failed to create RHI",
    "GPUInfo not initialized",
    "This plugin does not support propagateSizeHints",
)


def _handler(mode: QtMsgType, context: QMessageLogContext, message: str) -> None:
    level = _LEVELS.get(mode, logging.WARNING)
    if message.startswith(_QUIET):
        level = logging.DEBUG
    log.log(level, "%s", message)


def install() -> None:
    qInstallMessageHandler(_handler)
