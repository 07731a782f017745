"""The queue panel's wait after a 429 (countdown, Send now), its Retry of a line that may have
been spoken, and the sender's errors: on qasync's real loop, where asyncio sleeps are QTimers."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import qasync
from PySide6.QtCore import QEvent, QObject, QRect
from PySide6.QtCore import Signal as QtSignal
from speaking_fakes import QueueRig, until

from avaturn_desktop.core.errors import RETRY_AFTER_CEILING_S, RateLimitedError, UnclearOutcomeError
from avaturn_desktop.core.queue import ChangeKind, ItemState, QueueChange, QueueItem
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech import Speaker
from avaturn_desktop.ui.docks import queue_panel
from avaturn_desktop.ui.docks.queue_panel import QueuePanel, describe
from avaturn_desktop.ui.frames import FRAME_MS
from avaturn_desktop.ui.speaking import QueuePresenter


@pytest.fixture
def panel(queue_rig: QueueRig, qtbot: Any) -> Iterator[QueuePanel]:
    speaker = Speaker(queue_rig.queue, SettingsStore(queue_rig.settings))
    presenter = QueuePresenter(speaker, queue_rig.bus)
    widget = QueuePanel(presenter)
    qtbot.addWidget(widget)
    yield widget
    presenter.close()


def select(panel: QueuePanel, item_id: int) -> None:
    panel.refresh()
    row = panel.model.row_of(item_id)
    assert row is not None
    panel.list.setCurrentIndex(panel.model.index(row))


@pytest.mark.parametrize("retry_after", [1e9, 3e6, float("inf"), 3600.0])
def test_a_huge_retry_after_waits_at_most_the_ceiling_and_can_be_skipped(
    panel: QueuePanel, queue_rig: QueueRig, qloop: qasync.QEventLoop, retry_after: float
) -> None:
    """On qasync a 1e9 s sleep overflowed Qt's timer and killed the sender for good."""
    queue_rig.client.script = [RateLimitedError("Busy.", retry_after=retry_after)]
    queue_rig.controller.go_live()
    first, _ = queue_rig.queue.enqueue(["Busy one.", "Behind it."])
    qloop.run_until_complete(until(lambda: queue_rig.queue.items[0].retry_at is not None))
    item = queue_rig.queue.items[0]
    assert item.retry_at is not None
    import time

    assert item.retry_at - time.time() <= RETRY_AFTER_CEILING_S + 1
    select(panel, first.item_id)
    shown = panel.model.data(panel.model.index(0))
    assert "sending again in 30 s" in shown or "sending again in 29 s" in shown
    assert panel._countdown.isActive()
    assert panel.skip_button.isEnabled()
    panel.skip_button.click()
    qloop.run_until_complete(
        until(lambda: [i.state for i in queue_rig.queue.items] == [ItemState.SENT] * 2)
    )
    assert [text for _, text in queue_rig.client.calls] == ["Busy one.", "Busy one.", "Behind it."]
    panel.refresh()
    assert not panel._countdown.isActive()  # nothing counts down any more


def test_the_countdown_counts_down() -> None:
    from avaturn_desktop.core.queue import QueueItem

    item = QueueItem(item_id=1, text="Hi.", state=ItemState.WAITING, row_id=1, retry_at=1012.2)
    assert describe(item, now=1000.0).startswith("[waiting: the service is busy; sending again")
    assert "in 13 s" in describe(item, now=1000.0)
    assert "in 0 s" in describe(item, now=1013.0)


def test_retry_of_a_line_that_may_have_been_spoken_asks_first(
    panel: QueuePanel,
    queue_rig: QueueRig,
    qloop: qasync.QEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: list[bool] = []
    asked: list[str] = []

    def ask(cls: Any, parent: Any, text: str) -> bool:
        asked.append(text)
        return answers.pop(0)

    monkeypatch.setattr(queue_panel.RetryUnclearDialog, "ask", classmethod(ask))
    queue_rig.client.script = [UnclearOutcomeError("The connection broke.")]
    queue_rig.controller.go_live()
    (item,) = queue_rig.queue.enqueue("Maybe said.")
    qloop.run_until_complete(until(lambda: queue_rig.queue.items[0].state is ItemState.FAILED))
    select(panel, item.item_id)
    answers[:] = [False, True]
    panel.retry_button.click()  # the person says no: nothing is sent
    assert len(queue_rig.queue.items) == 1
    panel.retry_button.click()  # yes: sent again, knowingly
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 2))
    assert asked == ["Maybe said.", "Maybe said."]


def test_a_sender_error_is_shown_above_the_list(
    panel: QueuePanel, queue_rig: QueueRig, qloop: qasync.QEventLoop
) -> None:
    queue_rig.client.script = [RuntimeError("a bug")]
    queue_rig.controller.go_live()
    queue_rig.queue.enqueue(["Broken.", "Fine."])
    qloop.run_until_complete(
        until(lambda: [i.state for i in queue_rig.queue.items][-1] is ItemState.SENT)
    )
    assert not panel.error_label.isHidden()
    assert "RuntimeError" in panel.error_label.text()


