"""Sound: for each avatar, the output device, the level meter, the volume and mute,
remembered in the settings (``Settings.slots[i].audio``) and applied at each start.

What Qt allows, and what it does not: QtWebEngine has no per-page output device. The page
chooses it for its media elements with ``HTMLMediaElement.setSinkId`` (Chromium supports it;
``resources/web/audio.js``), so the device list is the page's own (``enumerateDevices``:
Chromium shows device names only once the page was allowed a microphone, so they may read
"Output 2"; its ids also change between runs of an off-the-record page, which is why the
device is remembered by name as well). Mute is also set on the page itself
(``QWebEnginePage.setAudioMuted``), which holds for sound the page plays outside a media
element. The level is measured in the page, from the media's own stream; a page whose
avatar has no sound track (the simulator's stand-in today) shows no level, and says so.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QLabel,
    QProgressBar,
    QSlider,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.events import AudioLevel, Inited, Ready
from avaturn_desktop.core.settings import AudioOutput
from avaturn_desktop.services.runtime import AvatarSlot, Runtime
from avaturn_desktop.ui.messages import MessageBus
from avaturn_desktop.ui.web.stage import Stage
from avaturn_desktop.ui.web.view import AvatarView

log = logging.getLogger("avaturn.ui")


class SlotAudio:
    """One avatar's row of controls, and the page it drives."""

    def __init__(
        self,
        slot: AvatarSlot,
        view: AvatarView,
        stage: Stage,
        runtime: Runtime,
        messages: MessageBus,
    ) -> None:
        self.slot = slot
        self._view = view
        self._stage = stage
        self._runtime = runtime
        self._messages = messages
        self._devices: list[dict[str, str]] = []
        i = slot.index
        self.label = QLabel(slot.label)
        self.device = QComboBox()
        self.device.setObjectName(f"audio.device.{i}")
        self.device.setToolTip(
            "Where this avatar's sound goes (the page's own list of output devices)"
        )
        self.device.addItem("System default", "")
        self.volume = QSlider(Qt.Orientation.Horizontal)
        self.volume.setObjectName(f"audio.volume.{i}")
        self.volume.setRange(0, 100)
        self.muted = QCheckBox("Mute")
        self.muted.setObjectName(f"audio.mute.{i}")
        self.level = QProgressBar()
        self.level.setObjectName(f"audio.level.{i}")
        self.level.setRange(0, 100)
        self.level.setTextVisible(False)
        self.level.setMaximumHeight(12)
        self.status = QLabel("no level measured yet")
        self.status.setObjectName(f"audio.status.{i}")
        self.status.setStyleSheet("color: #6b7280;")
        audio = self.saved()
        self.volume.setValue(round(audio.volume * 100))
        self.muted.setChecked(audio.muted)
        self.device.activated.connect(lambda _i: self._changed())
        self.volume.sliderReleased.connect(self._changed)
        self.volume.valueChanged.connect(self._volume_moved)
        self.muted.toggled.connect(lambda _on: self._changed())
        stage.event.connect(self._on_event)
        view.avatar_page.recentlyAudibleChanged.connect(self._audible)
        view.avatar_page.setAudioMuted(audio.muted)

    def saved(self) -> AudioOutput:
        return self._runtime.settings.value.slot_settings(self.slot.index).audio

    def current(self) -> AudioOutput:
        device_id = str(self.device.currentData() or "")
        label = self.device.currentText() if device_id else ""
        return AudioOutput(
            device_id=device_id,
            device_label=label,
            volume=self.volume.value() / 100,
            muted=self.muted.isChecked(),
        )

    def _on_event(self, event: object) -> None:
        if isinstance(event, AudioLevel):
            if event.level is not None:
                self.level.setValue(round(event.level * 100))
                self.status.setText("")
        elif isinstance(event, Ready | Inited):
            self.apply()  # a fresh page, or new media: the saved choice again

    def _volume_moved(self, _value: int) -> None:
        if not self.volume.isSliderDown():  # keys and clicks; a drag applies when released
            self._changed()

    def _audible(self, audible: bool) -> None:
        if not self.level.value() and audible:
            self.status.setText("playing sound (no level from the page)")
        elif not audible:
            self.level.setValue(0)

    def _changed(self) -> None:
        audio = self.current()
        try:
            self._runtime.settings.update(
                slots=self._runtime.settings.value.with_slot(self.slot.index, audio=audio)
            )
        except OSError as exc:
            self._messages.warning(f"Could not save the settings: {exc.strerror}")
        self._view.avatar_page.setAudioMuted(audio.muted)
        self.apply()

    @asyncSlot()
    async def apply(self) -> None:
        await self.send(self.saved())

    async def send(self, audio: AudioOutput) -> dict[str, Any]:
        """Tell the page; match the saved device by id, else by name, in the page's list."""
        try:
            answer = await self._stage.audio_output(audio.device_id, audio.volume, audio.muted)
            devices = [d for d in answer.get("devices", []) if isinstance(d, dict)]
            self._show_devices(devices)
            wanted = _match(devices, audio)
            if wanted != audio.device_id and (wanted or audio.device_id):
                answer = await self._stage.audio_output(wanted, audio.volume, audio.muted)
            if answer.get("sink_error"):
                self.status.setText(f"device not chosen: {answer['sink_error']}")
            elif audio.device_id and not answer.get("sink_supported", False):
                self.status.setText("this page cannot choose a device (default used)")
            return answer
        except AppError as exc:
            log.info("%s: sound settings not applied: %s", self.slot.label, exc.user_message)
            return {}

    def _show_devices(self, devices: list[dict[str, str]]) -> None:
        if devices == self._devices:
            return
        self._devices = devices
        saved = self.saved()
        self.device.blockSignals(True)
        self.device.clear()
        self.device.addItem("System default", "")
        for n, device in enumerate(devices, 1):
            device_id = str(device.get("id", ""))
            if device_id in ("", "default"):
                continue
            self.device.addItem(str(device.get("label") or f"Output {n}"), device_id)
        match = _match(devices, saved)
        index = self.device.findData(match) if match else 0
        self.device.setCurrentIndex(max(0, index))
        self.device.blockSignals(False)


