"""File → Settings: backend, API key (into the OS keyring), page and speaking options, the
control API (on/off, its port, its token: shown, copied, renewed), Ask's language model
(base URL, model, system prompt, timeout, the simulator's pace, its key into the keyring), the
voice bench (how many avatars side by side, when a connect is slow, the optional ElevenLabs
key); the show (stage background, captions, audience screen) and the keys on pages of their
own."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError
from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from avaturn_desktop.core.settings import MAX_SLOT_QUOTA, Settings
from avaturn_desktop.services import control_token, secrets
from avaturn_desktop.ui.keys import KeysEditor, overrides_from
from avaturn_desktop.ui.show_settings import ShowSettings


class SettingsDialog(QDialog):
    saved = Signal(object)  # the new Settings
    #: A new API key was stored in the keyring (the shell offers to use it now).
    key_stored = Signal()

    def __init__(
        self,
        settings: Settings,
        parent: QWidget | None = None,
        *,
        data_dir: Path | None = None,
        control_url: str | None = None,
    ) -> None:
        super().__init__(parent)
        self._data_dir = data_dir
        self.setObjectName("settings_dialog")
        self.setWindowTitle("Settings")
        self._settings = settings

        self.backend = QComboBox()
        for value, label in (
            ("auto", "Automatic: the cloud with an API key, else the simulator"),
            ("cloud", "Avaturn cloud"),
            ("simulator", "Local simulator"),
        ):
            self.backend.addItem(label, value)
        self.backend.setCurrentIndex(self.backend.findData(settings.backend))
        self.api_base = QLineEdit(settings.api_base)
        self.sdk_url = QLineEdit(settings.sdk_url)
        self.api_key = QLineEdit()
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        _, source = secrets.load_api_key()
        self.api_key.setPlaceholderText(
            {
                "environment": f"set by {secrets.ENV_VAR} (the environment wins)",
                "keyring": "stored in the OS keyring (type to replace)",
                "none": "not set: sessions run on the simulator",
            }[source]
        )
        self.forget_key = QCheckBox("Remove the stored key from the keyring")
        self.forget_key.setVisible(source == "keyring")
        self.init_timeout = QDoubleSpinBox()
        self.init_timeout.setRange(1, 600)
        self.init_timeout.setSuffix(" s")
        self.init_timeout.setValue(settings.init_timeout_s)
        self.keep_alive = QCheckBox("Keep the avatar connected when idle (no 5-minute timeout)")
        self.keep_alive.setChecked(settings.keep_alive)
        self.split = QCheckBox("Cut long text into sentences, one task each")
        self.split.setChecked(settings.split_sentences)
        self.max_chunk = QSpinBox()
        self.max_chunk.setRange(40, 5000)
        self.max_chunk.setValue(settings.max_chunk_chars)
        self.offline = QComboBox()
        self.offline.addItem("Hold it in the queue until a session is live", "hold")
        self.offline.addItem("Refuse it with a message", "refuse")
        self.offline.setCurrentIndex(self.offline.findData(settings.offline_policy))
        self.warn = QSpinBox()
        self.warn.setRange(0, 3600)
        self.warn.setSuffix(" s")
        self.warn.setValue(settings.warn_before_end_s)
        self.confirm_terminate = QCheckBox(
            "Ask before ending a session while the avatar speaks or lines wait"
        )
        self.confirm_terminate.setChecked(settings.confirm_terminate)
        self.control_enabled = QCheckBox(
            "Turn on the local control API (Stream Deck, Companion, scripts) at the next start"
        )
        self.control_enabled.setChecked(settings.control_enabled)
        self.control_port = QSpinBox()
        self.control_port.setRange(1, 65535)
        self.control_port.setValue(settings.control_port or 8770)
        self.control_status = QLabel(
            f"Listening at {control_url}" if control_url else "Not listening in this run"
        )
        self.control_status.setObjectName("control_status")
        self.control_token = QLineEdit()
        self.control_token.setObjectName("control_token")
        self.control_token.setReadOnly(True)
        self.control_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.show_token = QPushButton("Show")
        self.show_token.setCheckable(True)
        self.show_token.toggled.connect(
            lambda on: self.control_token.setEchoMode(
                QLineEdit.EchoMode.Normal if on else QLineEdit.EchoMode.Password
            )
        )
        self.copy_token = QPushButton("Copy")
        self.copy_token.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(self.control_token.text())
        )
        self.renew_token = QPushButton("Renew")
        self.renew_token.setToolTip("Make a new token; the old one stops working at once")
        self.renew_token.clicked.connect(self._renew_token)
        token_row = QHBoxLayout()
        token_row.addWidget(self.control_token, 1)
        for button in (self.show_token, self.copy_token, self.renew_token):
            token_row.addWidget(button)
        if data_dir is not None:
            self.control_token.setText(control_token.load_token(data_dir) or "")
        else:
            for widget in (self.control_token, self.show_token, self.copy_token, self.renew_token):
                widget.setEnabled(False)
        llm = settings.llm
        self.llm_base_url = QLineEdit(llm.base_url)
        self.llm_base_url.setObjectName("llm_base_url")
        self.llm_model = QLineEdit(llm.model)
        self.llm_model.setObjectName("llm_model")
        self.llm_prompt = QPlainTextEdit(llm.system_prompt)
        self.llm_prompt.setObjectName("llm_prompt")
        self.llm_prompt.setTabChangesFocus(True)
        self.llm_prompt.setFixedHeight(70)
        self.llm_timeout = QDoubleSpinBox()
        self.llm_timeout.setRange(1, 600)
        self.llm_timeout.setSuffix(" s")
        self.llm_timeout.setValue(llm.timeout_s)
        self.llm_sim_rate = QDoubleSpinBox()
        self.llm_sim_rate.setRange(1, 10_000)
        self.llm_sim_rate.setSuffix(" tokens/s")
        self.llm_sim_rate.setToolTip("How fast the built-in simulator writes (from the next start)")
        self.llm_sim_rate.setValue(llm.sim_tokens_per_second)
        self.llm_key = QLineEdit()
        self.llm_key.setObjectName("llm_key")
        self.llm_key.setEchoMode(QLineEdit.EchoMode.Password)
        _, llm_source = secrets.load_llm_api_key()
        self.llm_key.setPlaceholderText(
            {
                "environment": f"set by {secrets.LLM_ENV_VAR} (the environment wins)",
                "keyring": "stored in the OS keyring (type to replace)",
                "none": "not set: with OpenAI's URL, the simulator answers",
            }[llm_source]
        )
        self.forget_llm_key = QCheckBox("Remove the stored language model key from the keyring")
        self.forget_llm_key.setVisible(llm_source == "keyring")
        self.slot_quota = QSpinBox()
        self.slot_quota.setObjectName("slot_quota")
        self.slot_quota.setRange(1, MAX_SLOT_QUOTA)
        self.slot_quota.setValue(settings.slot_quota)
        self.slot_quota.setToolTip(
            "Each avatar is a session on the service: keep this within your plan's limit of "
            "sessions at once."
        )
        self.slow_connect = QDoubleSpinBox()
        self.slow_connect.setRange(0.5, 600)
        self.slow_connect.setSuffix(" s")
        self.slow_connect.setValue(settings.slow_connect_s)
        self.elevenlabs_key = QLineEdit()
        self.elevenlabs_key.setObjectName("elevenlabs_key")
        self.elevenlabs_key.setEchoMode(QLineEdit.EchoMode.Password)
        _, el_source = secrets.load_elevenlabs_key()
        self.elevenlabs_key.setPlaceholderText(
            {
                "environment": f"set by {secrets.ELEVENLABS_ENV_VAR} (the environment wins)",
                "keyring": "stored in the OS keyring (type to replace)",
                "none": "optional: imports your ElevenLabs voices with their names",
            }[el_source]
        )
        self.forget_elevenlabs_key = QCheckBox("Remove the stored ElevenLabs key")
        self.forget_elevenlabs_key.setVisible(el_source == "keyring")
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setStyleSheet("color: #b91c1c;")
        self.error.setWordWrap(True)

        form = QFormLayout()
        form.addRow("&Backend", self.backend)
        form.addRow("API &base URL", self.api_base)
        form.addRow("API &key", self.api_key)
        form.addRow("", self.forget_key)
        form.addRow("Web &SDK URL", self.sdk_url)
        form.addRow("Connect &timeout", self.init_timeout)
        form.addRow("", self.keep_alive)
        form.addRow("", self.split)
        form.addRow("Longest &sentence", self.max_chunk)
        form.addRow("Text with no session &live", self.offline)
        form.addRow("&Warn before the end", self.warn)
        form.addRow("", self.confirm_terminate)
        form.addRow("", self.control_enabled)
        form.addRow("Control API &port", self.control_port)
        form.addRow("", self.control_status)
        form.addRow("Control API &token", token_row)
        form.addRow(QLabel("<b>Ask: a language model answers, the avatar speaks</b>"))
        form.addRow("Model base &URL", self.llm_base_url)
        form.addRow("&Model", self.llm_model)
        form.addRow("System &prompt", self.llm_prompt)
        form.addRow("Model API key", self.llm_key)
        form.addRow("", self.forget_llm_key)
        form.addRow("Answer timeout", self.llm_timeout)
        form.addRow("Simulator's pace", self.llm_sim_rate)
        form.addRow("&Avatars side by side", self.slot_quota)
        form.addRow("S&low connect after", self.slow_connect)
        form.addRow("&ElevenLabs key", self.elevenlabs_key)
        form.addRow("", self.forget_elevenlabs_key)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        general = QWidget()
        general.setLayout(form)
        self.show_page = ShowSettings(settings)
        self.keys_page = KeysEditor(settings.keys)
        self.tabs = QTabWidget()
        self.tabs.addTab(general, "&General")
        self.tabs.addTab(self.show_page, "S&how")
        self.tabs.addTab(self.keys_page, "&Keys")
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def accept(self) -> None:
        if self.keys_page.conflicts:
            self.tabs.setCurrentWidget(self.keys_page)
            self.error.setText(self.keys_page.message.text())
            return
        try:
            new = Settings.model_validate(
                {
                    **self._settings.model_dump(),
                    "backend": self.backend.currentData(),
                    "api_base": self.api_base.text(),
                    "sdk_url": self.sdk_url.text(),
                    "init_timeout_s": self.init_timeout.value(),
                    "keep_alive": self.keep_alive.isChecked(),
                    "split_sentences": self.split.isChecked(),
                    "max_chunk_chars": self.max_chunk.value(),
                    "offline_policy": self.offline.currentData(),
                    "warn_before_end_s": self.warn.value(),
                    "confirm_terminate": self.confirm_terminate.isChecked(),
                    "control_enabled": self.control_enabled.isChecked(),
                    "control_port": self.control_port.value(),
                    **self.show_page.values(),
                    "keys": overrides_from(self.keys_page),
                    "llm": {
                        **self._settings.llm.model_dump(),
                        "base_url": self.llm_base_url.text(),
                        "model": self.llm_model.text().strip(),
                        "system_prompt": self.llm_prompt.toPlainText(),
                        "timeout_s": self.llm_timeout.value(),
                        "sim_tokens_per_second": self.llm_sim_rate.value(),
                    },
                    "slot_quota": self.slot_quota.value(),
                    "slow_connect_s": self.slow_connect.value(),
                }
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            self.error.setText(f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
            return
        key = self.api_key.text().strip()
        llm_key = self.llm_key.text().strip()
        try:
            if key:
                secrets.store_api_key(key)
            elif self.forget_key.isChecked():
                secrets.store_api_key(None)
            if llm_key:
                secrets.store_llm_api_key(llm_key)
            elif self.forget_llm_key.isChecked():
                secrets.store_llm_api_key(None)
        except secrets.KeyringUnavailableError as exc:
            self.error.setText(str(exc))
            return
        finally:
            self.api_key.clear()
            self.llm_key.clear()
        el_key = self.elevenlabs_key.text().strip()
        try:
            if el_key:
                secrets.store_elevenlabs_key(el_key)
            elif self.forget_elevenlabs_key.isChecked():
                secrets.store_elevenlabs_key(None)
        except secrets.KeyringUnavailableError as exc:
            self.error.setText(str(exc))
            return
        finally:
            self.elevenlabs_key.clear()
        self.saved.emit(new)
        if key:
            self.key_stored.emit()
        super().accept()

    def _renew_token(self) -> None:
        if self._data_dir is None:
            return
        if os.environ.get(control_token.TOKEN_ENV):
            self.error.setText(f"The token is set by {control_token.TOKEN_ENV}; change it there.")
            return
        self.control_token.setText(control_token.renew_token(self._data_dir))
        self.error.setText("A new control token is in force; the old one no longer works.")
