"""The cue player: a script fired cue by cue with GO, for one avatar slot (Qt-free).

One cue *stands by*: GO speaks it behind what plays (through the slot's
:class:`~avaturn_desktop.services.speech.Speaker`, cut into sentences as any text) and the
next cue stands by. GO now cuts in: what plays and what waits is cancelled and the standby cue
is said at once. Back and Skip move the standby cue without speaking; any cue can be put on
standby by its (zero-based) index.

Each cue shows a state: ``standby`` (GO speaks it), ``next`` (the one after), ``waiting``
(fired, behind what plays), ``playing``, ``done`` (every line spoken), ``stopped`` (cut off by
Stop, Speak now or the session's end, or a line was not taken), ``skipped``, or ``later``. The
states follow the speech queue's items, so they are right whoever stopped or removed a line.

Stop, then GO
    Stop pauses the speech queue (``services/speech_queue.py``): nothing more is sent until
    it is resumed. A presenter who stops a cue and presses GO means the standby cue, not the
    rest of the cue they cut off; so GO takes the cut cue's unsent lines out of the queue and
    resumes the queue itself (lines typed in the composer that waited go out first, in their
    order). Back and GO says the cut cue again, whole.

The script
    Loaded from text or a file (``.txt`` / ``.md``, see ``core/script.py``). A file is watched:
    when it changes on disk the cue list is reloaded, keeping the standby cue and the states of
    cues that are still there (matched by their text). Watching is a ``stat`` twice a second on
    the loop (microseconds; it sees an editor's save by rename like any other write). An OS
    watcher (``watchfiles``) was tried: its first import alone held the GUI thread for 160 ms,
    and its thread outlived the loop at shutdown. A cue can be edited in place; edits are
    unsaved until :meth:`CuePlayer.save` writes the script back (atomically); while there are
    unsaved edits a change on disk is not taken, and the presenter is told.

Time
    Each cue's speaking time is estimated from the voice's pace measured in the task log, else
    a default (``core/script.py``). The clock runs from the first GO after a load; the time
    left is the estimate of what has not been said yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import enum
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avaturn_desktop.core.errors import AppError, ConfigError
from avaturn_desktop.core.queue import REASON_REMOVED, ChangeKind, ItemState, QueueChange, QueueItem
from avaturn_desktop.core.script import (
    DEFAULT_CHARS_PER_S,
    SCRIPT_SUFFIXES,
    Cue,
    Script,
    ScriptError,
    estimate_s,
    parse_script,
    read_script,
    warm_up_markdown,
)
from avaturn_desktop.services.speech import Batch, BatchOutcome, Speaker

log = logging.getLogger("avaturn.cues")


#: How often the script's file is looked at for changes.
WATCH_INTERVAL_S = 0.5
#: How long after the engine is made the Markdown parser is imported in the background: not
#: while the app starts (the import holds the interpreter lock for ~0.1 s, on the path to the
#: first live avatar), well before a presenter opens a script.
MARKDOWN_WARM_UP_DELAY_S = 3.0


def _warm_up_markdown_later() -> None:
    """Import the Markdown parser in the background, :data:`MARKDOWN_WARM_UP_DELAY_S` from
    now when the event loop runs."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a tool, a test): at once
        warm_up_markdown()
    else:
        loop.call_later(MARKDOWN_WARM_UP_DELAY_S, warm_up_markdown)


class CueState(enum.StrEnum):
    STANDBY = "standby"
    NEXT = "next"
    WAITING = "waiting"
    PLAYING = "playing"
    DONE = "done"
    STOPPED = "stopped"
    SKIPPED = "skipped"
    LATER = "later"


class NoCueError(AppError):
    """GO, Back or Skip with no script loaded, or GO past the last cue."""


@dataclasses.dataclass(frozen=True)
class CueView:
    """One cue as the doors show it."""

    index: int
    section: str | None
    text: str
    source: str
    notes: tuple[str, ...]
    estimate_s: float
    state: CueState
    #: The speech queue's items of its latest firing (empty if never fired).
    item_ids: tuple[int, ...]


