"""The session panel: validation by the service's own model, errors at the field, rendering."""

from __future__ import annotations

from typing import Any

import pytest

from avaturn_desktop.core.models import SessionCreate
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState
from avaturn_desktop.core.settings import SessionDefaults
from avaturn_desktop.ui.docks.session_panel import SessionPanel, format_duration


@pytest.fixture
def panel(qtbot: Any) -> SessionPanel:
    widget = SessionPanel(SessionDefaults(), clock=lambda: 1000.0)
    qtbot.addWidget(widget)
    return widget


def test_valid_fields_request_a_session(panel: SessionPanel, qtbot: Any) -> None:
    panel.voice.set_value("EXAVITQu4vr4xnSDxMaL")
    panel.background.setCurrentText("transparent")
    with qtbot.waitSignal(panel.create_requested) as emitted:
        panel.create_button.click()
    defaults = emitted.args[0]
    assert isinstance(defaults, SessionDefaults)
    request = defaults.to_request()
    assert isinstance(request, SessionCreate)
    assert request.voice_id == "EXAVITQu4vr4xnSDxMaL"
    assert request.background == "transparent"


@pytest.mark.parametrize(
    ("field", "set_value", "needle"),
    [
        (
            "user_absent_timeout",
            lambda p: p.absent_timeout.setValue(5),
            "greater than or equal to 10",
        ),
        ("max_duration", lambda p: p.max_duration.setValue(30), "greater than or equal to 60"),
        ("max_duration", lambda p: p.max_duration.setValue(90_000), "less than or equal to 86400"),
        ("voice_id", lambda p: p.voice.setEditText(""), "at least 1 character"),
        ("avatar_id", lambda p: p.avatar.setEditText(""), "at least 1 character"),
    ],
)
def test_bad_fields_show_the_error_at_the_field(
    panel: SessionPanel, qtbot: Any, field: str, set_value: Any, needle: str
) -> None:
    set_value(panel)
    with qtbot.assertNotEmitted(panel.create_requested):
        panel.create_button.click()
    error = panel._errors[field]
    assert error.isVisibleTo(panel)
    assert needle in error.text()
    others = [
        key for key, label in panel._errors.items() if key != field and label.isVisibleTo(panel)
    ]
    assert others == []


def test_fixing_the_field_clears_its_error(panel: SessionPanel, qtbot: Any) -> None:
    panel.absent_timeout.setValue(5)
    panel.create_button.click()
    panel.absent_timeout.setValue(30)
    with qtbot.waitSignal(panel.create_requested):
        panel.create_button.click()
    assert not panel._errors["user_absent_timeout"].isVisibleTo(panel)


def test_rendering_follows_the_state(panel: SessionPanel) -> None:
    request = SessionCreate(max_duration=600)
    live = SessionSnapshot(
        state=SessionState.LIVE, session_id="s-1", request=request, created_at=500.0
    )
    panel.show_snapshot(live)
    assert panel.state_label.text() == "Live"
    assert panel.session_id.text() == "s-1"
    assert not panel.create_button.isEnabled()
    assert panel.terminate_button.isEnabled()
    assert not panel.cancel_button.isEnabled()
    assert not panel.voice.isEnabled()
    assert panel.elapsed.text() == "8:20"
    assert panel.time_left.text() == "1:40"  # under the 120 s warning
    assert "ends in 1:40" in panel.notice.text()

    panel.show_snapshot(
        SessionSnapshot(state=SessionState.CONNECTING, request=request, created_at=990.0)
    )
    assert panel.cancel_button.isEnabled() and not panel.terminate_button.isEnabled()

    ended = SessionSnapshot(
        state=SessionState.ENDED,
        session_id="s-1",
        request=request,
        created_at=500.0,
        ended_at=560.0,
        reason="max duration reached",
    )
    panel.show_snapshot(ended)
    assert panel.state_label.text() == "Ended: max duration reached"
    assert panel.create_button.isEnabled()
    assert panel.elapsed.text() == "1:00"
    assert panel.time_left.text() == "–"


def test_format_duration() -> None:
    assert format_duration(None) == "–"
    assert format_duration(59.9) == "0:59"
    assert format_duration(3725) == "1:02:05"
