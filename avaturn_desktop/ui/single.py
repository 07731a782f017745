"""The window side of "one app per data directory": a second start asks the first to come
to the front, over a local socket named after the data directory."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Qt
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QWidget

log = logging.getLogger("avaturn.ui")

_RAISE = b"raise\n"


class FrontDoor(QObject):
    """Listens on ``name``; whoever connects and says "raise" brings ``window`` to the front."""

    def __init__(self, name: str, window: QWidget) -> None:
        super().__init__(window)
        self._window = window
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        QLocalServer.removeServer(name)  # a socket file left by a killed run
        if not self._server.listen(name):
            log.warning("Could not listen for a second start: %s", self._server.errorString())
        self._server.newConnection.connect(self._on_connection)

    def _on_connection(self) -> None:
        while (socket := self._server.nextPendingConnection()) is not None:
            socket.readyRead.connect(lambda s=socket: self._read(s))
            socket.disconnected.connect(socket.deleteLater)

    def _read(self, socket: QLocalSocket) -> None:
        if bytes(socket.readAll().data()).startswith(_RAISE.strip()):
            log.info("A second start asked for this window")
            window = self._window
            window.setWindowState(window.windowState() & ~Qt.WindowState.WindowMinimized)
            window.show()
            window.raise_()
            window.activateWindow()
        socket.disconnectFromServer()


def knock(name: str, timeout_ms: int = 2000) -> bool:
    """Ask the app listening on ``name`` to come to the front; True when it was reached."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(timeout_ms):
        return False
    socket.write(_RAISE)
    socket.waitForBytesWritten(timeout_ms)
    socket.disconnectFromServer()
    return True