@dataclasses.dataclass
class _Run:
    """One firing of a cue: its lines in the speech queue, as last seen."""

    items: dict[int, QueueItem]
    speaking_since: dict[int, float] = dataclasses.field(default_factory=dict)

    def lines(self) -> list[QueueItem]:
        kept = [i for i in self.items.values() if not _removed(i)]
        return kept or list(self.items.values())

    def state(self) -> CueState:
        lines = self.lines()
        if any(i.state is ItemState.SPEAKING for i in lines):
            return CueState.PLAYING
        if any(not i.state.finished for i in lines):
            return CueState.WAITING
        if lines and all(i.state is ItemState.SPOKEN for i in lines):
            return CueState.DONE
        return CueState.STOPPED


def _removed(item: QueueItem) -> bool:
    return item.state is ItemState.CANCELLED and item.reason == REASON_REMOVED


Listener = Callable[[], None]


class CuePlayer:
    """See the module docs. All methods run on the event loop's thread."""

    def __init__(
        self,
        speaker: Speaker,
        *,
        rate: Callable[[], float | None] = lambda: None,
        notify: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._speaker = speaker
        self._queue = speaker.queue
        self._rate_source = rate
        self._rate: float | None = None
        self._rate_stale = True
        self._notify_person = notify or (lambda _level, _text: None)
        self._clock = clock
        self.script: Script | None = None
        #: The file the script came from (watched), if any.
        self.path: Path | None = None
        #: Edited in place and not saved yet.
        self.dirty = False
        self._disk_text: str | None = None
        self._standby: int | None = None
        self._runs: dict[int, _Run] = {}
        self._item_cue: dict[int, int] = {}
        self._skipped: set[int] = set()
        self._started_at: float | None = None
        self._listeners: list[Listener] = []
        #: The views :meth:`cues` last returned (None: to be made anew), the pace and the
        #: standby cue they were made with, and the cues changed since.
        self._views: list[CueView] | None = None
        self._views_rate = 0.0
        self._views_standby: int | None = None
        self._stale: set[int] = set()
        self._watch_stop: asyncio.Event | None = None
        #: Watchers told to stop and not yet ended.
        self._watchers: set[asyncio.Task[None]] = set()
        self._unsubscribe = self._queue.subscribe(self._on_queue)
        _warm_up_markdown_later()

    # -- reading ---------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return 0 if self.script is None else len(self.script.cues)

    @property
    def standby(self) -> int | None:
        """The index GO speaks, or None (no script, or past the last cue)."""
        return self._standby

    @property
    def standby_cue(self) -> Cue | None:
        if self.script is None or self._standby is None:
            return None
        return self.script.cues[self._standby]

    @property
    def chars_per_s(self) -> float:
        """The pace estimates use: the voice's measured one, else the default."""
        if self._rate_stale:
            self._rate_stale = False
            try:
                self._rate = self._rate_source()
            except Exception:
                log.exception("Could not read the voice's measured pace")
                self._rate = None
        return self._rate or DEFAULT_CHARS_PER_S

    @property
    def measured(self) -> bool:
        """Whether the estimates use the voice's measured pace."""
        self.chars_per_s  # noqa: B018 (reads the pace when it is stale)
        return self._rate is not None

    def cue_state(self, index: int) -> CueState:
        if index == self._standby:
            return CueState.STANDBY
        run = self._runs.get(index)
        if run is not None:
            return run.state()
        if index in self._skipped:
            return CueState.SKIPPED
        if self._standby is not None and index == self._standby + 1:
            return CueState.NEXT
        return CueState.LATER

    def cues(self) -> list[CueView]:
        """Every cue as shown. The views are kept from one call to the next and only those of
        the cues that changed are made again (the cue list reads them ten times a second
        while a script plays: a cue of a 200-cue script changes, not 200), so a view that
        did not change is the very object returned before."""
        script = self.script
        if script is None:
            return []
        rate = self.chars_per_s
        views = self._views
        if views is None or rate != self._views_rate or len(views) != len(script.cues):
            views = self._views = [self._view(cue, rate) for cue in script.cues]
            self._views_rate = rate
        else:
            stale = self._stale
            if self._standby != self._views_standby:  # standby and next moved
                for index in (self._views_standby, self._standby):
                    if index is not None:
                        stale.update((index, index + 1))
            for index in stale:
                if 0 <= index < len(views):
                    views[index] = self._view(script.cues[index], rate)
        self._stale.clear()
        self._views_standby = self._standby
        return list(views)

    def _view(self, cue: Cue, rate: float) -> CueView:
        run = self._runs.get(cue.index)
        return CueView(
            index=cue.index,
            section=cue.section,
            text=cue.text,
            source=cue.source,
            notes=cue.notes,
            estimate_s=estimate_s(cue.text, rate),
            state=self.cue_state(cue.index),
            item_ids=tuple(run.items) if run is not None else (),
        )

    def elapsed_s(self, now: float | None = None) -> float | None:
        """Since the first GO after the script was loaded (None before it)."""
        if self._started_at is None:
            return None
        return max(0.0, (self._clock() if now is None else now) - self._started_at)

    def time_left_s(self, now: float | None = None) -> float:
        """The estimated speaking time of what has not been said yet."""
        if self.script is None:
            return 0.0
        now = self._clock() if now is None else now
        rate = self.chars_per_s
        left = 0.0
        for cue in self.script.cues:
            run = self._runs.get(cue.index)
            if run is not None and cue.index != self._standby:
                for item in run.lines():
                    if item.state.finished:
                        continue
                    remaining = estimate_s(item.text, rate)
                    since = run.speaking_since.get(item.item_id)
                    if since is not None:
                        remaining = max(0.0, remaining - (now - since))
                    left += remaining
            elif (
                self._standby is not None
                and cue.index >= self._standby
                and cue.index not in self._skipped
            ):
                left += estimate_s(cue.text, rate)
        return left

    def state(self) -> dict[str, Any]:
        """``state.cues`` of ``GET /api/v1/state`` (``control-api.md``)."""
        cue = self.standby_cue
        return {
            "count": self.count,
            "standby": self._standby,
            "standby_text": None if cue is None else cue.text,
        }

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- loading ---------------------------------------------------------------------------

    def load_text(self, text: str, *, markdown: bool = False) -> Script:
        """Take ``text`` as the script (not tied to a file); the first cue stands by."""
        self._stop_watching()
        self.path = None
        self._disk_text = None
        return self._load(parse_script(text, markdown=markdown))

    def load_path(self, path: str | Path) -> Script:
        """Read the script at ``path``, stand by on its first cue, and watch the file."""
        path = Path(path).expanduser()
        text, markdown = self._read(path)
        script = self._load(parse_script(text, markdown=markdown))
        self.path = path.resolve()
        self._disk_text = text
        self._watch()
        self._changed()
        return script

    def _read(self, path: Path) -> tuple[str, bool]:
        try:
            return read_script(path)
        except ScriptError as exc:
            raise ConfigError(str(exc)) from None
        except FileNotFoundError:
            raise ConfigError(f"There is no script at {path}.") from None
        except IsADirectoryError:
            raise ConfigError(f"{path} is a folder; open a .txt or .md file.") from None
        except OSError as exc:
            raise ConfigError(f"Could not read {path.name}: {exc.strerror or exc}.") from None

    def _load(self, script: Script) -> Script:
        if not script.cues:
            raise ConfigError(
                "The script has no cues: a cue is a paragraph of text ('# ' lines are section "
                "titles, '// ' lines are notes)."
            )
        self.script = script
        self._views = None
        self.dirty = False
        self._runs.clear()
        self._item_cue.clear()
        self._skipped.clear()
        self._standby = 0
        self._started_at = None
        self._rate_stale = True
        log.info("Script loaded: %d cues", len(script.cues))
        self._changed()
        return script

    def reload(self) -> Script:
        """Read the file again, dropping unsaved edits (states kept where cues match)."""
        if self.path is None:
            raise NoCueError("The script was not loaded from a file, so there is none to reload.")
        text, markdown = self._read(self.path)
        self._disk_text = text
        self._replace(parse_script(text, markdown=markdown), dirty=False)
        return self._require_script()

    # -- editing ---------------------------------------------------------------------------

    def edit(self, index: int, source: str) -> Script:
        """Replace cue ``index``'s text (as written) with ``source``; unsaved until saved.

        A cue already fired keeps its state (what was said does not change)."""
        script = self._require_script()
        self._check_index(index)
        self._replace(script.with_cue_source(index, source), dirty=True)
        return self._require_script()

    def save(self, path: str | Path | None = None) -> Path:
        """Write the script to ``path`` (default: the file it came from), atomically."""
        script = self._require_script()
        target = Path(path).expanduser() if path is not None else self.path
        if target is None:
            raise ConfigError("The script has no file yet: choose where to save it.")
        if target.suffix.lower() not in SCRIPT_SUFFIXES:
            raise ConfigError(f"A script is saved as .txt or .md, not as {target.name}.")
        text = script.source
        try:
            _write_atomically(target, text)
        except OSError as exc:
            raise ConfigError(f"Could not save {target.name}: {exc.strerror or exc}.") from None
        moved = self.path is None or target.resolve() != self.path
        self.path = target.resolve()
        self._disk_text = text
        self.dirty = False
        if moved:
            self._watch()
        self._changed()
        return self.path

    # -- firing ----------------------------------------------------------------------------

    def go(self) -> Batch:
        """Speak the standby cue behind what plays; the next cue stands by."""
        cue = self._standby_or_raise()
        batch = self._speaker.say(cue.text)
        self._fired(cue.index, batch)
        self._resume_after_stop(cue.index)
        self._advance()
        return batch

    async def go_now(self) -> Batch:
        """Cut off what plays and what waits, and speak the standby cue now."""
        cue = self._standby_or_raise()
        batch = await self._speaker.speak_now(cue.text)
        self._fired(cue.index, batch)
        self._advance()
        return batch

    def back(self) -> int:
        """The previous cue stands by (the last one when past the end)."""
        script = self._require_script()
        target = len(script.cues) - 1 if self._standby is None else max(0, self._standby - 1)
        return self.set_standby(target)

    def skip(self) -> int | None:
        """Pass over the standby cue without speaking it; the next one stands by."""
        self._standby_or_raise()
        assert self._standby is not None
        self._skipped.add(self._standby)
        self._stale.add(self._standby)
        self._advance()
        return self._standby

    def set_standby(self, index: int) -> int:
        """Cue ``index`` (zero-based) stands by."""
        self._require_script()
        self._check_index(index)
        self._standby = index
        self._skipped.discard(index)
        self._stale.add(index)
        self._changed()
        return index

    def reset(self) -> None:
        """Back to the top: the first cue stands by, states and the clock are cleared."""
        dirty = self.dirty
        self._load(self._require_script())
        self.dirty = dirty

    # -- internals -------------------------------------------------------------------------

    def _require_script(self) -> Script:
        if self.script is None:
            raise NoCueError("No script is loaded: open one first (File → Open script).")
        return self.script

    def _check_index(self, index: int) -> None:
        count = self.count
        if not 0 <= index < count:
            raise ConfigError(f"There is no cue {index}: the cues are numbered 0 to {count - 1}.")

    def _standby_or_raise(self) -> Cue:
        self._require_script()
        cue = self.standby_cue
        if cue is None:
            raise NoCueError(
                "The script is at its end: put a cue on standby (or go Back) to fire it again."
            )
        return cue

    def _fired(self, index: int, batch: Batch) -> None:
        old = self._runs.get(index)
        if old is not None:
            for item_id in old.items:
                self._item_cue.pop(item_id, None)
        run = _Run(items={})
        for item in batch.items:
            latest = self._queue.item(item.item_id) or item
            run.items[item.item_id] = latest
            if latest.state is ItemState.SPEAKING:
                run.speaking_since[item.item_id] = self._clock()
            self._item_cue[item.item_id] = index
        self._runs[index] = run
        self._stale.add(index)
        if batch.outcome is BatchOutcome.PENDING:
            self._follow(index, run, batch)
        self._skipped.discard(index)
        if self._started_at is None:
            self._started_at = self._clock()

    def _follow(self, index: int, run: _Run, batch: Batch) -> None:
        """A long cue is queued a slice per loop turn: take its later lines into the run."""

        def grew(batch: Batch) -> None:
            if self._runs.get(index) is run:
                for item in batch.items:
                    if item.item_id not in run.items:
                        run.items[item.item_id] = item
                        self._item_cue[item.item_id] = index
                        self._stale.add(index)
            if batch.outcome is not BatchOutcome.PENDING:
                unsubscribe()

        unsubscribe = batch.subscribe(grew)

    def _resume_after_stop(self, fired: int) -> None:
        """After a Stop the queue is paused: drop the unsent lines of the cues it cut off and
        send again, so GO is heard (see the module docs)."""
        # stopped: paused, or (when the cue's words went first) what waited set aside
        if not self._queue.paused and not self._queue.set_aside:
            return
        for index, run in self._runs.items():
            if index == fired:
                continue
            for item_id, item in run.items.items():
                if item.state is ItemState.WAITING:
                    self._queue.remove(item_id)
        log.info("GO after a stop: the queue sends again")
        self._queue.resume()

    def _advance(self) -> None:
        if self._standby is not None:
            after = self._standby + 1
            self._standby = after if after < self.count else None
        self._changed()

    def _on_queue(self, change: QueueChange) -> None:
        item = change.item
        if item is None:
            return
        index = self._item_cue.get(item.item_id)
        if index is None:
            return
        run = self._runs.get(index)
        if run is None:
            return
        run.items[item.item_id] = item
        self._stale.add(index)
        if item.state is ItemState.SPEAKING:
            run.speaking_since.setdefault(item.item_id, self._clock())
        elif item.state is ItemState.SPOKEN:
            self._rate_stale = True
        if change.kind is not ChangeKind.MOVED:
            self._changed()

    def _replace(self, new: Script, *, dirty: bool) -> None:
        """Take ``new`` as the script, carrying standby, runs and skips over to its cues."""
        old = self._require_script()
        mapping = _remap(old, new)
        runs = {mapping[i]: run for i, run in self._runs.items() if i in mapping}
        self._item_cue = {
            item_id: new_index for new_index, run in runs.items() for item_id in run.items
        }
        self._runs = runs
        self._skipped = {mapping[i] for i in self._skipped if i in mapping}
        standby = len(old.cues) if self._standby is None else self._standby
        if standby in mapping:
            self._standby = mapping[standby]
        else:
            before = [mapping[i] for i in range(standby) if i in mapping]
            after = before[-1] + 1 if before else 0
            self._standby = after if after < len(new.cues) else None
        self.script = new
        self._views = None
        self.dirty = dirty
        self._changed()

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("A cue listener failed")

    # -- the file on disk ------------------------------------------------------------------

    def _watch(self) -> None:
        self._stop_watching()
        if self.path is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            log.debug("No running loop: %s is not watched", self.path)
            return
        self._watch_stop = asyncio.Event()
        watcher = asyncio.ensure_future(self._watch_loop(self.path, self._watch_stop))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch_loop(self, path: Path, stop: asyncio.Event) -> None:
        seen = _signature(path)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
            if stop.is_set():
                return
            now = _signature(path)
            if now != seen:
                seen = now
                if now is not None and self.path == path:
                    self._disk_changed(path)

    def _disk_changed(self, path: Path) -> None:
        try:
            text, markdown = read_script(path)
        except FileNotFoundError:
            return  # moved away mid-save, or deleted: the cue list stays as it is
        except (OSError, ScriptError) as exc:
            self._notify_person("warning", f"The script on disk could not be read again: {exc}")
            return
        if text == self._disk_text:
            return  # our own save, or touched without a change
        if self.dirty:
            self._notify_person(
                "warning",
                f"{path.name} changed on disk, and the cue list has edits not saved: they are "
                "kept. Save to write them over the file, or Reload to take the file's version.",
            )
            self._disk_text = text
            return
        new = parse_script(text, markdown=markdown)
        if not new.cues:
            self._notify_person("warning", f"{path.name} has no cues now; the cue list is kept.")
            return
        self._disk_text = text
        self._replace(new, dirty=False)
        self._notify_person("info", f"{path.name} changed on disk: {len(new.cues)} cues reloaded.")

    def _stop_watching(self) -> None:
        """Tell the watcher to stop (it ends at once, or within one look at the file)."""
        if self._watch_stop is not None:
            self._watch_stop.set()
        self._watch_stop = None

    async def close(self) -> None:
        """Stop watching the file (and wait for the watcher to end) and the queue."""
        self._stop_watching()
        watchers = list(self._watchers)
        if watchers:
            _done, pending = await asyncio.wait(watchers, timeout=5)
            for task in pending:
                task.cancel()
        with contextlib.suppress(ValueError):
            self._unsubscribe()


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file does: its inode (a save by rename), size and time."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _remap(old: Script, new: Script) -> dict[int, int]:
    """Old cue index → new cue index, for cues that are still there (by their text; a cue
    edited in place keeps its place)."""
    matcher = difflib.SequenceMatcher(
        a=[c.text for c in old.cues], b=[c.text for c in new.cues], autojunk=False
    )
    mapping: dict[int, int] = {}
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or tag == "replace":
            for k in range(min(i2 - i1, j2 - j1)):
                mapping[i1 + k] = j1 + k
    return mapping


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so
    neither a crash nor a reader ever sees half a script."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        with contextlib.suppress(OSError):
            os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = ["CuePlayer", "CueState", "CueView", "NoCueError"]
