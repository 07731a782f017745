"""What a text becomes (services/speech.py): sentences, one batch, sent whole or given back,
and a long paste queued a slice per loop turn without losing its order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import FakeClient, FakeController, FakeStage

from avaturn_desktop.core.errors import ConfigError, ServerError
from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services import speech
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech import BatchOutcome, Speaker
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.tasklog import TaskLogStore


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Speaker, SpeechQueue, FakeClient, FakeController]]:
    store = TaskLogStore(tmp_path / "log.sqlite3")
    client, controller = FakeClient(), FakeController()
    # no page reports speech here: every line goes at once (the look-ahead has its own tests)
    queue = SpeechQueue(client, store, controller, stage=FakeStage(), lookahead=None)
    speaker = Speaker(queue, SettingsStore(Settings()))
    yield speaker, queue, client, controller
    speaker.close()
    store.close()


async def until(predicate: Callable[[], bool], rounds: int = 2000) -> None:
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def script(n: int, tag: str = "Line") -> tuple[str, list[str]]:
    lines = [f"{tag} {i} is here." for i in range(n)]
    return " ".join(lines), lines


def test_empty_text_is_refused_with_a_sentence(parts: tuple) -> None:
    speaker = parts[0]
    for text in ("", "   ", "\n\t"):
        with pytest.raises(ConfigError, match="Nothing to say"):
            speaker.say(text)


def test_a_batch_is_taken_once_the_service_has_every_sentence(parts: tuple) -> None:
    speaker, _queue, client, controller = parts

    async def scenario() -> None:
        controller.go_live()
        batch = speaker.say("One. Two. Three.")
        assert [i.text for i in batch.items] == ["One.", "Two.", "Three."]
        assert batch.outcome is BatchOutcome.PENDING
        await until(lambda: batch.outcome is BatchOutcome.TAKEN)
        assert [text for _, text in client.calls] == ["One.", "Two.", "Three."]

    asyncio.run(scenario())


def test_a_failed_sentence_gives_back_the_rest_and_a_removed_one_does_not(parts: tuple) -> None:
    speaker, queue, client, controller = parts

    async def scenario() -> None:
        controller.go_live()
        client.script = ["t1", ServerError("The service failed (500).", status=500)]
        batch = speaker.say("First is fine. Second fails. Third waits.")
        await until(lambda: batch.outcome is BatchOutcome.GIVEN_BACK)
        assert batch.unsent_text == "Second fails.\nThird waits."
        assert batch.sent_count == 1
        assert [text for _, text in client.calls] == ["First is fine.", "Second fails."]

        await queue.stop()
        kept = speaker.say("Keep this. Drop this. Keep that.")
        drop = kept.items[1].item_id
        assert queue.remove(drop)
        queue.resume()
        await until(lambda: kept.outcome is not BatchOutcome.PENDING)
        assert kept.outcome is BatchOutcome.TAKEN
        sent = [text for _, text in client.calls]
        assert "Drop this." not in sent and sent[-2:] == ["Keep this.", "Keep that."]

    asyncio.run(scenario())


def test_a_long_paste_is_queued_a_slice_per_turn_in_order(
    parts: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    speaker, queue, client, controller = parts
    monkeypatch.setattr(speech, "SLICE", 25)
    text, lines = script(300)

    async def scenario() -> None:
        batch = speaker.say(text)  # held: no session yet
        assert len(batch.items) == speech.FIRST_SLICE < len(lines)
        assert batch.outcome is BatchOutcome.PENDING
        await until(lambda: len(queue.items) == len(lines))
        assert [i.text for i in queue.items] == lines
        assert len(batch.items) == len(lines)
        controller.go_live()
        await until(lambda: batch.outcome is BatchOutcome.TAKEN)
        assert [t for _, t in client.calls] == lines

    asyncio.run(scenario())


def test_a_text_sent_while_a_paste_is_being_queued_comes_after_it(
    parts: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    speaker, queue, _client, _controller = parts
    monkeypatch.setattr(speech, "SLICE", 10)
    text, lines = script(200)

    async def scenario() -> None:
        first = speaker.say(text)
        await asyncio.sleep(0)
        second = speaker.say("After the paste.")
        assert [i.text for i in queue.items] == [*lines, "After the paste."]
        assert len(first.items) == len(lines) and len(second.items) == 1

    asyncio.run(scenario())


def test_speak_now_drops_the_part_of_a_paste_not_queued_yet(
    parts: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    speaker, queue, client, controller = parts
    monkeypatch.setattr(speech, "SLICE", 10)
    text, lines = script(200)

    async def scenario() -> None:
        controller.go_live()
        await queue.stop()  # nothing leaves: the paste stays in the queue
        paste = speaker.say(text)
        now = await speaker.speak_now("Say this instead.")
        assert paste.outcome is BatchOutcome.GIVEN_BACK
        assert paste.unsent_text.splitlines() == lines  # all of it, queued or not
        waiting = [i.text for i in queue.items if i.state is ItemState.WAITING]
        assert waiting == ["Say this instead."]
        await until(lambda: now.outcome is BatchOutcome.TAKEN)
        for _ in range(20):  # the paste's continuation, if it were still alive, would run
            await asyncio.sleep(0)
        assert [i.text for i in queue.items if i.state is ItemState.WAITING] == []
        assert client.calls[-1][1] == "Say this instead."

    asyncio.run(scenario())
