"""The stage page's Content-Security-Policy, enforced by the real QtWebEngine page.

Each attempt runs in the page's main world (as any script there would) and would set
``window.__ran`` if the policy let it run; the page records every policy violation it reports,
so each test waits for the refusal instead of sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from avaturn_desktop.ui.web.scheme import DAILY_CONNECT_SOURCES, stage_policy
from avaturn_desktop.ui.web.view import AvatarView
from tests.web.helpers import use_backend

RunJs = Callable[..., Any]
API_HOST = "http://127.0.0.1:9"

WATCH_JS = """
window.__ran = null;
window.__violations = window.__violations || [];
if (!window.__watching) {
  window.__watching = true;
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__violations.push({directive: e.effectiveDirective, blocked: e.blockedURI,
                              policy: e.originalPolicy});
  });
}
window.__violations.length
"""

#: Ways a script in the page might run code the policy must refuse.
ATTEMPTS = {
    "eval": "try { eval(\"window.__ran = 'eval'\"); } catch (e) {}",
    "new Function": "try { new Function(\"window.__ran = 'function'\")(); } catch (e) {}",
    "setTimeout with a string": "setTimeout(\"window.__ran = 'timeout'\", 0);",
    "inline script element": (
        "const s = document.createElement('script');"
        " s.textContent = \"window.__ran = 'inline'\"; document.head.append(s);"
    ),
    "inline module element": (
        "const m = document.createElement('script'); m.type = 'module';"
        " m.textContent = \"window.__ran = 'inline module'\"; document.head.append(m);"
    ),
    "inline event handler": (
        "const d = document.createElement('div');"
        " d.setAttribute('onclick', \"window.__ran = 'handler'\"); document.body.append(d);"
        " d.click();"
    ),
    "javascript: URL": (
        "const a = document.createElement('a'); a.href = \"javascript:window.__ran = 'url'\";"
        " document.body.append(a); a.click();"
    ),
    "module from another origin": (
        "import('http://127.0.0.1:9/evil.js').then(() => { window.__ran = 'module'; }, () => {});"
    ),
    "module from a data: URL": (
        "import('data:text/javascript,window.__ran = 1').then("
        "() => { window.__ran = 'data module'; }, () => {});"
    ),
    "classic script from another origin": (
        "const c = document.createElement('script'); c.src = 'https://example.org/x.js';"
        " c.onload = () => { window.__ran = 'script'; }; document.head.append(c);"
    ),
    "fetch to another origin": (
        "fetch('https://example.org/').then(() => { window.__ran = 'fetch'; }, () => {});"
    ),
    "WebSocket to another origin": "try { new WebSocket('wss://example.org/'); } catch (e) {}",
    "a frame": (
        "const f = document.createElement('iframe'); f.src = 'https://example.org/';"
        " document.body.append(f);"
    ),
    "a base element": (
        "const b = document.createElement('base'); b.href = 'https://example.org/';"
        " document.head.append(b);"
    ),
}


@pytest.fixture
def policed(view: AvatarView, qtbot: Any, fake_sdk_url: str) -> AvatarView:
    """The stage, loaded under the policy for a backend (the test-double SDK on loopback)."""
    use_backend(view, qtbot, API_HOST, fake_sdk_url)
    return view


@pytest.mark.parametrize("attempt", list(ATTEMPTS), ids=list(ATTEMPTS))
def test_the_page_refuses_code_and_origins_it_was_not_given(
    policed: AvatarView, run_js: RunJs, qtbot: Any, attempt: str
) -> None:
    before = run_js(policed, WATCH_JS)
    run_js(policed, f"(() => {{ {ATTEMPTS[attempt]} }})(); true")
    qtbot.waitUntil(lambda: run_js(policed, "window.__violations.length") > before)
    # a refusal is final: give what might still run a turn of the page's loop, then look
    run_js(policed, "new Promise((r) => setTimeout(r, 0)).then(() => true)")
    assert run_js(policed, "String(window.__ran)") == "null"
    violation = json.loads(run_js(policed, "JSON.stringify(window.__violations.at(-1))"))
    assert violation["policy"] == policed.avatar_page.policy


def test_the_policy_names_only_the_stage_the_sdk_and_the_service(
    policed: AvatarView, fake_sdk_url: str
) -> None:
    policy = dict((d.split()[0], d.split()[1:]) for d in policed.avatar_page.policy.split("; "))
    sdk_origin = fake_sdk_url.rsplit("/", 1)[0]
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'", sdk_origin, "https://c.daily.co/call-machine/"]
    assert policy["connect-src"] == [API_HOST, "ws://127.0.0.1:9", *DAILY_CONNECT_SOURCES]
    for directive in ("frame-src", "object-src", "base-uri", "form-action"):
        assert policy[directive] == ["'none'"]
    assert not any("unsafe" in source for sources in policy.values() for source in sources)


def test_the_simulator_needs_no_webrtc() -> None:
    policy = stage_policy("http://127.0.0.1:8123", "http://127.0.0.1:8123/sim/web-sdk.js")
    assert "daily" not in policy
    assert "script-src 'self' http://127.0.0.1:8123;" in policy
    assert "connect-src http://127.0.0.1:8123 ws://127.0.0.1:8123;" in policy
    # the cloud: the SDK's CDN for modules, the service and Daily for connections
    cloud = stage_policy("https://api.avaturn.live", "https://esm.sh/@avaturn-live/web-sdk@0.3.7")
    assert "script-src 'self' https://esm.sh https://c.daily.co/call-machine/;" in cloud
    assert "connect-src https://api.avaturn.live wss://api.avaturn.live https://*.daily.co" in cloud
    # no backend yet: the stage alone
    assert "script-src 'self';" in stage_policy()
    assert "connect-src 'none';" in stage_policy()


def test_a_new_backend_reloads_the_stage_under_its_policy(
    policed: AvatarView, run_js: RunJs, qtbot: Any
) -> None:
    other_sdk = "http://127.0.0.1:7/sdk.js"
    with qtbot.waitSignal(policed.bridge.ready_changed, check_params_cb=bool, timeout=20_000):
        policed.avatar_page.allow_media_origins([API_HOST, other_sdk])
    assert "http://127.0.0.1:7" in policed.avatar_page.policy
    before = run_js(policed, WATCH_JS)
    run_js(policed, f"(() => {{ {ATTEMPTS['eval']} }})(); true")
    qtbot.waitUntil(lambda: run_js(policed, "window.__violations.length") > before)
    violation = json.loads(run_js(policed, "JSON.stringify(window.__violations.at(-1))"))
    assert "http://127.0.0.1:7" in violation["policy"]
    # the same backend again: no reload
    with qtbot.assertNotEmitted(policed.bridge.ready_changed):
        policed.avatar_page.allow_media_origins([API_HOST, other_sdk])
