"""Helpers for the web tests that are not fixtures."""

from __future__ import annotations

from typing import Any

from avaturn_desktop.ui.web.scheme import stage_policy
from avaturn_desktop.ui.web.view import AvatarView


def use_backend(view: AvatarView, qtbot: Any, api_host: str, sdk_url: str) -> None:
    """Give the loaded stage a backend, and wait until it was loaded again under its policy."""
    if view.avatar_page.policy == stage_policy(api_host, sdk_url):
        return
    with qtbot.waitSignal(view.bridge.ready_changed, timeout=20_000, check_params_cb=bool):
        view.avatar_page.allow_media_origins([api_host, sdk_url])