# -- drawing: a frame at a time, a row at a time, no relayout of the window ----------------------


class _StubQueue:
    def __init__(self, presenter: _StubPresenter) -> None:
        self._presenter = presenter

    def item(self, item_id: int) -> QueueItem | None:
        return next((i for i in self._presenter.items if i.item_id == item_id), None)


class _StubPresenter(QObject):
    """What the queue panel reads of a presenter, with items set by the test."""

    changed = QtSignal(object)

    def __init__(self, items: list[QueueItem]) -> None:
        super().__init__()
        self.items = tuple(items)
        self.paused = False
        self.live = True
        self.queue = _StubQueue(self)

    @property
    def item_ids(self) -> tuple[int, ...]:
        return tuple(i.item_id for i in self.items)

    def clear_finished(self) -> None: ...

    def resume(self) -> None: ...

    def unfinished(self) -> int:
        return 0

    def say_unfinished_again(self) -> None: ...

    def set_items(self, items: list[QueueItem]) -> None:
        """Become ``items``, telling each change as the queue does (removed, added, moved,
        changed: one notification an item)."""
        old = {i.item_id: i for i in self.items}
        new = {i.item_id for i in items}
        kept_before = [i.item_id for i in self.items if i.item_id in new]
        kept_after = [i.item_id for i in items if i.item_id in old]
        self.items = tuple(items)
        for item_id, item in old.items():
            if item_id not in new:
                self.changed.emit(QueueChange(ChangeKind.REMOVED, item))
        for item in items:
            if item.item_id not in old:
                self.changed.emit(QueueChange(ChangeKind.ADDED, item))
            elif old[item.item_id] != item:
                self.changed.emit(QueueChange(ChangeKind.CHANGED, item))
        if kept_before != kept_after:
            moved = next(a for a, b in zip(kept_before, kept_after, strict=True) if a != b)
            self.changed.emit(QueueChange(ChangeKind.MOVED, self.queue.item(moved)))

    def change(self, item: QueueItem) -> None:
        self.items = tuple(item if i.item_id == item.item_id else i for i in self.items)
        self.changed.emit(QueueChange(ChangeKind.CHANGED, item))


def _item(item_id: int, state: ItemState | None = ItemState.WAITING) -> QueueItem:
    return QueueItem(
        item_id=item_id, text=f"Line {item_id}.", state=state or ItemState.WAITING, row_id=item_id
    )


@pytest.mark.parametrize("seed", range(8))
def test_the_rows_follow_any_edit_of_the_queue_without_a_reset(qtbot: Any, seed: int) -> None:
    """Items added anywhere, removed, moved, several at once: the rows become the queue's
    order by insertions, removals and layout changes, and the selected item stays selected."""
    rng = random.Random(seed)
    presenter = _StubPresenter([_item(n) for n in range(12)])
    panel = QueuePanel(presenter)  # type: ignore[arg-type]
    qtbot.addWidget(panel)
    resets: list[int] = []
    panel.model.modelReset.connect(lambda: resets.append(1))
    next_id = 100
    for _ in range(30):
        ids = [i.item_id for i in presenter.items]
        selected = rng.choice(ids) if ids else None
        if selected is not None:
            panel.list.setCurrentIndex(panel.model.index(panel.model.row_of(selected) or 0))
        rng.shuffle(ids) if rng.random() < 0.3 else None
        ids = [i for i in ids if rng.random() > 0.2]  # some removed
        for _ in range(rng.randrange(4)):  # some added, anywhere
            ids.insert(rng.randrange(len(ids) + 1), next_id)
            next_id += 1
        state = rng.choice(list(ItemState))
        presenter.set_items([_item(i, state if rng.random() < 0.5 else None) for i in ids])
        panel.refresh()
        assert [i.item_id for i in panel.model.items] == ids
        shown = [panel.model.data(panel.model.index(r)) for r in range(panel.model.rowCount())]
        assert shown == [describe(i) for i in presenter.items]
        if selected in ids:
            assert panel.selected() is not None
            assert panel.selected().item_id == selected  # type: ignore[union-attr]
    assert resets == []


def test_changes_are_drawn_together_within_a_frame(qtbot: Any) -> None:
    presenter = _StubPresenter([_item(n) for n in range(20)])
    panel = QueuePanel(presenter)  # type: ignore[arg-type]
    qtbot.addWidget(panel)
    redrawn: list[tuple[int, int]] = []
    panel.model.dataChanged.connect(lambda a, b: redrawn.append((a.row(), b.row())))
    for n in range(5):
        presenter.change(_item(n, ItemState.SENDING))
        presenter.change(_item(n, ItemState.SENT))
    assert redrawn == []  # noted, not drawn yet
    assert panel._refresh_timer.interval() == FRAME_MS
    qtbot.waitUntil(lambda: len(redrawn) == 5, timeout=2000)
    assert sorted(redrawn) == [(n, n) for n in range(5)]  # each changed row once
    assert all("[sent]" in panel.model.data(panel.model.index(n)) for n in range(5))
    assert panel.summary.text().startswith("15 waiting · 5 with the avatar")


