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

Every answer carries the page's Content-Security-Policy (:func:`stage_policy`): scripts only
from the stage itself and the Web SDK's origin, no inline script, no ``eval``, connections only
to the service and what the SDK's WebRTC needs.
"""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path, PurePosixPath

from PySide6.QtCore import (
    QBuffer,
    QByteArray,
    QCoreApplication,
    QIODevice,
    QObject,
    Qt,
    QUrl,
)
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


#: Where the simulator serves its stand-in SDK (it needs no WebRTC: see :func:`stage_policy`).
SIMULATOR_SDK_PATH = "/sim/web-sdk.js"

#: What the official Web SDK's WebRTC layer (Daily's ``daily-js`` 0.81, bundled in the SDK, in
#: call-object mode with ``avoidEval``) reaches, after Daily's own CSP guide and the SDK's code:
#: its call-machine bundle, a classic script from Daily's CDN (``script-src``, by path), and
#: HTTPS and WebSocket calls to Daily's API, signalling and media servers, which live under
#: ``daily.co`` and ``pluot.blue`` (``connect-src``; a wildcard host matches every level of
#: subdomain). The media itself flows over WebRTC, which CSP does not govern. Not allowed:
#: Daily's error reporting to Sentry (telemetry; its requests are refused and logged), eval
#: (``avoidEval`` loads the bundle by script tag instead), and WebAssembly (only Daily's noise
#: cancellation for the microphone would need it, and the app never turns the microphone on).
DAILY_SCRIPT_SOURCES = ("https://c.daily.co/call-machine/",)
DAILY_CONNECT_SOURCES = (
    "https://*.daily.co",
    "wss://*.daily.co",
    "https://*.pluot.blue",
    "wss://*.pluot.blue",
)


def origin_of(url: str | QUrl) -> str:
    """``scheme://host[:port]`` of ``url`` (lower case), or ``""`` if it has none."""
    q = QUrl(url) if isinstance(url, str) else url
    if not q.isValid() or not q.scheme() or not q.host():
        return ""
    origin = f"{q.scheme().lower()}://{q.host().lower()}"
    port = q.port()
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(q.scheme().lower())
    if port != -1 and port != default:
        origin += f":{port}"
    return origin


def _socket_origin(origin: str) -> str:
    """The WebSocket twin of an http(s) origin (``ws://`` / ``wss://``), or ``""``."""
    for web, socket in (("https://", "wss://"), ("http://", "ws://")):
        if origin.startswith(web):
            return socket + origin[len(web) :]
    return ""


def stage_policy(api_host: str | None = None, sdk_url: str | None = None) -> str:
    """The stage page's Content-Security-Policy for a backend (none yet: the stage alone).

    - ``script-src``: the stage's own files and the SDK's origin (where its module and the
      modules it imports come from); no ``'unsafe-inline'``, no ``'unsafe-eval'``. Plus Daily's
      call-machine bundle, unless the SDK is the simulator's stand-in (it has no WebRTC).
    - ``connect-src``: the service (HTTP and its WebSocket twin: the SDK's private API, and
      the simulator's event channel), and Daily's servers as above.
    - everything else: the stage's own files (style, images), ``blob:``/``data:`` where video
      and canvases need them, and nothing at all for frames, plug-ins, forms and ``<base>``.
    """
    api = origin_of(api_host) if api_host else ""
    sdk = origin_of(sdk_url) if sdk_url else ""
    webrtc = bool(sdk_url) and not (
        sdk == api and QUrl(sdk_url or "").path().endswith(SIMULATOR_SDK_PATH)
    )
    scripts = ["'self'", *([sdk] if sdk else []), *(DAILY_SCRIPT_SOURCES if webrtc else ())]
    connect = [o for o in (api, _socket_origin(api)) if o]
    if webrtc:
        connect += DAILY_CONNECT_SOURCES
    connect_sources = " ".join(dict.fromkeys(connect)) or "'none'"
    directives = [
        "default-src 'none'",
        f"script-src {' '.join(dict.fromkeys(scripts))}",
        f"connect-src {connect_sources}",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "worker-src 'self' blob:" if webrtc else "worker-src 'none'",
        "font-src 'self'",
        "frame-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


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
        self.policy = stage_policy()
        """The Content-Security-Policy sent with every answer (the page reloads to change it)."""

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
        # A QMultiMap: each name maps to a list of values (the stubs say one value, but a
        # QByteArray there is taken as a sequence: one header value per character).
        headers: dict[QByteArray, list[QByteArray]] = {
            QByteArray(b"Content-Security-Policy"): [QByteArray(self.policy.encode())],
            QByteArray(b"X-Content-Type-Options"): [QByteArray(b"nosniff")],
        }
        job.setAdditionalResponseHeaders(headers)  # type: ignore[arg-type]
        job.reply(QByteArray((mime or "application/octet-stream").encode()), buffer)
