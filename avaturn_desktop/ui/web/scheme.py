"""The ``avaturn://`` scheme: the stage page's own secure origin, served from ``resources/web/``.

WebRTC and media need a secure context, and ``file://`` is neither a proper origin nor
acceptable; so the page is served from a custom scheme registered as secure. The scheme must be
registered before the ``QApplication`` exists: call :func:`register_schemes` early (it is
idempotent).

Flags, and why:
- ``SecureScheme``: the page is a secure context (``window.isSecureContext``), so WebRTC and
  ``getUserMedia`` work, and it can load from ``https://`` CDNs and ``http://127.0.0.1``
  (loopback counts as potentially trustworthy, so that is not mixed content).
- ``CorsEnabled`` and ``FetchApiAllowed``: the page's own module script (``stage.js``) is fetched
  in CORS mode, which Chromium allows only from CORS-enabled schemes.
- Not ``LocalScheme`` / ``LocalAccessAllowed``: the page may not read ``file://`` or ``qrc:``.
"""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path, PurePosixPath

from PySide6.QtCore import QBuffer, QByteArray, QCoreApplication, QIODevice, QObject, Qt, QUrl
from PySide6.QtWebEngineCore import (
    QWebEngineUrlRequestJob,
    QWebEngineUrlScheme,
    QWebEngineUrlSchemeHandler,
)

from avaturn_desktop.core.paths import resource

log = logging.getLogger("avaturn.web")

SCHEME = "avaturn"
SCHEME_BYTES = SCHEME.encode()
STAGE_HOST = "stage"
STAGE_PAGE = "stage.html"
#: The stage page's origin (``avaturn://stage``).
STAGE_ORIGIN = f"{SCHEME}://{STAGE_HOST}"

_MIME = {
    ".html": "text/html;charset=utf-8",
    ".js": "text/javascript;charset=utf-8",
    ".mjs": "text/javascript;charset=utf-8",
    ".css": "text/css;charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".woff2": "font/woff2",
}


def stage_url(page: str = STAGE_PAGE) -> QUrl:
    """The URL of a page of the stage, ``avaturn://stage/stage.html`` by default."""
    return QUrl(f"{STAGE_ORIGIN}/{page}")


def register_schemes() -> None:
    """Register ``avaturn://`` with Qt WebEngine. Call before the ``QApplication`` exists.

    Calling it again is harmless. Calling it for the first time too late raises, because Qt would
    otherwise only print a warning and the page would not be a secure context.
    """
    if QWebEngineUrlScheme.schemeByName(QByteArray(SCHEME_BYTES)).name() == SCHEME_BYTES:
        return
    if QCoreApplication.instance() is not None:
        raise RuntimeError("register_schemes() must run before the QApplication is created")
    scheme = QWebEngineUrlScheme(QByteArray(SCHEME_BYTES))
    scheme.setSyntax(QWebEngineUrlScheme.Syntax.Host)
    scheme.setFlags(
        QWebEngineUrlScheme.Flag.SecureScheme
        | QWebEngineUrlScheme.Flag.CorsEnabled
        | QWebEngineUrlScheme.Flag.FetchApiAllowed
    )
    QWebEngineUrlScheme.registerScheme(scheme)
    # Qt WebEngine needs shared GL contexts, set before the application exists.
    QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)


def resolve(root: Path, url: QUrl) -> Path | None:
    """The file under ``root`` that ``url`` names, or None (wrong host, traversal, missing)."""
    if url.scheme() != SCHEME or url.host() != STAGE_HOST:
        return None
    raw = url.path(QUrl.ComponentFormattingOption.FullyDecoded)
    parts = PurePosixPath(raw).parts
    if not parts or parts[0] != "/":
        return None
    rel = parts[1:]
    if not rel or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in rel):
        return None
    base = root.resolve()
    candidate = base.joinpath(*rel).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


class StageSchemeHandler(QWebEngineUrlSchemeHandler):
    """Serves ``avaturn://stage/<file>`` from ``resources/web/``, GET only, nothing outside it."""

    def __init__(self, root: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._root = root if root is not None else resource("web")

    def requestStarted(self, job: QWebEngineUrlRequestJob) -> None:
        url = job.requestUrl()
        method = bytes(job.requestMethod().data()).decode("ascii", "replace")
        if method != "GET":
            log.warning("stage page: %s refused for %s", method, url.path())
            job.fail(QWebEngineUrlRequestJob.Error.RequestDenied)
            return
        path = resolve(self._root, url)
        if path is None:
            log.warning("stage page: no such resource %s", url.toDisplayString())
            job.fail(QWebEngineUrlRequestJob.Error.UrlNotFound)
            return
        mime = _MIME.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        buffer = QBuffer(job)
        buffer.setData(QByteArray(path.read_bytes()))
        buffer.open(QIODevice.OpenModeFlag.ReadOnly)
        job.reply(QByteArray((mime or "application/octet-stream").encode()), buffer)