def test_a_line_changing_state_repaints_its_row_and_not_the_window(qtbot: Any) -> None:
    """The list used to lay itself out and repaint whole on every changed line, and the count
    under it asked the window for a new layout each time it changed."""
    presenter = _StubPresenter([_item(n) for n in range(30)])
    panel = QueuePanel(presenter)  # type: ignore[arg-type]
    qtbot.addWidget(panel)
    panel.resize(420, 600)
    panel.show()
    qtbot.waitExposed(panel)
    painted: list[QRect] = []
    layouts: list[int] = []

    class Spy(QObject):
        def eventFilter(self, watched: QObject, event: QEvent) -> bool:
            if event.type() == QEvent.Type.Paint and watched is panel.list.viewport():
                painted.append(event.region().boundingRect())  # type: ignore[attr-defined]
            if event.type() == QEvent.Type.LayoutRequest:
                layouts.append(1)
            return False

    spy = Spy()
    panel.list.viewport().installEventFilter(spy)
    panel.installEventFilter(spy)
    qtbot.wait(50)  # the first paints go by
    painted.clear()
    layouts.clear()
    row_height = panel.list.visualRect(panel.model.index(3)).height()
    for state in (ItemState.SENDING, ItemState.SENT, ItemState.SPEAKING, ItemState.SPOKEN):
        presenter.change(_item(3, state))
        panel.refresh()
        qtbot.waitUntil(lambda: bool(painted), timeout=2000)
        assert all(rect.height() <= row_height for rect in painted), painted
        painted.clear()
    assert panel.summary.text().startswith("29 waiting")
    assert layouts == []


def test_lines_a_dead_session_cut_off_are_offered_once_and_said_again_ahead(
    panel: QueuePanel, queue_rig: QueueRig, qloop: qasync.QEventLoop
) -> None:
    from avaturn_desktop.core.events import AvatarStartedSpeakingPhrase

    queue = queue_rig.queue
    queue_rig.controller.go_live("s1")
    queue.enqueue(["Cut off here.", "Never started."])
    qloop.run_until_complete(until(lambda: all(i.task_id for i in queue.items)))
    queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
    panel.refresh()
    assert panel.again_button.isHidden()
    queue_rig.controller.end("killed")
    panel.refresh()
    assert not panel.again_button.isHidden()
    assert "2 lines were said" in panel.unfinished_label.text()
    queue_rig.controller.go_live("s2")
    panel.again_button.click()
    panel.refresh()
    assert panel.again_button.isHidden()  # offered once: a second click cannot double them
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 4))
    assert [text for sid, text in queue_rig.client.calls if sid == "s2"] == [
        "Cut off here.",
        "Never started.",
    ]


def test_the_look_ahead_timer_runs_on_the_apps_qt_loop(
    queue_rig: QueueRig, qloop: qasync.QEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost end event: the timer that lets the next line go is armed on qasync's loop (whose
    handles differ from asyncio's), and the line goes."""
    from avaturn_desktop.services import speech_queue

    monkeypatch.setattr(speech_queue, "LOOKAHEAD_GRACE_S", 0.3)
    monkeypatch.setattr(speech_queue, "LOOKAHEAD_SLACK", 0.0)
    queue = queue_rig.queue
    queue.lookahead = 2
    queue_rig.controller.go_live()
    long = "is a line long enough to take its time."
    queue.enqueue([f"One {long}", f"Two {long}", f"Three {long}"])
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 2))
    queue.enqueue([f"Four {long}"])  # the sender looks again while the timer is armed
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 4))
    assert not queue.paused and [i.state for i in queue.items] == [ItemState.SENT] * 4


def test_lines_added_to_a_long_queue_are_shown_without_a_snapshot_of_every_item(
    panel: QueuePanel, queue_rig: QueueRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long text is queued a slice a loop turn: each slice's rows are added from the
    queue's ids and the new items alone (a snapshot of each of a thousand items was ~4 ms a
    frame), and the rows stay the queue's, in its order and states."""
    from avaturn_desktop.services import speech_queue

    queue_rig.queue.enqueue([f"Line {n}." for n in range(300)])
    panel.refresh()
    made: list[int] = []
    view = speech_queue._Entry.view
    monkeypatch.setattr(
        speech_queue._Entry, "view", lambda entry: made.append(entry.item_id) or view(entry)
    )
    added = queue_rig.queue.enqueue([f"More {n}." for n in range(5)])
    panel.refresh()
    assert len(made) <= 10  # the five new lines' own snapshots (told with their changes)
    monkeypatch.undo()
    assert [i.item_id for i in panel.model.items] == [i.item_id for i in queue_rig.queue.items]
    assert panel.model.items == list(queue_rig.queue.items)
    assert [i.item_id for i in panel.model.items[-5:]] == [i.item_id for i in added]
    assert panel.model.rowCount() == 305
