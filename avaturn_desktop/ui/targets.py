"""Whom the composer speaks to: the current avatar, or all of them (a selector in the composer).

:class:`ComposerTarget` is what the composer talks to in place of the first slot's queue
presenter: it sends each action to the chosen slot's speaker and queue, or, for "All avatars",
to every slot's (the text as a :class:`~avaturn_desktop.services.fanout.FanOutBatch`). Ask
(a language model's answer) goes to one avatar: the chosen one, the first for "All avatars".
The rules of what a text becomes stay in the speaker; this only routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QWidget

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.services.fanout import FanOutBatch
from avaturn_desktop.services.runtime import AvatarSlot, Runtime
from avaturn_desktop.services.speech import Batch
from avaturn_desktop.ui.messages import MessageBus
from avaturn_desktop.ui.speaking import QueuePresenter

log = logging.getLogger("avaturn.ui")

#: The selector's value for "every avatar".
ALL: Final = -1


class ComposerTarget(QueuePresenter):
    """The composer's presenter, routed to :attr:`target` (a slot index, or :data:`ALL`)."""

    #: The target changed (its new value).
    target_changed = Signal(int)

    def __init__(self, runtime: Runtime, messages: MessageBus) -> None:
        first = runtime.slot(0)
        super().__init__(first.speaker, messages, answers=first.answers)
        self._runtime = runtime
        self.target = 0
        self._answers_of = 0
        self._unfollow_answers: Callable[[], None] = lambda: None

    def set_target(self, target: int) -> None:
        if target != ALL and not 0 <= target < len(self._runtime.slots):
            target = 0
        if target != self.target:
            self.target = target
            self._follow_answers(0 if target == ALL else target)
            self.target_changed.emit(target)

    def _follow_answers(self, index: int) -> None:
        """Ask goes to one avatar (the chosen one; the first for "All avatars"): its answers
        are the ones the composer shows."""
        if index == self._answers_of:
            return
        self._unfollow_answers()
        self._unfollow_answers = lambda: None
        self._answers_of = index
        answers = self._runtime.slot(index).answers
        self.answers = answers
        if index != 0:  # the first slot's answers are followed by the base class
            self._unfollow_answers = answers.subscribe(self.answer_changed.emit)

    def slots(self) -> list[AvatarSlot]:
        """The slots the composer speaks to now."""
        if self.target == ALL:
            return list(self._runtime.slots)
        return [self._runtime.slot(self.target)]

    # -- the composer's actions, routed ----------------------------------------------------

    def say(self, text: str) -> Batch | None:
        self.refusal = None
        slots = self.slots()
        if len(slots) == 1:
            try:
                return slots[0].speaker.say(text)
            except AppError as exc:
                self.refusal = exc.user_message
                self._messages.warning(f"{slots[0].label}: {exc.user_message}")
                return None
        parts: list[tuple[int, str, Batch]] = []
        for slot in slots:
            try:
                parts.append((slot.index, slot.label, slot.speaker.say(text)))
            except AppError as exc:
                self.refusal = f"{slot.label}: {exc.user_message}"
                self._messages.warning(f"{slot.label}: {exc.user_message}")
        return self._watch(FanOutBatch(text, parts)) if parts else None

    def _watch(self, batch: FanOutBatch) -> FanOutBatch:
        """When one avatar gives its copy back, the composer speaks to that avatar alone: the
        text put back in the box is what it did not get (the others said theirs)."""

        def on_change(fan: Batch) -> None:
            if isinstance(fan, FanOutBatch) and fan.given_back_slot is not None:
                self.set_target(fan.given_back_slot)

        batch.subscribe(on_change)
        return batch

    async def speak_now(self, text: str) -> Batch | None:
        self.refusal = None
        slots = self.slots()
        answers = await asyncio.gather(
            *(slot.speaker.speak_now(text) for slot in slots), return_exceptions=True
        )
        parts: list[tuple[int, str, Batch]] = []
        for slot, answer in zip(slots, answers, strict=True):
            if isinstance(answer, AppError):
                self.refusal = f"{slot.label}: {answer.user_message}"
                self._messages.error(f"{slot.label}: {answer.user_message}")
            elif isinstance(answer, BaseException):
                raise answer
            else:
                parts.append((slot.index, slot.label, answer))
        if not parts:
            return None
        return parts[0][2] if len(slots) == 1 else self._watch(FanOutBatch(text, parts))

    async def stop(self) -> bool:
        ok = True
        for slot in self.slots():
            try:
                await slot.queue.stop()
            except AppError as exc:
                self._messages.error(f"Could not stop {slot.label}: {exc.user_message}")
                ok = False
        return ok

    async def change_voice(self, voice_id: str) -> bool:
        ok = True
        for slot in self.slots():
            try:
                await slot.queue.change_voice(voice_id)
            except AppError as exc:
                self._messages.error(f"{slot.label}: {exc.user_message}")
                ok = False
            else:
                self._messages.info(f"{slot.label}: voice changed to {voice_id}.")
        return ok

    def close(self) -> None:
        self._unfollow_answers()
        super().close()


class TargetSelector(QComboBox):
    """ "Speak to: Avatar 1 / Avatar 2 / All avatars"; shown once there is a second avatar."""

    def __init__(self, target: ComposerTarget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composer.target")
        self.setToolTip("Which avatar the composer speaks to (and Stop stops)")
        self._target = target
        self.refresh()
        self.currentIndexChanged.connect(self._picked)
        target.target_changed.connect(self._show)

    def refresh(self) -> None:
        """The slots as they are now (call when one was added)."""
        slots = self._target._runtime.slots
        self.blockSignals(True)
        self.clear()
        for slot in slots:
            self.addItem(slot.label, slot.index)
        self.addItem("All avatars", ALL)
        self.blockSignals(False)
        self._show(self._target.target)
        self.setVisible(len(slots) > 1)

    def _picked(self, index: int) -> None:
        value = self.itemData(index)
        if isinstance(value, int):
            self._target.set_target(value)

    def _show(self, target: int) -> None:
        index = self.findData(target)
        if index >= 0 and index != self.currentIndex():
            self.blockSignals(True)
            self.setCurrentIndex(index)
            self.blockSignals(False)
