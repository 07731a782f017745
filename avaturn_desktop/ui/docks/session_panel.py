"""The session panel: what to create, Create / Cancel / Terminate, and the live session."""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from avaturn_desktop.core import catalog, models
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState
from avaturn_desktop.core.settings import SessionDefaults
from avaturn_desktop.ui.status_text import StatusText

#: Colours of the state badge: calm when idle, green when live, red when failed.
STATE_STYLE = {
    SessionState.IDLE: "#6b7280",
    SessionState.CREATING: "#b45309",
    SessionState.CONNECTING: "#b45309",
    SessionState.LIVE: "#15803d",
    SessionState.TERMINATING: "#b45309",
    SessionState.ENDED: "#374151",
    SessionState.FAILED: "#b91c1c",
}


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PresetCombo(QComboBox):
    """An editable combo of presets shown as "Name (id)"; the value is the id."""

    def __init__(self, presets: tuple[catalog.Preset, ...], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for preset in presets:
            self.addItem(f"{preset.name} ({preset.id})", preset.id)

    def value(self) -> str:
        text = self.currentText().strip()
        index = self.findText(text)
        if index >= 0:
            return str(self.itemData(index))
        return text

    def set_value(self, value: str) -> None:
        index = self.findData(value)
        if index >= 0:
            self.setCurrentIndex(index)
        else:
            self.setEditText(value)


class SessionPanel(QWidget):
    """Widgets emit intent; the presenter owns the state and the panel only renders it."""

    create_requested = Signal(object)  # a validated SessionCreate
    cancel_requested = Signal()
    terminate_requested = Signal()

    def __init__(
        self,
        defaults: SessionDefaults,
        *,
        warn_before_end_s: int = 120,
        clock: Any = time.time,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._clock = clock
        self._warn_before_end_s = warn_before_end_s
        self._snap = SessionSnapshot()

        self.avatar = PresetCombo(catalog.AVATARS)
        self.avatar.setObjectName("avatar")
        self.voice = PresetCombo(catalog.VOICES)
        self.voice.setObjectName("voice")
        self.background = QComboBox()
        self.background.addItems(["default", "transparent"])
        self.render_model = QComboBox()
        self.render_model.addItems(["delta", "golf"])
        self.absent_timeout = QSpinBox()
        self.absent_timeout.setRange(0, 86_400)
        self.absent_timeout.setSuffix(" s")
        self.max_duration = QSpinBox()
        self.max_duration.setRange(0, 200_000)
        self.max_duration.setSuffix(" s")
        self.absent_timeout.setToolTip(
            f"The session ends after this long with nobody watching (at least "
            f"{models.MIN_USER_ABSENT_TIMEOUT} s)."
        )
        self.max_duration.setToolTip(
            f"Hard cap on the session, {models.MIN_MAX_DURATION}–{models.MAX_MAX_DURATION} s."
        )

        self._errors: dict[str, QLabel] = {}
        form = QFormLayout()
        for key, label, widget in (
            ("avatar_id", "&Avatar", self.avatar),
            ("voice_id", "&Voice", self.voice),
            ("background", "&Background", self.background),
            ("model", "Render &model", self.render_model),
            ("user_absent_timeout", "Nobody-watching &timeout", self.absent_timeout),
            ("max_duration", "Max &duration", self.max_duration),
        ):
            error = QLabel()
            error.setObjectName(f"error.{key}")
            error.setStyleSheet("color: #b91c1c;")
            error.setWordWrap(True)
            error.hide()
            self._errors[key] = error
            column = QVBoxLayout()
            column.setSpacing(2)
            column.addWidget(widget)
            column.addWidget(error)
            caption = QLabel(label)
            caption.setBuddy(widget)
            form.addRow(caption, column)

        self.create_button = QPushButton("&Create session")
        self.create_button.setObjectName("create")
        self.cancel_button = QPushButton("Ca&ncel")
        self.cancel_button.setObjectName("cancel")
        self.terminate_button = QPushButton("&Terminate")
        self.terminate_button.setObjectName("terminate")
        buttons = QHBoxLayout()
        buttons.addWidget(self.create_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.terminate_button)

        self.state_label = QLabel()
        self.state_label.setObjectName("state")
        self.state_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.session_id = QLineEdit()
        self.session_id.setObjectName("session_id")
        self.session_id.setReadOnly(True)
        self.session_id.setPlaceholderText("no session")
        copy = QToolButton()
        copy.setText("Copy")
        copy.setToolTip("Copy the session id")
        copy.clicked.connect(self._copy_session_id)
        id_row = QHBoxLayout()
        id_row.addWidget(self.session_id)
        id_row.addWidget(copy)
        # Both tick every second: text that never relays the window out.
        self.elapsed = StatusText("–", chars=10)
        self.elapsed.setObjectName("elapsed")
        self.time_left = StatusText("–", chars=10)
        self.time_left.setObjectName("time_left")
        self._warned = False
        self.notice = QLabel()
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        status = QFormLayout()
        status.addRow("Session", id_row)
        status.addRow("Elapsed", self.elapsed)
        status.addRow("Time left", self.time_left)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.state_label)
        layout.addLayout(status)
        layout.addWidget(self.notice)
        layout.addStretch(1)

        self.create_button.clicked.connect(self.request_create)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.terminate_button.clicked.connect(self.terminate_requested)

        self._ticker = QTimer(self)
        self._ticker.setInterval(1000)
        self._ticker.timeout.connect(self._tick)
        self.set_defaults(defaults)
        self.show_snapshot(self._snap)

    # -- input -------------------------------------------------------------------------------

    def set_defaults(self, defaults: SessionDefaults) -> None:
        self.avatar.set_value(defaults.avatar_id)
        self.voice.set_value(defaults.voice_id)
        self.background.setCurrentText(defaults.background)
        self.render_model.setCurrentText(defaults.model)
        self.absent_timeout.setValue(defaults.user_absent_timeout)
        self.max_duration.setValue(defaults.max_duration)

    def field_values(self) -> dict[str, Any]:
        return {
            "avatar_id": self.avatar.value(),
            "voice_id": self.voice.value(),
            "background": self.background.currentText(),
            "model": self.render_model.currentText(),
            "user_absent_timeout": self.absent_timeout.value(),
            "max_duration": self.max_duration.value(),
        }

    def validated(self) -> tuple[SessionDefaults | None, dict[str, str]]:
        """The fields as a request, validated by the service's own model; or field errors."""
        values = self.field_values()
        body = {
            "avatar_id": values["avatar_id"],
            "conversation_engine": {
                "type": "text-echo",
                "tts": {"engine": "elevenlabs", "voice_id": values["voice_id"]},
            },
            "background": values["background"],
            "model": values["model"],
            "user_absent_timeout": values["user_absent_timeout"],
            "max_duration": values["max_duration"],
        }
        try:
            models.SessionCreate.model_validate(body)
        except ValidationError as exc:
            errors: dict[str, str] = {}
            for issue in exc.errors():
                loc = issue["loc"]
                key = "voice_id" if loc and loc[0] == "conversation_engine" else str(loc[0])
                errors.setdefault(key, _readable(issue["msg"]))
            return None, errors
        return SessionDefaults.model_validate(values), {}

    def request_create(self) -> None:
        defaults, errors = self.validated()
        for key, label in self._errors.items():
            label.setText(errors.get(key, ""))
            label.setVisible(key in errors)
        if defaults is not None:
            self.create_requested.emit(defaults)

    def _copy_session_id(self) -> None:
        if self.session_id.text():
            QGuiApplication.clipboard().setText(self.session_id.text())

    # -- rendering ---------------------------------------------------------------------------

    def show_snapshot(self, snap: SessionSnapshot) -> None:
        self._snap = snap
        state = snap.state
        text = state.label
        if state in (SessionState.ENDED, SessionState.FAILED) and snap.reason:
            text = f"{state.label}: {snap.reason}"
        self.state_label.setText(text)
        self.state_label.setStyleSheet(
            f"background: {STATE_STYLE[state]}; color: white; font-weight: bold;"
            " padding: 6px; border-radius: 4px;"
        )
        starting = state in (SessionState.CREATING, SessionState.CONNECTING)
        self.create_button.setEnabled(not state.busy)
        self.cancel_button.setEnabled(starting)
        self.terminate_button.setEnabled(state is SessionState.LIVE)
        for widget in (
            self.avatar,
            self.voice,
            self.background,
            self.render_model,
            self.absent_timeout,
            self.max_duration,
        ):
            widget.setEnabled(not state.busy)
        self.session_id.setText(snap.session_id or "")
        self.notice.setText(snap.detail or "")
        if state.busy:
            self._ticker.start()
        else:
            self._ticker.stop()
        self._tick()

    def set_warn_before_end(self, seconds: int) -> None:
        """The warning time changed in the settings: it applies from the next tick."""
        self._warn_before_end_s = seconds
        self._tick()

    def _tick(self) -> None:
        now = self._clock()
        snap = self._snap
        self.elapsed.setText(format_duration(snap.elapsed(now)))
        left = snap.time_left(now) if snap.state.busy else None
        self.time_left.setText(format_duration(left))
        warn = left is not None and left <= self._warn_before_end_s
        if warn != self._warned:  # a style sheet set again polishes the widget again
            self._warned = warn
            self.time_left.setStyleSheet("color: #b91c1c; font-weight: bold;" if warn else "")
        if warn and snap.state is SessionState.LIVE:
            self.notice.setText(f"The session ends in {format_duration(left)} (max duration).")


def _readable(message: str) -> str:
    return message[0].upper() + message[1:] if message else message