def _match(devices: list[dict[str, str]], audio: AudioOutput) -> str:
    """The page's id of the saved device: by id, else by name; "" (default) when gone."""
    if not audio.device_id:
        return ""
    for device in devices:
        if device.get("id") == audio.device_id:
            return audio.device_id
    if audio.device_label:
        for device in devices:
            if device.get("label") == audio.device_label:
                return str(device.get("id", ""))
    return ""


class AudioPanel(QWidget):
    """Every avatar's sound, one row each."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("audio_panel")
        self.rows: dict[int, SlotAudio] = {}
        self._grid = QGridLayout()
        for column, title in enumerate(("Avatar", "Output device", "Volume", "", "Level")):
            self._grid.addWidget(QLabel(f"<b>{title}</b>"), 0, column)
        note = QLabel(
            "The device is chosen inside each avatar's page (where Chromium supports it); "
            "it is remembered by name."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: #6b7280;")
        layout = QVBoxLayout(self)
        layout.addLayout(self._grid)
        layout.addWidget(note)
        layout.addStretch(1)

    def add(self, row: SlotAudio) -> None:
        self.rows[row.slot.index] = row
        r = 2 * row.slot.index + 1
        self._grid.addWidget(row.label, r, 0)
        self._grid.addWidget(row.device, r, 1)
        self._grid.addWidget(row.volume, r, 2)
        self._grid.addWidget(row.muted, r, 3)
        self._grid.addWidget(row.level, r, 4)
        self._grid.addWidget(row.status, r + 1, 1, 1, 4)
